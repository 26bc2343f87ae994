r"""Damped Newton for :math:`G w = w^{-\beta}`, :math:`w > 0` (FairGrad, Nash).

.. math::

  (G + \epsilon D_G)\, w = w^{-\beta}
  \iff w = \operatorname*{argmin}_{w > 0} \tfrac12 w^\top (G + \epsilon D_G)
  w - \sum_{i=1}^{K} h_\beta(w_i), \qquad
  h_\beta(x) = \frac{x^{1 - \beta} - 1}{1 - \beta} \ (\log x \text{ at }
  \beta = 1)

where :math:`G` is the ``(K, K)`` PSD Gramian, :math:`\beta > 0`,
:math:`D_G = \operatorname{diag}(G_{11}, \dots, G_{KK})` and :math:`\epsilon`
a small relative ridge (see :func:`normalise`), which makes a solution exist
for every :math:`G`. Since :math:`h_\beta'(x) = x^{-\beta}` and
:math:`-h_\beta` is strictly convex, the objective is strictly convex and the
equation is its stationarity condition. FairGrad solves it with
:math:`\beta = 1/\alpha`, Nash-MTL with :math:`\beta = 1`.

Written here: no kept JAX library solves it inside ``jit`` (TorchJD calls
``scipy.optimize.least_squares``, the Nash-MTL repository a CCCP with cvxpy).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# Fraction-to-the-boundary rule: a step moves each w_i at most this fraction
# of the way to 0.
_TO_BOUNDARY = 0.99
# Backtracking: the largest of t0, t0/2, ..., t0/2^(_HALVINGS-1) that passes
# the Armijo test with constant _ARMIJO (all evaluated at once).
_HALVINGS = 12
_ARMIJO = 1e-4
# Full float32 products even where XLA would use TF32 (GPUs): the solver's
# accuracy rests on them, and they are K x K.
_HIGHEST = lax.Precision.HIGHEST


def _h(x: jax.Array, beta: jax.Array) -> jax.Array:
  """``(x^(1-beta) - 1) / (1-beta)``, continuous (``log x``) at beta = 1."""
  log_x = jnp.log(x)
  c = (1.0 - beta) * log_x
  small = jnp.abs(c) < 1e-3
  exprel = jnp.where(small, 1.0 + c / 2.0 + c * c / 6.0,
                     jnp.expm1(c) / jnp.where(small, 1.0, c))
  return log_x * exprel


def _objective(gramian: jax.Array, beta: jax.Array, u: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
  """The objective at ``u`` (last axis), and the size of the terms summed
  into it (for a rounding tolerance)."""
  h = _h(u, beta)
  value = (0.5 * jnp.sum(jnp.matmul(u, gramian, precision=_HIGHEST) * u, -1)
           - jnp.sum(h, axis=-1))
  size = (0.5 * jnp.sum(jnp.matmul(u, jnp.abs(gramian), precision=_HIGHEST)
                        * u, -1)
          + jnp.sum(jnp.abs(h), axis=-1))
  return value, size


def _newton_step(gramian: jax.Array, beta: jax.Array, u: jax.Array
                 ) -> jax.Array:
  """One damped Newton step on the objective, from ``u > 0``."""
  dtype = u.dtype
  power = jnp.exp(-beta * jnp.log(u))              # u^(-beta)
  grad = jnp.matmul(gramian, u, precision=_HIGHEST) - power
  curvature = beta * power / u                     # -h''(u) = beta u^(-beta-1)
  hessian = gramian + jnp.diag(curvature)
  # Jacobi scaling before the solve: the curvature spans many orders of
  # magnitude when some u_i is small. (An LU solve: as accurate here as a
  # Cholesky one, and half its compile time.)
  scale = lax.rsqrt(jnp.diagonal(hessian))
  delta = -scale * jnp.linalg.solve(hessian * scale[:, None] * scale[None, :],
                                    scale * grad)
  # A solve that failed in rounding (not finite): the scaled gradient
  # instead, still a descent direction.
  delta = jnp.where(jnp.all(jnp.isfinite(delta)), delta,
                    -grad / jnp.diagonal(hessian))
  slope = jnp.sum(grad * delta)                    # < 0 unless converged
  ratio = jnp.where(delta < 0, -u / jnp.where(delta < 0, delta, -1.0),
                    jnp.inf)
  t0 = jnp.minimum(1.0, _TO_BOUNDARY * jnp.min(ratio))
  steps = t0 * 0.5 ** jnp.arange(_HALVINGS, dtype=dtype)
  candidates = u + steps[:, None] * delta
  value, size = _objective(gramian, beta, u)
  values, _ = _objective(gramian, beta, candidates)
  # Near the solution the decrease is below the rounding of the objective:
  # the tolerance lets the (then accurate) Newton step through.
  tolerance = 8 * jnp.finfo(dtype).eps * size
  accepted = (jnp.all(candidates > 0, axis=-1)
              & (values <= value + _ARMIJO * steps * slope + tolerance))
  step = jnp.where(jnp.any(accepted), steps[jnp.argmax(accepted)], 0.0)
  step = jnp.where(jnp.isfinite(slope) & (slope < 0), step, 0.0)
  return u + step * delta


def normalise(gramian: jax.Array, reg_eps) -> tuple[jax.Array, jax.Array,
                                                    jax.Array]:
  r"""``(G / g + ridge, g, nonzero)`` with ``g = tr(G) / K``.

  The ridge is :math:`\max(\epsilon, \text{eps}) \operatorname{diag}(\hat
  G)` (``eps`` of the dtype), except that a zero gradient
  (:math:`\hat G_{ii} \le \text{eps}^2`) gets 1 (then :math:`u_i = 1`).
  ``g`` is 1 where :math:`G` is 0 to rounding, flagged by ``nonzero`` false.
  """
  dtype = gramian.dtype
  num_tasks = gramian.shape[0]
  eps = jnp.finfo(dtype).eps
  mean_diag = jnp.trace(gramian) / num_tasks
  nonzero = mean_diag > jnp.finfo(dtype).tiny
  mean_diag = jnp.where(nonzero, mean_diag, 1.0)
  sym = 0.5 * (gramian + gramian.T) / mean_diag
  diag = jnp.diagonal(sym)
  relative = jnp.maximum(jnp.asarray(reg_eps, dtype), eps)
  ridge = jnp.where(diag > eps * eps, relative * diag, 1.0)
  return sym + jnp.diag(ridge), mean_diag, nonzero


def solve(gramian: jax.Array, beta, *, num_iters: int, reg_eps,
          init: jax.Array | None = None) -> jax.Array:
  r"""Solves :math:`(G + \epsilon D_G) w = w^{-\beta}` for :math:`w > 0`.

  Solved in the units of :math:`\hat G = G / g`, :math:`g =
  \operatorname{tr}(G) / K`: if :math:`(\hat G + \epsilon \hat D) u =
  u^{-\beta}` then :math:`w = g^{-1/(1+\beta)} u`. Damped Newton: Hessian
  :math:`\hat G + \epsilon \hat D + \operatorname{diag}(\beta
  u^{-\beta-1})`, a step at most 0.99 of the way to the boundary
  :math:`u = 0`, then backtracking (halvings) to the Armijo condition, with a
  tolerance for rounding. Exactly ``num_iters`` iterations run
  (``lax.fori_loop``); once converged the steps are 0 to rounding.

  It starts from ``init`` (a warm start) where that has the lower objective,
  else from :math:`u = 1` (the solution for :math:`\hat G = I`); an ``init``
  that is not finite and positive (zeros: no previous solution) is ignored.
  A Gramian that is 0 to rounding gives ``w = 1/K``.

  Args:
    gramian: ``(K, K)`` PSD matrix :math:`G`.
    beta: :math:`\beta > 0` (a float or a traced scalar).
    num_iters: the fixed number of Newton iterations.
    reg_eps: the relative ridge :math:`\epsilon \ge 0`.
    init: ``(K,)`` start in the units of :math:`w`, or None.

  Returns:
    ``(K,)`` positive :math:`w`, in the dtype of ``gramian``.
  """
  dtype = gramian.dtype
  num_tasks = gramian.shape[0]
  beta = jnp.asarray(beta, dtype)
  normalised, mean_diag, nonzero = normalise(gramian, reg_eps)
  exponent = 1.0 / (1.0 + beta)
  u0 = jnp.ones((num_tasks,), dtype)
  if init is not None:
    warm = jnp.asarray(init, dtype) * mean_diag ** exponent
    valid = jnp.all(jnp.isfinite(warm) & (warm > 0))
    warm = jnp.where(valid, warm, u0)
    better = (_objective(normalised, beta, warm)[0]
              <= _objective(normalised, beta, u0)[0])
    u0 = jnp.where(valid & better, warm, u0)
  u = lax.fori_loop(0, num_iters,
                    lambda _, u: _newton_step(normalised, beta, u), u0)
  w = u * mean_diag ** -exponent
  return jnp.where(nonzero, w, jnp.asarray(1.0 / num_tasks, dtype))


def residual(gramian: jax.Array, beta, w: jax.Array) -> jax.Array:
  r""":math:`\|G w - w^{-\beta}\| / \|w^{-\beta}\|`: the relative residual of
  the equation without ridge."""
  power = w ** -jnp.asarray(beta, w.dtype)
  return (jnp.linalg.norm(jnp.matmul(gramian, w, precision=_HIGHEST) - power)
          / jnp.linalg.norm(power))
