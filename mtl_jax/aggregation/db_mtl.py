r"""DB-MTL: log-loss gradients, averaged, then rescaled to the largest norm.

.. math::

  B \leftarrow \hat J + \frac{\beta}{t^{\beta_\sigma}} (B - \hat J), \quad
  \hat g_i = \frac{g_i}{L_i + 10^{-8}}, \quad
  \alpha_i = \frac{\max_j \|B_j\|}{\|B_i\| + 10^{-8}}, \quad
  d = \sum_{i=1}^{K} \alpha_i B_i

Lin, Ye, Xu, Shi, Zhang, "Dual-Balancing for Multi-Task Learning", 2023,
https://arxiv.org/abs/2308.12029.

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

_LOG_EPS = 1e-8   # LibMTL: log(L_i + 1e-8)
_NORM_EPS = 1e-8  # LibMTL: max_j ||B_j|| / (||B_i|| + 1e-8)


def _check_hparams(beta, beta_sigma, method: str) -> None:
  _base.check_nonnegative(beta, "beta", method,
                          "It is the weight of the past in the average "
                          "(LibMTL: DB_beta=0.9).")
  _base.check_nonnegative(beta_sigma, "beta_sigma", method,
                          "It is the decay exponent of beta (LibMTL: "
                          "DB_beta_sigma=0).")


def db_mtl_direction(jacobian: jax.Array, losses: jax.Array,
                     buffer: jax.Array, step: Any, *, beta: float = 0.9,
                     beta_sigma: float = 0.0
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""DB-MTL's direction, its weights and the updated buffer, for one call.

  .. math::

    \hat g_i = \frac{g_i}{L_i + 10^{-8}} = \nabla \log(L_i + 10^{-8}),
    \qquad B \leftarrow \hat J + \frac{\beta}{t^{\beta_\sigma}}
    (B - \hat J),

    \alpha_i = \frac{\max_j \|B_j\|}{\|B_i\| + 10^{-8}}, \qquad
    d = \sum_{i=1}^{K} \alpha_i B_i

  where :math:`g_i` is the gradient of task :math:`i` (row :math:`i` of
  :math:`J`) and :math:`L_i` its loss, so :math:`\hat g_i` is the gradient
  of :math:`\log(L_i + 10^{-8})` by the chain rule (loss-scale balancing:
  a task whose loss is multiplied by :math:`c > 0` gives the same
  :math:`\hat g_i`, up to the :math:`10^{-8}`); :math:`\hat J` has the rows
  :math:`\hat g_i`; :math:`B \in \mathbb{R}^{K \times P}` is their moving
  average (zeros at first, no bias correction: with the defaults the first
  call gives :math:`B = 0.1 \hat J`); :math:`t \ge 1` is the index of the
  call (1 at the first), :math:`\beta` the weight of the past and
  :math:`\beta_\sigma` its decay exponent; :math:`\alpha_i` rescales every
  averaged gradient to the largest norm (gradient-magnitude balancing), so
  :math:`\|\alpha_i B_i\| = \max_j \|B_j\|` up to the :math:`10^{-8}`. A
  zero buffer gives :math:`\alpha = 0` and :math:`d = 0`.

  Conventions: LibMTL's ``DB_MTL`` (the only anchor; defaults
  ``DB_beta=0.9, DB_beta_sigma=0``; :math:`t` counted from 1 as its
  ``self.step``, incremented before use; the update is written
  ``batch_grads + beta/step**beta_sigma * (buffer - batch_grads)``). LibMTL
  backpropagates :math:`\sum_i \log(L_i + 10^{-8})`, so the task heads get
  :math:`\nabla \log L_i`; the factory reproduces this with
  ``head_weights`` :math:`= 1 / (L_i + 10^{-8})`. Its returned weights are
  ones; the factory reports :math:`\alpha` instead.

  Args:
    jacobian: ``(K, P)`` Jacobian :math:`J` of the losses :math:`L_i` (not
      of their logs: the rescaling is done here).
    losses: ``(K,)`` task losses :math:`L_i` (positive).
    buffer: ``(K, P)`` buffer :math:`B` from the previous call.
    step: :math:`t`, this call's index (1 at the first call).
    beta: :math:`\beta \ge 0` (LibMTL: 0.9).
    beta_sigma: :math:`\beta_\sigma \ge 0` (LibMTL: 0).

  Returns:
    ``(direction, alpha, buffer)``: the ``(P,)`` direction :math:`d` in the
    dtype of :math:`J` (the optimiser subtracts a multiple of it), the
    ``(K,)`` :math:`\alpha` in the same dtype, and the new :math:`B` in the
    dtype of the given one. No gradient.

  Example:
    >>> j = jnp.array([[-4., 1., 1.], [6., 1., 1.]])
    >>> d, alpha, b = db_mtl_direction(j, jnp.array([1., 2.]),
    ...                                jnp.zeros((2, 3)), 1)
    >>> alpha
    Array([1.    , 1.3765], dtype=float32)

  References:
    Lin, Ye, Xu, Shi, Zhang, "Dual-Balancing for Multi-Task Learning", 2023,
    https://arxiv.org/abs/2308.12029.
  """
  method = "db_mtl_direction"
  _base.check_jacobian(jacobian, None, None, method)
  num_tasks = jnp.shape(jacobian)[0]
  _base.require_losses(losses, num_tasks, method)
  if jnp.shape(buffer) != jnp.shape(jacobian):
    raise ValueError(
        f"{method}: buffer must be {jnp.shape(jacobian)} like the Jacobian, "
        f"got {jnp.shape(buffer)}. Start from zeros.")
  dtype = jnp.result_type(jacobian)
  acc = jnp.promote_types(dtype, jnp.result_type(buffer))
  jac = lax.stop_gradient(jacobian).astype(acc)
  losses = lax.stop_gradient(jnp.asarray(losses)).astype(acc)
  t = jnp.asarray(step, acc)
  log_grads = jac / (losses + _LOG_EPS)[:, None]
  new_buffer = log_grads + (beta / t**beta_sigma) * (buffer.astype(acc)
                                                     - log_grads)
  norms = jnp.sqrt(jnp.sum(new_buffer * new_buffer, axis=1))
  alpha = jnp.max(norms) / (norms + _NORM_EPS)
  direction = jnp.matmul(alpha, new_buffer, precision=lax.Precision.HIGHEST)
  return (lax.stop_gradient(direction.astype(dtype)),
          lax.stop_gradient(alpha.astype(dtype)),
          lax.stop_gradient(new_buffer.astype(jnp.result_type(buffer))))


