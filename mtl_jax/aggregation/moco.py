r"""MoCo: a moving average of the task gradients and a tracked MGDA weighting.

.. math::

  \hat g_i = \frac{L_i\, g_i}{\|g_i\| + 10^{-8}}, \quad
  Y \leftarrow Y - \frac{\beta}{t^{\beta_\sigma}} (Y - \hat J), \quad
  \lambda \leftarrow \operatorname{softmax}\Big(\lambda
    - \frac{\gamma}{t^{\gamma_\sigma}} (Y Y^\top + \rho I)\lambda\Big),
  \quad d = Y^\top \lambda

Fernando, Shen, Liu, Chaudhury, Murugesan, Chen, "Mitigating Gradient Bias
in Multi-objective Learning: A Provably Convergent Approach", ICLR 2023,
https://openreview.net/forum?id=dLAYGdKTi2.

It keeps a ``(K, P)`` buffer, so it reads the Jacobian itself
(a :class:`~mtl_jax.aggregation.JacobianAggregator`) and needs the task losses.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax.aggregation import _base
from mtl_jax.weighting._base import check_num_tasks

_NORM_EPS = 1e-8  # LibMTL: g_i / (||g_i|| + 1e-8)


def _check_hparams(method: str, **hparams) -> None:
  for name, value in hparams.items():
    _base.check_nonnegative(value, name, method)


def moco_direction(jacobian: jax.Array, losses: jax.Array, y: jax.Array,
                   lambd: jax.Array, step: Any, *, beta: float = 0.5,
                   beta_sigma: float = 0.5, gamma: float = 0.1,
                   gamma_sigma: float = 0.5, rho: float = 0.0
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""MoCo's direction and its updated estimates, for one call.

  .. math::

    \hat g_i = \frac{L_i\, g_i}{\|g_i\| + 10^{-8}}, \qquad
    Y \leftarrow Y - \frac{\beta}{t^{\beta_\sigma}} (Y - \hat J),

    \lambda \leftarrow \operatorname{softmax}\Big(\lambda
      - \frac{\gamma}{t^{\gamma_\sigma}} (Y Y^\top + \rho I)\lambda\Big),
    \qquad d = Y^\top \lambda

  where :math:`g_i` is the gradient of task :math:`i` (row :math:`i` of
  :math:`J`), :math:`L_i` its loss, :math:`\hat J` the matrix of the rows
  :math:`\hat g_i` (each gradient rescaled to the norm :math:`L_i`),
  :math:`Y \in \mathbb{R}^{K \times P}` the moving estimate of the
  gradients (zeros at first), :math:`\lambda \in \Delta_K` the task weights
  (:math:`1/K` at first), updated by one projected-gradient-like step on
  :math:`\frac12 \|Y^\top \lambda\|^2` (MGDA's objective) kept on the
  simplex by a softmax, :math:`t \ge 1` the index of the call (1 at the
  first), :math:`\beta, \gamma` the step sizes, :math:`\beta_\sigma,
  \gamma_\sigma` their decay exponents and :math:`\rho \ge 0` a ridge on
  :math:`\lambda`. With the defaults the first call gives :math:`Y = \hat
  J / 2`.

  Conventions: LibMTL's ``MoCo`` (these formulas, the paper's defaults
  ``MoCo_beta=0.5, MoCo_beta_sigma=0.5, MoCo_gamma=0.1,
  MoCo_gamma_sigma=0.5, MoCo_rho=0``, :math:`t` counted from 1 as its
  ``self.step``, incremented before use). LibMTL refuses ``rep_grad`` for
  it, as here. TorchJD's ``MoCo`` (newer than the revision of REFERENCE
  8) has the same recurrence and defaults but averages the raw rows
  :math:`g_i` (no :math:`L_i g_i / \|g_i\|` rescaling, no losses needed);
  ``losses`` equal to the row norms :math:`\|g_i\|` give it here, up to
  the :math:`10^{-8}`.

  Args:
    jacobian: ``(K, P)`` Jacobian :math:`J`.
    losses: ``(K,)`` task losses :math:`L_i` (non-negative).
    y: ``(K, P)`` estimate :math:`Y` from the previous call.
    lambd: ``(K,)`` weights :math:`\lambda` from the previous call.
    step: :math:`t`, this call's index (1 at the first call).
    beta, beta_sigma, gamma, gamma_sigma, rho: see above, all >= 0
      (defaults: the paper's and LibMTL's).

  Returns:
    ``(direction, y, lambd)``: the ``(P,)`` direction :math:`d` in the dtype
    of :math:`J` (the optimiser subtracts a multiple of it), and the new
    :math:`Y` and :math:`\lambda` in the dtypes of the given ones. No
    gradient.

  Example:
    >>> j = jnp.array([[-4., 1., 1.], [6., 1., 1.]])
    >>> d, y, lambd = moco_direction(j, jnp.array([1., 2.]),
    ...                              jnp.zeros((2, 3)), jnp.full(2, 0.5), 1)
    >>> lambd
    Array([0.5094, 0.4906], dtype=float32)

  References:
    Fernando, Shen, Liu, Chaudhury, Murugesan, Chen, "Mitigating Gradient
    Bias in Multi-objective Learning: A Provably Convergent Approach", ICLR
    2023, https://openreview.net/forum?id=dLAYGdKTi2.
  """
  method = "moco_direction"
  _base.check_jacobian(jacobian, None, None, method)
  num_tasks = jnp.shape(jacobian)[0]
  _base.require_losses(losses, num_tasks, method)
  if jnp.shape(y) != jnp.shape(jacobian) or jnp.shape(lambd) != (num_tasks,):
    raise ValueError(
        f"{method}: y must be {jnp.shape(jacobian)} like the Jacobian and "
        f"lambd ({num_tasks},), got {jnp.shape(y)} and {jnp.shape(lambd)}. "
        "Start from zeros and 1/K.")
  acc = jnp.promote_types(jnp.result_type(jacobian), jnp.result_type(y))
  jac = lax.stop_gradient(jacobian).astype(acc)
  losses = lax.stop_gradient(jnp.asarray(losses)).astype(acc)
  t = jnp.asarray(step, acc)
  norms = jnp.sqrt(jnp.sum(jac * jac, axis=1))
  target = (losses / (norms + _NORM_EPS))[:, None] * jac
  y_new = y.astype(acc)
  y_new = y_new - (beta / t**beta_sigma) * (y_new - target)
  gram = jnp.matmul(y_new, y_new.T, precision=lax.Precision.HIGHEST)
  gram = gram + rho * jnp.eye(num_tasks, dtype=acc)
  lambd_acc = lambd.astype(acc)
  lambd_new = jax.nn.softmax(
      lambd_acc - (gamma / t**gamma_sigma) * (gram @ lambd_acc))
  direction = jnp.matmul(lambd_new, y_new, precision=lax.Precision.HIGHEST)
  return (lax.stop_gradient(direction.astype(jnp.result_type(jacobian))),
          lax.stop_gradient(y_new.astype(jnp.result_type(y))),
          lax.stop_gradient(lambd_new.astype(jnp.result_type(lambd))))


