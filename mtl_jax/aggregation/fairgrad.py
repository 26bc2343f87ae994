r"""FairGrad: the update that allocates improvement among tasks alpha-fairly.

.. math::

  G w = w^{-1/\alpha}, \quad w > 0, \qquad d = J^\top w

Ban, Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024,
https://arxiv.org/abs/2402.15638.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _checks
from mtl_jax.aggregation import _barrier, _base


def fairgrad_weights(gramian: jax.Array, alpha: float, *, max_iters: int = 32,
                     reg_eps: float = 1e-8) -> jax.Array:
  r"""FairGrad's weights: the solution of :math:`G w = w^{-1/\alpha}`.

  .. math::

    G w = w^{-1/\alpha}, \quad w > 0

  where :math:`G = J J^\top` is the Gramian of the :math:`K` task gradients
  :math:`g_k` (the rows of :math:`J`), :math:`\alpha \ge 0` the fairness
  parameter, and the power is taken entrywise. With :math:`d = J^\top w` the
  equation reads :math:`g_i^\top d = w_i^{-1/\alpha}`: :math:`d` maximises
  the :math:`\alpha`-fair utility :math:`\sum_i (g_i^\top d)^{1-\alpha} /
  (1-\alpha)` (:math:`\sum_i \log g_i^\top d` at :math:`\alpha = 1`) over a
  ball. :math:`\alpha = 1` is proportional fairness, Nash-MTL's bargaining
  solution (:func:`~mtl_jax.aggregation.nash_mtl.nash_mtl_weights` before
  its clipping); :math:`\alpha \to \infty` tends to max-min fairness;
  :math:`\alpha = 0` is linear scalarisation and gives :math:`w = 1/K`
  (TorchJD; the limit :math:`\alpha \to 0^+` is :math:`w = 1`, the sum).
  When a solution exists every task improves: :math:`J d = w^{-1/\alpha} >
  0`.

  Solver (written here; no kept JAX library solves it inside ``jit``): the
  equation is the stationarity condition of the strictly convex
  :math:`\min_{w > 0} \frac12 w^\top G w - \sum_i h(w_i)` with
  :math:`h'(w) = w^{-1/\alpha}`, minimised by damped Newton (Hessian
  :math:`G + \operatorname{diag}(w^{-1/\alpha - 1}/\alpha)`, a
  fraction-to-the-boundary rule keeping :math:`w > 0`, Armijo backtracking)
  on :math:`G / (\operatorname{tr}(G)/K)` from :math:`w = 1`. Exactly
  ``max_iters`` iterations run inside ``jit``. Measured on 300 random
  Gramians with :math:`K \le 40` (square Jacobians included, condition
  numbers up to :math:`10^9`, gradient norms spread over two orders of
  magnitude) and :math:`\alpha \in [0.1, 5]`: at most 16 iterations reach a
  relative residual of :math:`10^{-6}` in float64; in float32 the weights are
  within :math:`10^{-4}` of the float64 ones (relative to the largest) after
  at most 14.

  A ridge :math:`\epsilon \operatorname{diag}(G)` is added to :math:`G`, with
  :math:`\epsilon = \max(\text{reg\_eps}, \text{eps of the dtype})`: on
  full-rank inputs its effect is within the accuracy above. (Why the floor
  is eps and not :math:`K \cdot \text{eps}`: ``docs/benchmarks.md``,
  section 5.7.) It matters where no solution exists,
  that is where some :math:`v \ge 0`, :math:`v \ne 0` has :math:`J^\top v =
  0` (two opposite gradients, a Pareto-stationary point, more tasks than the
  rank): the objective then decreases without bound along :math:`v`. With
  the ridge the weights converge (in at most about 30 iterations for
  :math:`\alpha \in [0.01, 20]`), finite but large along :math:`v` (of order
  :math:`\epsilon^{-1/(1+1/\alpha)}` in the units of
  :math:`\operatorname{tr}(G)/K`), and :math:`d` improves the tasks that can
  improve. Where every task takes part (:math:`v > 0`, a Pareto-stationary
  point, where MGDA gives :math:`d = 0`) :math:`d` shrinks only like
  :math:`\epsilon^{1/(1+\alpha)}` (``tests/aggregation/test_fairgrad.py``
  bounds it for :math:`\alpha` from 0.1 to 5). So for :math:`\alpha > 1`
  near such points the direction is not small; a smaller ``reg_eps`` helps
  in float64 only (float32 cannot represent the larger weights'
  cancellation). A zero gradient (:math:`G_{ii} \le
  \text{eps}^2 \operatorname{tr}(G)/K`) gets the ridge
  :math:`\operatorname{tr}(G)/K` instead, so a finite weight that does not
  change :math:`d`; an all-zero Gramian gives :math:`1/K`.

  Conventions: TorchJD (these weights) solves the same equation with
  ``scipy.optimize.least_squares`` from :math:`1/K` with bounds
  :math:`(0, \infty)` and gives :math:`1/K` for :math:`\alpha = 0`; where no
  solution exists it returns wherever its iteration budget stops. LibMTL and
  the official repository weight the losses by :math:`w`, so task-specific
  heads get :math:`w`-weighted gradients too.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    alpha: :math:`\alpha \ge 0` (required, as in TorchJD; LibMTL's default
      is 1.0).
    max_iters: the fixed number of Newton iterations (32: twice the most
      measured on full-rank inputs, and enough for the degenerate ones).
    reg_eps: the relative ridge :math:`\epsilon \ge 0` (1e-8; floored at
      :math:`K` times the machine epsilon of the dtype).

  Returns:
    ``(K,)`` positive weights (``1/K`` for :math:`\alpha = 0`), no gradient.

  Example:
    >>> fairgrad_weights(jnp.array([[18., -22.], [-22., 38.]]), 1.0)
    Array([0.5915, 0.4071], dtype=float32)

  References:
    Ban, Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024,
    https://arxiv.org/abs/2402.15638.
    Mo, Walrand, "Fair End-to-End Window-Based Congestion Control",
    IEEE/ACM Transactions on Networking, 2000 (alpha-fairness).
  """
  _base.check_gramian(gramian, None, "fairgrad_weights")
  gramian = jax.lax.stop_gradient(gramian)
  num_tasks = gramian.shape[0]
  dtype = _base.float_dtype(gramian)
  uniform = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
  if isinstance(alpha, (int, float)) and alpha == 0:
    return uniform
  alpha = jnp.asarray(alpha, dtype)
  positive = alpha > 0
  beta = 1.0 / jnp.where(positive, alpha, 1.0)
  w = _barrier.solve(gramian, beta, num_iters=max_iters, reg_eps=reg_eps)
  return jax.lax.stop_gradient(jnp.where(positive, w, uniform))


def _check_hparams(alpha, max_iters, reg_eps, method: str) -> None:
  _base.check_nonnegative(
      alpha, "alpha", method,
      "alpha = 0 is linear scalarisation, 1 proportional fairness (Nash-MTL), "
      "large values tend to max-min fairness; LibMTL's default is 1.0.")
  _checks.integer(max_iters, "max_iters", method, low=1)
  _base.check_nonnegative(reg_eps, "reg_eps", method)


def fairgrad(alpha: float, max_iters: int = 32,
             reg_eps: float = 1e-8) -> _base.Aggregator:
  r"""FairGrad as an :class:`~mtl_jax.aggregation.Aggregator`.

  Args:
    alpha: :math:`\alpha \ge 0`, see :func:`fairgrad_weights` (required, as
      in TorchJD; LibMTL's default is 1.0).
    max_iters: see :func:`fairgrad_weights` (default 32).
    reg_eps: see :func:`fairgrad_weights` (default 1e-8).

  Returns:
    An ``Aggregator`` with no parameters and a state that only records K.
  """
  _check_hparams(alpha, max_iters, reg_eps, "fairgrad")
  return _base.gramian_aggregator(
      lambda state, g: (fairgrad_weights(g, alpha, max_iters=max_iters,
                                         reg_eps=reg_eps), state),
      _base.stateless, "fairgrad")
