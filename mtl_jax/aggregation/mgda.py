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

from mtl_jax import _checks
from mtl_jax.aggregation import _base, _qp


def mgda_weights(gramian: jax.Array, *, epsilon: float = 0.0,
                 max_iters: int | None = None) -> jax.Array:
  r"""MGDA's weights: the minimum-norm convex combination of the gradients.

  .. math::

    w^\star = \operatorname*{argmin}_{w \in \Delta_K} w^\top G w

  where :math:`G = J J^\top` is the Gramian of the :math:`K` task gradients
  and :math:`\Delta_K` the probability simplex. The direction
  :math:`d = J^\top w^\star` is the shortest vector of the convex hull of the
  gradients; :math:`d = 0` exactly when the point is Pareto-stationary.

  Solver (written here, in :mod:`mtl_jax.aggregation._qp`; no kept JAX
  library has a QP with inequality constraints): with
  :math:`\hat G = G / \operatorname{tr}(G)`, the minimiser :math:`x` of
  :math:`x^\top (\hat G + \mathbf 1 \mathbf 1^\top) x - 2\,\mathbf 1^\top x`
  over :math:`x \ge 0` is :math:`w^\star / (1 + w^{\star\top} \hat G
  w^\star)`, so :math:`w^\star = x / \mathbf 1^\top x`. That bound-constrained
  QP is solved exactly by a few primal-dual active-set (Newton) steps and a
  Lawson-Hanson active-set finish, each step one masked
  :math:`K \times K` Cholesky solve, for exactly ``max_iters`` steps inside
  ``jit``. Unlike Frank-Wolfe (TorchJD's, whose weights that should be 0
  decay like :math:`1/t`), it ends on the exact zeros and the exact optimum,
  rank-deficient Gramians included. A zero Gramian gives :math:`1/K`.

  Conventions: the weights sum to 1 (TorchJD). LibMTL runs Sener's
  MinNormSolver (the same optimum) and can normalise the gradients first
  (``mgda_gn``); the Nash-MTL repository multiplies the weights by K.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    epsilon: a task joins the support only if it lowers :math:`w^\top G w`
      at a rate above ``epsilon`` relative to :math:`\operatorname{tr}(G)`;
      never below 16 machine epsilons, which the default 0 gives (the exact
      optimum to working precision). TorchJD stops its Frank-Wolfe at a step
      of 1e-3.
    max_iters: the fixed number of solver steps; None gives K + 10, which
      solved every tested Gramian with K up to 40 with a margin (TorchJD:
      100 Frank-Wolfe steps).

  Returns:
    ``(K,)`` weights on the simplex.

  Example:
    >>> mgda_weights(jnp.array([[18., -22.], [-22., 38.]]))
    Array([0.6, 0.4], dtype=float32)

  References:
    Sener, Koltun, "Multi-Task Learning as Multi-Objective Optimization",
    NeurIPS 2018, https://arxiv.org/abs/1810.04650.
    Lawson, Hanson, "Solving Least Squares Problems", 1974, chapter 23
    (the active-set NNLS algorithm).
  """
  _base.check_gramian(gramian, None, "mgda_weights")
  newton_steps, active_set_steps = _qp.split_budget(max_iters,
                                                    gramian.shape[0])
  eps = jnp.finfo(_base.float_dtype(gramian)).eps
  return _qp.simplex_min_norm(
      gramian, newton_steps=newton_steps, active_set_steps=active_set_steps,
      rtol=jnp.maximum(epsilon, 16 * eps))


def mgda(epsilon: float = 0.0,
         max_iters: int | None = None) -> _base.Aggregator:
  """MGDA as an :class:`~mtl_jax.aggregation.Aggregator`.

  Args:
    epsilon: see :func:`mgda_weights`.
    max_iters: see :func:`mgda_weights`.

  Returns:
    An ``Aggregator`` with no parameters and a state that only records K.
  """
  _base.check_nonnegative(epsilon, "epsilon", "mgda")
  if max_iters is not None:
    _checks.integer(max_iters, "max_iters", "mgda", low=1)
  return _base.gramian_aggregator(
      lambda state, g: (mgda_weights(g, epsilon=epsilon, max_iters=max_iters),
                        state),
      _base.stateless, "mgda")
