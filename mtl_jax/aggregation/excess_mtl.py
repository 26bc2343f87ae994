r"""ExcessMTL: exponentiated-gradient weights driven by estimated excess risks.

.. math::

  S \leftarrow S + J \odot J, \quad
  e_i = \sum_{k} \frac{J_{ik}^2}{\sqrt{S_{ik} + 10^{-7}}}, \quad
  w \leftarrow \frac{w \odot \exp\big(\eta\, e / (e^0 + 10^{-7})\big)}
    {\mathbf{1}^\top w \odot \exp\big(\eta\, e / (e^0 + 10^{-7})\big)},
  \quad d = J^\top w

He, Zhou, Zhao, Wang, "Robust Multi-Task Learning with Excess Risks", ICML
2024, https://proceedings.mlr.press/v235/he24n.html.

The weights come from a ``(K, P)`` accumulator of squared gradients, so it
reads the Jacobian itself (a :class:`~mtl_jax.aggregation.JacobianAggregator`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax import _checks
from mtl_jax.aggregation import _base
from mtl_jax.weighting._base import check_num_tasks

_EPS = 1e-7  # TorchJD and LibMTL: sqrt(S + 1e-7), e / (e0 + 1e-7)


def _check_hparams(robust_step_size, n_warmup_steps, method: str) -> int:
  _checks.number(
      robust_step_size, "robust_step_size", method, low=0, low_open=True,
      hint="It is the step size of the exponentiated weight update (TorchJD: "
      "1.0; LibMTL and the official code: 1e-2).")
  return _checks.integer(
      n_warmup_steps, "n_warmup_steps", method, low=0,
      hint="It is the number of calls that only collect statistics (TorchJD: "
      "0; LibMTL's behaviour is 1).")


def excess_mtl_weights(jacobian: jax.Array, weights: jax.Array,
                       sq_sum: jax.Array, baseline: jax.Array, step: Any, *,
                       robust_step_size: float = 1.0, n_warmup_steps: int = 0
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""ExcessMTL's new weights and statistics, for one call.

  .. math::

    S \leftarrow S + J \odot J, \qquad
    e_i = \sum_{k=1}^{P} \frac{J_{ik}^2}{\sqrt{S_{ik} + 10^{-7}}},

    r = \begin{cases} e & \text{if } T = 0 \text{ and } t = 1 \\
      e / (e^0 + 10^{-7}) & \text{otherwise} \end{cases}, \qquad
    w \leftarrow \frac{w \odot \exp(\eta\, r)}
      {\sum_j w_j \exp(\eta\, r_j)} \ \text{ for } t > T

  where :math:`J` holds the task gradients :math:`g_i` as rows, :math:`S`
  accumulates their squares over the calls (AdaGrad's diagonal estimate of
  the Hessian), :math:`e_i \approx g_i^\top H_i^{-1} g_i` estimates the
  excess risk of task :math:`i` (Equations 6-7), :math:`t \ge 1` is the
  index of the call, :math:`T` the number of warm-up calls,
  :math:`\eta` the step size and :math:`e^0` the baseline excess risk:
  the mean :math:`e` over the :math:`T` warm-up calls, or with :math:`T =
  0` the first call's :math:`e`, which that call uses raw (TorchJD's rule,
  and the example below). During warm-up (:math:`t \le T`) :math:`w` stays
  as it is (:math:`1/K` from ``init``). The update is Equation 9's
  exponentiated-gradient step, so :math:`w` stays on the simplex; it is
  computed as :math:`w \odot \exp(\eta r - \max_j \eta r_j)`, which is the
  same after normalisation and cannot overflow (with :math:`T = 0` the first
  :math:`r = e` grows with the scale of :math:`J`:
  :math:`e_i \approx \sum_k |J_{ik}|` there).

  ``baseline`` carries :math:`\sum e` over the warm-up calls until the end
  of the warm-up, then :math:`e^0`.

  Conventions: TorchJD's ``ExcessMTLWeighting(robust_step_size=1.0,
  n_warmup_steps=0)`` at the revision of REFERENCE 8 (a later revision
  defaults to ``n_warmup_steps=1``): :math:`w` starts at :math:`1/K` and
  sums to 1, and the direction is :math:`J^\top w`. LibMTL and the official
  code start from :math:`w = 1`, keep :math:`\sum w = K` (the same
  direction times :math:`K`), use ``robust_step_size=1e-2``, only record
  :math:`e^0` at the first call (TorchJD's ``n_warmup_steps=1``, without
  the :math:`10^{-7}` in :math:`e / e^0`) and weight the losses, so the
  task heads get :math:`w`-weighted gradients; here, as in TorchJD, they
  get their own unweighted gradients. LibMTL also accepts ``rep_grad``
  (gradients of a representation, summed over the batch); this is the
  shared-parameter form.

  Args:
    jacobian: ``(K, P)`` Jacobian :math:`J`.
    weights: ``(K,)`` weights :math:`w` from the previous call
      (:math:`1/K` at first).
    sq_sum: ``(K, P)`` accumulator :math:`S` from the previous call (zeros
      at first).
    baseline: ``(K,)`` warm-up sum or :math:`e^0` from the previous call
      (zeros at first).
    step: :math:`t`, this call's index (1 at the first call).
    robust_step_size: :math:`\eta > 0` (TorchJD: 1.0; LibMTL: 1e-2).
    n_warmup_steps: :math:`T \ge 0` (TorchJD: 0).

  Returns:
    ``(weights, sq_sum, baseline)``, each in the dtype of the given one;
    :math:`d = J^\top w` is the update (the optimiser subtracts a multiple
    of it). No gradient.

  Example:
    >>> j = jnp.array([[2., 0.], [1., 0.]])
    >>> w, s, e0 = excess_mtl_weights(j, jnp.full(2, 0.5), jnp.zeros((2, 2)),
    ...                               jnp.zeros(2), 1)
    >>> w  # [e^2, e] / (e^2 + e)
    Array([0.7311, 0.2689], dtype=float32)

  References:
    He, Zhou, Zhao, Wang, "Robust Multi-Task Learning with Excess Risks",
    ICML 2024, https://proceedings.mlr.press/v235/he24n.html.
  """
  method = "excess_mtl_weights"
  _base.check_jacobian(jacobian, None, None, method)
  num_tasks = jnp.shape(jacobian)[0]
  if (jnp.shape(weights) != (num_tasks,) or jnp.shape(baseline) != (num_tasks,)
      or jnp.shape(sq_sum) != jnp.shape(jacobian)):
    raise ValueError(
        f"{method}: weights and baseline must be ({num_tasks},) and sq_sum "
        f"{jnp.shape(jacobian)} like the Jacobian, got {jnp.shape(weights)}, "
        f"{jnp.shape(baseline)} and {jnp.shape(sq_sum)}. Start from 1/K, "
        "zeros and zeros.")
  warmup = int(n_warmup_steps)  # a Python int: it picks the branch below
  acc = jnp.promote_types(jnp.result_type(jacobian), jnp.result_type(sq_sum))
  jac = lax.stop_gradient(jacobian).astype(acc)
  squares = jac * jac
  new_sq_sum = sq_sum.astype(acc) + squares
  excess = jnp.sum(squares / jnp.sqrt(new_sq_sum + _EPS), axis=1)
  t = jnp.asarray(step, jnp.int32)
  baseline = baseline.astype(acc)
  in_warmup = t <= warmup
  first = t == warmup + 1
  if warmup > 0:
    set_baseline = baseline / warmup
    ratio = jnp.where(first, excess / (set_baseline + _EPS),
                      excess / (baseline + _EPS))
  else:
    set_baseline = excess
    ratio = jnp.where(first, excess, excess / (baseline + _EPS))
  new_baseline = jnp.where(in_warmup, baseline + excess,
                           jnp.where(first, set_baseline, baseline))
  logits = robust_step_size * ratio
  factor = jnp.exp(logits - jnp.max(logits))
  updated = weights.astype(acc) * factor
  updated = updated / jnp.sum(updated)
  new_weights = jnp.where(in_warmup, weights.astype(acc), updated)
  return (lax.stop_gradient(new_weights.astype(jnp.result_type(weights))),
          lax.stop_gradient(new_sq_sum.astype(jnp.result_type(sq_sum))),
          lax.stop_gradient(new_baseline.astype(jnp.result_type(baseline))))