class MoCoState(NamedTuple):
  y: jax.Array      # (K, P) float, the gradient estimate Y; zeros at init
  lambd: jax.Array  # (K,) float, the task weights lambda; 1/K at init
  step: jax.Array   # () int32, calls so far: the next call has t = step + 1


def moco(beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1,
         gamma_sigma: float = 0.5, rho: float = 0.0) -> _base.JacobianAggregator:
  r"""MoCo as a :class:`~mtl_jax.aggregation.JacobianAggregator`.

  ``apply(params, state, J, *, losses)`` takes the
  flat ``(K, P)`` Jacobian of the shared parameters and the ``(K,)`` losses
  (a ValueError without them) and returns :func:`moco_direction`'s
  :math:`d` in ``GradientDirection.direction`` and the new :math:`\lambda` as
  ``weights``. The task heads get their own unweighted gradients (LibMTL
  does the same: it backpropagates each loss, then overwrites only the
  shared gradients).

  ``init(num_tasks, *, key=None, num_params)`` needs ``num_params`` = P:
  the state (:class:`MoCoState`) holds :math:`Y` (zeros), :math:`\lambda`
  (:math:`1/K`), both in the default float dtype (float32, or float64 under
  ``jax_enable_x64``), and the number of calls so far (0). ``init`` again
  to reset.

  Args:
    beta: step size of :math:`Y` (default 0.5).
    beta_sigma: decay exponent of ``beta`` (default 0.5).
    gamma: step size of :math:`\lambda` (default 0.1).
    gamma_sigma: decay exponent of ``gamma`` (default 0.5).
    rho: ridge of the :math:`\lambda` step (default 0).

  Returns:
    A ``JacobianAggregator`` with no parameters and a
    :class:`MoCoState`.
  """
  _check_hparams("moco", beta=beta, beta_sigma=beta_sigma, gamma=gamma,
                 gamma_sigma=gamma_sigma, rho=rho)

  def init(num_tasks: int, *, key: jax.Array | None = None,
           num_params: int | None = None):
    del key
    num_tasks = check_num_tasks(num_tasks)
    num_params = _base.check_num_params(num_params, "moco")
    return {}, MoCoState(jnp.zeros((num_tasks, num_params)),
                         jnp.ones((num_tasks,)) / num_tasks,
                         jnp.zeros((), jnp.int32))

  def apply(params, state: MoCoState, jacobian, *, losses=None):
    del params
    num_tasks, num_params = state.y.shape
    _base.check_jacobian(jacobian, num_tasks, num_params, "moco")
    _base.require_losses(losses, num_tasks, "moco")
    step = state.step + 1
    direction, y, lambd = moco_direction(
        jacobian, losses, state.y, state.lambd, step, beta=beta,
        beta_sigma=beta_sigma, gamma=gamma, gamma_sigma=gamma_sigma, rho=rho)
    weights = lambd.astype(_base.float_dtype(jacobian))
    return _base.GradientDirection(direction, weights,
                                   MoCoState(y, lambd, step))

  return _base.JacobianAggregator(init, apply)
