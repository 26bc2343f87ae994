r"""GradDrop: keep, per coordinate, only the gradients of one random sign.

.. math::

  \mathcal{P}_k = \frac12\Big(1 + \frac{\sum_i J_{ik}}{\sum_i |J_{ik}|}\Big),
  \quad M_{ik} = [\mathcal{P}_k > U_k][J_{ik} > 0]
    + [\mathcal{P}_k < U_k][J_{ik} < 0], \quad
  d_k = \sum_{i=1}^{K} \big(\ell_i + (1 - \ell_i) M_{ik}\big) J_{ik}

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov, "Just Pick a Sign:
Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020,
https://arxiv.org/abs/2010.06808.

The rule is per coordinate, so it reads the Jacobian itself
(a :class:`~mtl_jax.aggregation.JacobianAggregator`), not the Gramian.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mtl_jax import _checks
from mtl_jax.aggregation import _base
from mtl_jax.weighting._base import check_num_tasks


def _check_leak(leak: Any, num_tasks: int | None, method: str) -> None:
  """Raises a ValueError unless ``leak`` is None, or a scalar or a ``(K,)``
  vector in [0, 1]."""
  if leak is None:
    return
  _checks.numeric(leak, "leak", method,
                  "None, a number or a vector with one entry per task, in "
                  "[0, 1]")
  shape = np.shape(leak) if isinstance(leak, (list, tuple)) else jnp.shape(leak)
  if len(shape) > 1:
    raise ValueError(f"{method}: leak must be a number or a vector with one "
                     f"entry per task, got shape {shape}.")
  if len(shape) == 1 and num_tasks is not None and shape[0] != num_tasks:
    raise ValueError(
        f"{method}: leak has {shape[0]} entries but there are {num_tasks} "
        "tasks. Give one leak per task, or a single number.")
  concrete = _base._concrete(leak)  # pylint: disable=protected-access
  if concrete is not None and not np.all(np.isfinite(concrete)
                                         & (concrete >= 0) & (concrete <= 1)):
    raise ValueError(
        f"{method}: leak must lie in [0, 1], got "
        f"{np.asarray(concrete).tolist()}. It is the share of each task's "
        "gradient that always passes (0: GradDrop as published, LibMTL's "
        "default; 1: the plain sum).")


def _sum_rows(x: jax.Array) -> jax.Array:
  """``sum(x, axis=0)`` of a ``(K, P)`` array as K - 1 elementwise adds: the
  same numbers, but XLA:CPU reduces a short leading axis of a wide array
  about 25 times slower than it adds rows (benchmarks, section 5.6)."""
  total = x[0]
  for k in range(1, x.shape[0]):
    total = total + x[k]
  return total


def _coefficients(jacobian: jax.Array, uniform: jax.Array,
                  leak: Any) -> jax.Array:
  r"""The ``(K, P)`` factors :math:`\ell_i + (1 - \ell_i) M_{ik}`."""
  dtype = _base.float_dtype(jacobian)
  acc = jnp.promote_types(dtype, jnp.float32)  # bfloat16 J: sums in float32
  total = _sum_rows(jacobian.astype(acc))
  mass = _sum_rows(jnp.abs(jacobian.astype(acc)))
  # A column of zeros has no sign (TorchJD divides 0 by 0 there); every
  # coefficient multiplies a zero, so any purity does.
  purity = 0.5 * (1.0 + jnp.where(mass > 0, total / jnp.where(mass > 0, mass,
                                                                1.0), 0.0))
  uniform = jnp.asarray(uniform).astype(acc)
  keep = ((purity > uniform) & (jacobian > 0)) | ((purity < uniform)
                                                  & (jacobian < 0))
  leak = jnp.zeros((), dtype) if leak is None else jnp.asarray(leak, dtype)
  leak = jnp.reshape(leak, (-1, 1)) if jnp.ndim(leak) == 1 else leak
  return leak + (1.0 - leak) * keep.astype(dtype)


def _check_inputs(jacobian, uniform, leak, method: str) -> None:
  _base.check_jacobian(jacobian, None, None, method)
  if jnp.shape(uniform) != jnp.shape(jacobian)[1:]:
    raise ValueError(
        f"{method}: uniform must hold one draw per column of the Jacobian, "
        f"shape ({jnp.shape(jacobian)[1]},), got shape {jnp.shape(uniform)}.")
  _check_leak(leak, jnp.shape(jacobian)[0], method)


def graddrop_direction(jacobian: jax.Array, uniform: jax.Array,
                       leak: Any = None) -> jax.Array:
  r"""GradDrop's update direction, from the Jacobian and explicit draws.

  .. math::

    \mathcal{P}_k = \frac12\Big(1 + \frac{\sum_i J_{ik}}{\sum_i |J_{ik}|}
    \Big), \qquad
    M_{ik} = [\mathcal{P}_k > U_k][J_{ik} > 0]
      + [\mathcal{P}_k < U_k][J_{ik} < 0],

    d_k = \sum_{i=1}^{K} \big(\ell_i + (1 - \ell_i) M_{ik}\big) J_{ik}

  where :math:`J \in \mathbb{R}^{K \times P}` holds the task gradients
  :math:`g_i` as rows, :math:`\mathcal{P}_k \in [0, 1]` is the positive sign
  purity of coordinate :math:`k` (1 when every task pushes it up),
  :math:`U_k \sim \mathcal{U}[0, 1)` one draw per coordinate, :math:`M_{ik}`
  keeps the positive entries of column :math:`k` with probability
  :math:`\mathcal{P}_k` and the negative ones otherwise, and
  :math:`\ell_i \in [0, 1]` is the leak of task :math:`i` (the share of its
  gradient that always passes). :math:`\ell = 1` gives the plain sum
  :math:`\sum_i g_i`; without leak each coordinate of :math:`d` sums the
  entries of one sign only. A column of zeros gives 0.

  Conventions: this is TorchJD's ``GradDrop(f=identity, leak)``: it acts on
  the Jacobian of the shared parameters (batch-mean gradients), takes one
  leak per task, adds no :math:`\epsilon`, and :math:`f` (a monotone map
  applied to :math:`\mathcal{P}`) is the identity. The paper and LibMTL
  (``leak=0.0``, one scalar) apply it to the gradients of a representation
  instead: LibMTL **requires** ``rep_grad=True`` and computes
  :math:`\mathcal{P}` from the per-example gradients at the representation,
  times the representation's sign, summed over the batch (with
  :math:`10^{-7}` in the denominator), then masks the per-example gradients
  and backpropagates them through the encoder. mtl_jax's train step does
  not keep per-example representation gradients, so only the parameter
  form is offered here; on a shared layer that is linear in its input it
  is the same sign rule on different, batch-summed quantities, not the
  same mask.

  Args:
    jacobian: ``(K, P)`` Jacobian :math:`J`.
    uniform: ``(P,)`` draws :math:`U` in [0, 1) (compared with
      :math:`\mathcal{P}` in float32, or float64 for a float64 :math:`J`).
      To reproduce TorchJD, pass its ``torch.rand(P)``.
    leak: None (no leak, as TorchJD), a number, or one number per task, in
      [0, 1] (LibMTL: 0.0).

  Returns:
    ``(P,)`` direction :math:`d` (descent convention: the optimiser
    subtracts a multiple of it), in the dtype of :math:`J`, no gradient.

  Example:
    >>> j = jnp.array([[-4., 1., 1.], [6., 1., 1.]])
    >>> graddrop_direction(j, jnp.array([0.4963, 0.7682, 0.0885]))
    Array([6., 2., 2.], dtype=float32)

  References:
    Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov, "Just Pick a
    Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout",
    NeurIPS 2020, https://arxiv.org/abs/2010.06808.
  """
  _check_inputs(jacobian, uniform, leak, "graddrop_direction")
  jacobian = lax.stop_gradient(jacobian)
  coef = _coefficients(jacobian, lax.stop_gradient(uniform), leak)
  return lax.stop_gradient(_sum_rows(coef * jacobian))


def _kept_fraction(jacobian: jax.Array, coef: jax.Array) -> jax.Array:
  """Per task, the mean factor over its nonzero coordinates (1 if none)."""
  nonzero = (jacobian != 0).astype(coef.dtype)
  count = jnp.sum(nonzero, axis=1)
  kept = jnp.sum(coef * nonzero, axis=1)
  return jnp.where(count > 0, kept / jnp.where(count > 0, count, 1.0), 1.0)


class GradDropState(NamedTuple):
  key: jax.Array    # (2,) uint32 PRNG key (or a typed key), split every step
  tasks: jax.Array  # (K,) int8 zeros: records K


def graddrop(leak: Any = 0.0, seed: int = 0) -> _base.JacobianAggregator:
  r"""GradDrop as a :class:`~mtl_jax.aggregation.JacobianAggregator`.

  ``apply(params, state, J)`` takes the flat
  ``(K, P)`` Jacobian of the shared parameters (``losses`` is not used) and
  returns :func:`graddrop_direction` in ``GradientDirection.direction``. The
  draws are ``jax.random.uniform(sub, (P,), jnp.float32)`` with ``sub`` the
  second half of ``jax.random.split(state.key)`` (the first is kept), so
  float32 and float64 runs draw the same :math:`U`, and a replicated state
  draws the same mask on every device. The reported ``weights`` are, per
  task, the mean factor :math:`\ell_i + (1 - \ell_i) M_{ik}` over the
  coordinates where :math:`g_i` is nonzero: the fraction of its gradient
  kept (1 for a zero gradient and for :math:`\ell_i = 1`). :math:`d` is in
  general not :math:`J^\top w`.

  Args:
    leak: see :func:`graddrop_direction` (default 0.0: no leak, LibMTL's
      default and TorchJD's ``None``).
    seed: seeds the key when ``init`` is given none.

  Returns:
    A ``JacobianAggregator`` with no parameters and a
    :class:`GradDropState`. Its ``init(num_tasks, *, key=None,
    num_params=None)`` does not need ``num_params`` (no buffers).
  """
  _check_leak(leak, None, "graddrop")
  seed = _base.check_seed(seed, "graddrop")

  def init(num_tasks: int, *, key: jax.Array | None = None,
           num_params: int | None = None):
    num_tasks = check_num_tasks(num_tasks)
    _check_leak(leak, num_tasks, "graddrop")
    if num_params is not None:
      _base.check_num_params(num_params, "graddrop")
    key = jax.random.PRNGKey(seed) if key is None else key
    return {}, GradDropState(key, jnp.zeros((num_tasks,), jnp.int8))

  def apply(params, state: GradDropState, jacobian, *, losses=None):
    del params, losses
    _base.check_jacobian(jacobian, state.tasks.shape[-1], None, "graddrop")
    jacobian = lax.stop_gradient(jacobian)
    key, sub = jax.random.split(state.key)
    uniform = jax.random.uniform(sub, jacobian.shape[1:], jnp.float32)
    coef = _coefficients(jacobian, uniform, leak)
    direction = _sum_rows(coef * jacobian)
    weights = _kept_fraction(jacobian, coef)
    return _base.GradientDirection(lax.stop_gradient(direction),
                                   lax.stop_gradient(weights),
                                   state._replace(key=key))

  return _base.JacobianAggregator(init, apply)