class ExcessMTLState(NamedTuple):
  weights: jax.Array   # (K,) float, w on the simplex; 1/K at init
  sq_sum: jax.Array    # (K, P) float, S, the sum of squared gradients; zeros
  baseline: jax.Array  # (K,) float, warm-up sum of e, then e^0; zeros
  step: jax.Array      # () int32, calls so far: the next call has t = step + 1


def excess_mtl(robust_step_size: float = 1.0,
               n_warmup_steps: int = 0) -> _base.JacobianAggregator:
  r"""ExcessMTL as a :class:`~mtl_jax.aggregation.JacobianAggregator`.

  ``apply(params, state, J)`` takes the flat
  ``(K, P)`` Jacobian of the shared parameters (``losses`` is not used) and
  returns the new weights :math:`w` of :func:`excess_mtl_weights` and
  :math:`d = J^\top w` in ``GradientDirection.direction``.

  ``init(num_tasks, *, key=None, num_params)`` needs ``num_params`` = P:
  the state (:class:`ExcessMTLState`) holds :math:`w = 1/K`, :math:`S`,
  the baseline (zeros), in the default float dtype (float32, or float64
  under ``jax_enable_x64``), and the number of calls so far (0). ``init``
  again to reset.

  Args:
    robust_step_size: see :func:`excess_mtl_weights` (default 1.0,
      TorchJD's; LibMTL's is 1e-2).
    n_warmup_steps: see :func:`excess_mtl_weights` (default 0).

  Returns:
    A ``JacobianAggregator`` with no parameters and an
    :class:`ExcessMTLState`.
  """
  _check_hparams(robust_step_size, n_warmup_steps, "excess_mtl")

  def init(num_tasks: int, *, key: jax.Array | None = None,
           num_params: int | None = None):
    del key
    num_tasks = check_num_tasks(num_tasks)
    num_params = _base.check_num_params(num_params, "excess_mtl")
    return {}, ExcessMTLState(jnp.ones((num_tasks,)) / num_tasks,
                              jnp.zeros((num_tasks, num_params)),
                              jnp.zeros((num_tasks,)),
                              jnp.zeros((), jnp.int32))

  def apply(params, state: ExcessMTLState, jacobian, *, losses=None):
    del params, losses
    num_tasks, num_params = state.sq_sum.shape
    _base.check_jacobian(jacobian, num_tasks, num_params, "excess_mtl")
    step = state.step + 1
    weights, sq_sum, baseline = excess_mtl_weights(
        jacobian, state.weights, state.sq_sum, state.baseline, step,
        robust_step_size=robust_step_size, n_warmup_steps=n_warmup_steps)
    dtype = _base.float_dtype(jacobian)
    jac = lax.stop_gradient(jacobian)
    direction = jnp.matmul(weights.astype(dtype), jac,
                           precision=lax.Precision.HIGHEST)
    return _base.GradientDirection(
        lax.stop_gradient(direction), weights.astype(dtype),
        ExcessMTLState(weights, sq_sum, baseline, step))

  return _base.JacobianAggregator(init, apply)
