r"""Nash-MTL: the Nash bargaining solution among the tasks, norm-clipped.

.. math::

  G \alpha = 1 / \alpha, \quad \alpha > 0, \qquad
  w = \alpha \min\Big(1, \frac{\text{max\_norm}}{\|J^\top \alpha\|}\Big),
  \qquad d = J^\top w

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, "Multi-Task
Learning as a Bargaining Game", ICML 2022, https://arxiv.org/abs/2202.01017.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax import _checks
from mtl_jax.aggregation import _barrier, _base

_REG_EPS = 1e-8  # the ridge of the solver, as FairGrad's default


def _solve_alpha(gramian: jax.Array, optim_niter: int,
                 warm_start: jax.Array | None) -> jax.Array:
  """The unclipped bargaining weights alpha (Newton, from ``warm_start``)."""
  return _barrier.solve(gramian, 1.0, num_iters=optim_niter,
                        reg_eps=_REG_EPS, init=warm_start)


def _clip(alpha: jax.Array, gramian: jax.Array,
          max_norm: float | None) -> jax.Array:
  """``alpha`` rescaled so that ``||J^T alpha|| <= max_norm``."""
  if max_norm is None:
    return alpha
  squared = jnp.sum(jnp.matmul(gramian, alpha, precision=lax.Precision.HIGHEST)
                    * alpha)
  norm = jnp.sqrt(jnp.maximum(squared, 0.0))
  factor = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1.0),
                     1.0)
  return alpha * factor.astype(alpha.dtype)


def _check_max_norm(max_norm, method: str) -> None:
  if max_norm is None:
    return
  hint = ("It bounds ||d|| = ||J^T w|| (TorchJD and the official repository: "
          "1.0); pass None for no clipping.")
  _checks.number(max_norm, "max_norm", method, low=0, low_open=True,
                 hint=hint)


def nash_mtl_weights(gramian: jax.Array, *, max_norm: float | None = 1.0,
                     optim_niter: int = 20,
                     warm_start: jax.Array | None = None) -> jax.Array:
  r"""Nash-MTL's weights: the bargaining solution, rescaled to a bounded norm.

  .. math::

    G \alpha = 1 / \alpha, \quad \alpha > 0, \qquad
    w = \alpha \min\Big(1, \frac{\text{max\_norm}}{\sqrt{\alpha^\top G
    \alpha}}\Big)

  where :math:`G = J J^\top` is the Gramian of the :math:`K` task gradients
  :math:`g_k` (the rows of :math:`J`) and the division is entrywise. With
  :math:`d = J^\top \alpha` the equation reads :math:`g_i^\top d = 1 /
  \alpha_i`: :math:`d` is the Nash bargaining solution, the maximiser of
  :math:`\sum_i \log g_i^\top d` over a ball, and every task improves.
  :math:`\alpha` is :func:`~mtl_jax.aggregation.fairgrad.fairgrad_weights`
  with :math:`\alpha_{\text{FairGrad}} = 1`; since
  :math:`\|J^\top \alpha\|^2 = \alpha^\top G \alpha = K`, the clipping
  rescales it whenever :math:`\text{max\_norm} < \sqrt K`, so with the
  default :math:`\|d\| = 1` for every :math:`K \ge 2` (where a solution
  exists; at a Pareto-stationary point :math:`d` is near 0 and not
  rescaled up).

  Solver (written here; no kept JAX library solves it inside ``jit``):
  damped Newton on the strictly convex :math:`\min_{\alpha > 0} \frac12
  \alpha^\top G \alpha - \sum_i \log \alpha_i`, shared with FairGrad (see
  :func:`~mtl_jax.aggregation.fairgrad.fairgrad_weights` for its ridge,
  here :math:`\max(10^{-8}, \text{eps}) \operatorname{diag}(G)`,
  the measured accuracy and the behaviour where no solution exists),
  exactly ``optim_niter`` iterations inside
  ``jit``, from ``warm_start`` where that has the lower objective, else from
  :math:`\alpha = 1` in the units of :math:`\operatorname{tr}(G)/K`. A cold
  start needs at most 10 iterations on full-rank inputs (:math:`K \le 40`,
  relative residual :math:`10^{-6}` in float64) and about 20 on degenerate
  ones.

  Conventions: TorchJD (these weights, ``NashMTL(n_tasks, max_norm=1.0,
  update_weights_every=1, optim_niter=20)``) and the official repository
  (``cce18403``) run a CCCP with cvxpy/ECOS on :math:`\hat G = G /
  \|G\|_F`, at most ``optim_niter`` convex subproblems, warm-started from
  the previous :math:`\alpha` (ones at first). Their subproblem constrains
  :math:`\alpha_i (\hat G \alpha)_i \|G\|_F \ge 1`, so the normalisation
  cancels: re-run on TorchJD's :math:`J = [[-4, 1, 1], [6, 1, 1]]` it gives
  :math:`\alpha = [0.5915, 0.4071]`, the solution of :math:`G \alpha = 1 /
  \alpha` (not of :math:`\hat G \alpha = 1/\alpha`), with :math:`\|d\|^2 =
  K`. (Its stopping test measures the residual with :math:`\hat G`, so it
  stops on :math:`\|\Delta \alpha\| < 10^{-6}` instead; on some Gramians
  its first subproblem is unbounded and it returns the previous
  :math:`\alpha` unchanged.) TorchJD then rescales the weights so that
  :math:`\|J^\top w\| \le` ``max_norm``, as here. The official repository
  and LibMTL instead weight the losses by :math:`\alpha` and clip the norm of
  the shared parameters' gradient afterwards, so task-specific heads get
  :math:`\alpha`-weighted, unclipped gradients.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    max_norm: the bound on :math:`\|d\|` (> 0; TorchJD and the official
      repository: 1.0), or None for the unclipped :math:`\alpha` (TorchJD's
      ``max_norm=0``).
    optim_niter: the fixed number of Newton iterations (20, the number of
      CCCP iterations of TorchJD and the official repository).
    warm_start: ``(K,)`` previous :math:`\alpha` (unclipped), or None. One
      that is not finite and positive is ignored.

  Returns:
    ``(K,)`` positive weights, no gradient.

  Example:
    >>> nash_mtl_weights(jnp.array([[18., -22.], [-22., 38.]]))
    Array([0.4182, 0.2878], dtype=float32)

  References:
    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, "Multi-Task
    Learning as a Bargaining Game", ICML 2022,
    https://arxiv.org/abs/2202.01017.
  """
  _base.check_gramian(gramian, None, "nash_mtl_weights")
  gramian = lax.stop_gradient(gramian)
  alpha = _solve_alpha(gramian, optim_niter, warm_start)
  return lax.stop_gradient(_clip(alpha, gramian, max_norm))


class NashMTLState(NamedTuple):
  alpha: jax.Array  # (K,) float, the last solved alpha (unclipped); 0 at init
  count: jax.Array  # () int32, calls since the last solve, mod update_every


def nash_mtl(max_norm: float | None = 1.0, update_weights_every: int = 1,
             optim_niter: int = 20) -> _base.Aggregator:
  r"""Nash-MTL as an :class:`~mtl_jax.aggregation.Aggregator`.

  The state (:class:`NashMTLState`) holds the last solved, unclipped
  :math:`\alpha`, the warm start of the next solve (zeros at ``init``, in the
  default float dtype: float32, or float64 under ``jax_enable_x64``; zeros
  mean a cold start), and the number of calls since that solve. Every
  ``update_weights_every`` calls, starting with the first, :math:`\alpha` is
  solved again; in between the previous :math:`\alpha` is reused and only
  rescaled for the current Gramian's norm (TorchJD and the official
  repository do the same). ``init`` again to reset.

  Args:
    max_norm: see :func:`nash_mtl_weights` (default 1.0).
    update_weights_every: solve every this many calls (default 1).
    optim_niter: see :func:`nash_mtl_weights` (default 20).

  Returns:
    An ``Aggregator`` with no parameters and a :class:`NashMTLState`.
  """
  _check_max_norm(max_norm, "nash_mtl")
  every = _checks.integer(update_weights_every,
                                   "update_weights_every", "nash_mtl", low=1)
  optim_niter = _checks.integer(optim_niter, "optim_niter",
                                         "nash_mtl", low=1)

  def init_state(num_tasks: int, key: jax.Array | None) -> NashMTLState:
    del key
    return NashMTLState(jnp.zeros((num_tasks,)), jnp.zeros((), jnp.int32))

  def weights_fn(state: NashMTLState, gramian: jax.Array):
    dtype = _base.float_dtype(gramian)
    previous = state.alpha.astype(dtype)
    if every == 1:
      alpha = _solve_alpha(gramian, optim_niter, previous)
    else:
      alpha = lax.cond(state.count == 0,
                       lambda: _solve_alpha(gramian, optim_niter, previous),
                       lambda: previous)
    weights = _clip(alpha, gramian, max_norm)
    new_state = NashMTLState(alpha.astype(state.alpha.dtype),
                             (state.count + 1) % every)
    return weights, new_state

  return _base.gramian_aggregator(
      weights_fn, init_state, "nash_mtl",
      num_tasks_of=lambda state: state.alpha.shape[-1])