class DBMTLState(NamedTuple):
  buffer: jax.Array  # (K, P) float, the averaged log-loss gradients B; zeros
  step: jax.Array    # () int32, calls so far: the next call has t = step + 1


def db_mtl(beta: float = 0.9, beta_sigma: float = 0.0) -> _base.JacobianAggregator:
  r"""DB-MTL as a :class:`~mtl_jax.aggregation.JacobianAggregator`.

  ``apply(params, state, J, *, losses)`` takes the
  flat ``(K, P)`` Jacobian of the shared parameters and the ``(K,)`` losses
  (a ValueError without them) and returns :func:`db_mtl_direction`'s
  :math:`d` in ``GradientDirection.direction``, :math:`\alpha` as
  ``weights`` and ``head_weights`` :math:`= 1/(L_i + 10^{-8})`: each task
  head gets the gradient of its log-loss, as in LibMTL.

  ``init(num_tasks, *, key=None, num_params)`` needs ``num_params`` = P:
  the state (:class:`DBMTLState`) holds :math:`B` (zeros, in the default
  float dtype: float32, or float64 under ``jax_enable_x64``) and the number
  of calls so far (0). ``init`` again to reset.

  Args:
    beta: see :func:`db_mtl_direction` (default 0.9).
    beta_sigma: see :func:`db_mtl_direction` (default 0).

  Returns:
    A ``JacobianAggregator`` with no parameters and a
    :class:`DBMTLState`.
  """
  _check_hparams(beta, beta_sigma, "db_mtl")

  def init(num_tasks: int, *, key: jax.Array | None = None,
           num_params: int | None = None):
    del key
    num_tasks = check_num_tasks(num_tasks)
    num_params = _base.check_num_params(num_params, "db_mtl")
    return {}, DBMTLState(jnp.zeros((num_tasks, num_params)),
                          jnp.zeros((), jnp.int32))

  def apply(params, state: DBMTLState, jacobian, *, losses=None):
    del params
    num_tasks, num_params = state.buffer.shape
    _base.check_jacobian(jacobian, num_tasks, num_params, "db_mtl")
    _base.require_losses(losses, num_tasks, "db_mtl")
    step = state.step + 1
    direction, alpha, buffer = db_mtl_direction(
        jacobian, losses, state.buffer, step, beta=beta, beta_sigma=beta_sigma)
    dtype = _base.float_dtype(jacobian)
    losses = lax.stop_gradient(jnp.asarray(losses))
    head_weights = (1.0 / (losses.astype(dtype) + _LOG_EPS)).astype(dtype)
    return _base.GradientDirection(direction, alpha, DBMTLState(buffer, step),
                                   head_weights=head_weights)

  return _base.JacobianAggregator(init, apply)
