r"""MGDA: the minimum-norm point of the convex hull of the task gradients.

.. math::

  w^\star = \operatorname*{argmin}_{w \in \Delta_K} w^\top G w, \qquad
  d = J^\top w^\star

Sener, Koltun, "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018, https://arxiv.org/abs/1810.04650 (after Désidéri, "Multiple-
gradient descent algorithm (MGDA) for multiobjective optimization", 2012).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax.aggregation import _base


def mgda_weights(gramian: jax.Array, *, epsilon: float = 1e-7,
                 max_iters: int = 250) -> jax.Array:
  r"""MGDA's weights: the minimum-norm convex combination of the gradients.

  .. math::

    w^\star = \operatorname*{argmin}_{w \in \Delta_K} w^\top G w

  where :math:`G = J J^\top` is the Gramian of the :math:`K` task gradients
  and :math:`\Delta_K` the probability simplex. The direction
  :math:`d = J^\top w^\star` is the shortest vector of the convex hull of the
  gradients; :math:`d = 0` exactly when the point is Pareto-stationary.

  Solver (written here; no kept JAX library has a simplex QP): pairwise
  Frank-Wolfe from :math:`w = 1/K`. Each step moves weight from the active
  task with the largest :math:`(Gw)_s` to the task with the smallest
  :math:`(Gw)_t`, with the exact line search of a quadratic,
  :math:`\gamma = \min\big(w_s, ((Gw)_s - (Gw)_t) / (G_{ss} + G_{tt} -
  2 G_{st})\big)`. Unlike the plain Frank-Wolfe of TorchJD (whose weights
  that should be 0 decay like :math:`1/t`), it converges linearly and reaches
  the exact zeros. The loop runs exactly ``max_iters`` times inside ``jit``
  and stops moving once the gap :math:`(Gw)_s - (Gw)_t` falls below
  ``epsilon`` times :math:`\max_k G_{kk}`.

  Conventions: the weights sum to 1 (TorchJD). LibMTL runs Sener's
  MinNormSolver (the same optimum) and can normalise the gradients first
  (``mgda_gn``); the Nash-MTL repository multiplies the weights by K.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    epsilon: relative optimality gap at which the iteration stops.
    max_iters: the fixed iteration budget (LibMTL's MinNormSolver: 250).

  Returns:
    ``(K,)`` weights on the simplex.

  Example:
    >>> mgda_weights(jnp.array([[18., -22.], [-22., 38.]]))  # doctest: +SKIP
    Array([0.6, 0.4], dtype=float32)

  References:
    Sener, Koltun, "Multi-Task Learning as Multi-Objective Optimization",
    NeurIPS 2018, https://arxiv.org/abs/1810.04650.
    Lacoste-Julien, Jaggi, "On the Global Linear Convergence of Frank-Wolfe
    Optimization Variants", NeurIPS 2015, https://arxiv.org/abs/1511.05932.
  """
  _base.check_gramian(gramian, None, "mgda_weights")
  _base.check_nonnegative(epsilon, "epsilon", "mgda_weights")
  max_iters = _base.check_positive_int(max_iters, "max_iters", "mgda_weights")
  num_tasks = gramian.shape[0]
  dtype = _base.float_dtype(gramian)
  tol = epsilon * jnp.max(jnp.diagonal(gramian))

  def body(_, w):
    gw = gramian @ w
    t = jnp.argmin(gw)
    s = jnp.argmax(jnp.where(w > 0, gw, -jnp.inf))
    gap = gw[s] - gw[t]
    curvature = gramian[s, s] + gramian[t, t] - 2 * gramian[s, t]
    step = jnp.where(curvature > 0, gap / jnp.where(curvature > 0,
                                                    curvature, 1.0), w[s])
    gamma = jnp.where(gap > tol, jnp.minimum(step, w[s]), 0.0).astype(dtype)
    return w.at[s].add(-gamma).at[t].add(gamma)

  w0 = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
  return lax.fori_loop(0, max_iters, body, w0)


def mgda(epsilon: float = 1e-7, max_iters: int = 250) -> _base.Aggregator:
  """MGDA as an :class:`~mtl_jax.aggregation.Aggregator`.

  Args:
    epsilon: see :func:`mgda_weights`.
    max_iters: see :func:`mgda_weights`.

  Returns:
    An ``Aggregator`` with no parameters and a state that only records K.
  """
  _base.check_nonnegative(epsilon, "epsilon", "mgda")
  _base.check_positive_int(max_iters, "max_iters", "mgda")
  return _base.gramian_aggregator(
      lambda state, g: (mgda_weights(g, epsilon=epsilon, max_iters=max_iters),
                        state),
      _base.stateless, "mgda")
