r"""MoDo: multi-objective gradient with double sampling.

.. math::

  \lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma\,(J_1 J_2^\top \lambda
    + \rho \lambda)\big), \qquad d = J_3^\top \lambda

Chen, Fernando, Ying, Chen, "Three-Way Trade-Off in Multi-Objective
Learning: Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023,
https://openreview.net/forum?id=yPkbdJxQ0o.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mtl_jax import _checks
from mtl_jax.aggregation import _base

SPLITS = 3


def modo_weights(cross_gramian: jax.Array, lam: jax.Array, *,
                 gamma: float = 1e-3, rho: float = 0.1) -> jax.Array:
  r"""One MoDo step on the task weights :math:`\lambda`.

  .. math::

    \lambda' = \Pi_\Delta\big(\lambda - \gamma\,(A \lambda + \rho\lambda)\big)

  where :math:`A = J_1 J_2^\top` is the cross Gramian of the task gradients
  on two independent samples (so that :math:`A\lambda` is an unbiased
  estimate of the gradient of :math:`\tfrac12\lVert J^\top\lambda\rVert^2`,
  MGDA's objective), :math:`\gamma` the step, :math:`\rho` an
  :math:`\ell_2` regulariser and :math:`\Pi_\Delta` the Euclidean projection
  on the simplex. The update direction is :math:`J_3^\top \lambda'` on a
  third sample.

  Conventions: LibMTL's (``MoDo_gamma=0.001, MoDo_rho=0.1``, :math:`\lambda`
  from :math:`1/K`, the new :math:`\lambda` weights this step's update).
  Not in TorchJD.

  Args:
    cross_gramian: ``(K, K)`` :math:`A = J_1 J_2^\top`.
    lam: ``(K,)`` the current :math:`\lambda`, on the simplex.
    gamma: :math:`\gamma > 0`.
    rho: :math:`\rho \ge 0`.

  Returns:
    ``(K,)`` the new :math:`\lambda` (on the simplex), with no gradient.

  Example:
    >>> modo_weights(jnp.eye(2), jnp.array([.5, .5]), gamma=1.0, rho=0.)
    Array([0.5, 0.5], dtype=float32)

  References:
    Chen, Fernando, Ying, Chen, "Three-Way Trade-Off in Multi-Objective
    Learning: Optimization, Generalization and Conflict-Avoidance", NeurIPS
    2023, https://openreview.net/forum?id=yPkbdJxQ0o.
  """
  shape = jnp.shape(cross_gramian)
  if len(shape) != 2 or shape[0] != shape[1]:
    raise ValueError(
        f"modo_weights: the cross Gramian must be (num_tasks, num_tasks), "
        f"got shape {shape}.")
  a = lax.stop_gradient(cross_gramian)
  lam = lax.stop_gradient(jnp.asarray(lam, a.dtype))
  return optax.projections.projection_simplex(lam - gamma * (a @ lam
                                                             + rho * lam))


class MoDoState(NamedTuple):
  lam: jax.Array  # (K,) task weights on the simplex


def modo(gamma: float = 1e-3, rho: float = 0.1) -> _base.Aggregator:
  r"""MoDo as an :class:`~mtl_jax.aggregation.Aggregator`.

  Like :func:`~mtl_jax.aggregation.sdmgrad`, it splits each batch into three
  interleaved parts (``batch_splits=3``: example :math:`i` in part
  :math:`i \bmod 3`; per-device batch divisible by 3): :math:`A` from parts
  1 and 2, the update on part 3. The heads get their own task's gradient on
  the whole batch (LibMTL: the mean over its three batches).

  Args:
    gamma: the step on :math:`\lambda` (``MoDo_gamma``: 0.001).
    rho: the :math:`\ell_2` regulariser (``MoDo_rho``: 0.1).

  Returns:
    An ``Aggregator`` with ``batch_splits=3`` and a :class:`MoDoState`.
  """
  _checks.number(gamma, "gamma", "modo", low=0, low_open=True,
                 hint="It is the step on the weights lambda (LibMTL's "
                 "MoDo_gamma: 0.001).")
  _base.check_nonnegative(rho, "rho", "modo")

  def init(num_tasks, *, key=None):
    del key
    num_tasks = _base.check_num_tasks(num_tasks)
    return {}, MoDoState(jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32))

  def apply(params, state, gramian, *, losses=None):
    del params, losses
    num_tasks = state.lam.shape[-1]
    _base.check_split_gramian(gramian, SPLITS, num_tasks, "modo")
    gramian = lax.stop_gradient(gramian)
    lam = modo_weights(gramian[:num_tasks, num_tasks:2 * num_tasks],
                       state.lam, gamma=gamma, rho=rho)
    weights = jnp.concatenate([jnp.zeros((2 * num_tasks,), gramian.dtype),
                               lam.astype(gramian.dtype)])
    return _base.GradientWeights(weights, MoDoState(lam.astype(state.lam.dtype)))

  return _base.Aggregator(init, apply, batch_splits=SPLITS)
