r"""CAGrad: the best worst-case improvement in a ball around the mean gradient.

.. math::

  w^\star = \operatorname*{argmin}_{w \in \Delta_K}
    \tfrac{1}{K} w^\top G \mathbf{1} + c \|g_0\| \sqrt{w^\top G w},
  \qquad
  d = g_0 + \frac{c \|g_0\|}{\|J^\top w^\star\|} J^\top w^\star

Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021, https://arxiv.org/abs/2110.14048.

:math:`w^\star` is the dual of :math:`\max_{\|d - g_0\| \le c \|g_0\|}
\min_k g_k^\top d`, a small second-order cone program, solved here in
closed form for K <= 2 and by a primal-dual interior-point method with a
fixed iteration budget otherwise.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from optax import projections

from mtl_jax import _checks
from mtl_jax.aggregation import _base

_RESCALES = (0, 1, 2)


def cagrad_weights(gramian: jax.Array, c: float, *, norm_eps: float = 1e-4,
                   rescale: int = 0, max_iters: int = 20,
                   polish_iters: int = 4) -> jax.Array:
  r"""CAGrad's weights: the mean gradient plus a conflict-averse correction.

  .. math::

    w^\star = \operatorname*{argmin}_{w \in \Delta_K}
      w^\top b + \varphi \sqrt{w^\top \hat G w}, \qquad
    \text{weights} = \frac{1}{\rho}\Big(\frac{1}{K}\mathbf{1}
      + \frac{\varphi}{\sqrt{w^{\star\top} \hat G w^\star}} w^\star\Big)

  where :math:`\hat G = G / \operatorname{tr} G` is the Gramian of the
  Frobenius-normalised Jacobian (the weights do not depend on this scale),
  :math:`b = \hat G \mathbf{1} / K` the inner products of the task gradients
  with the mean gradient :math:`g_0`, :math:`\varphi = c \|g_0\| = c
  \sqrt{\mathbf{1}^\top \hat G \mathbf{1}} / K` the radius of the ball around
  :math:`g_0`, :math:`\Delta_K` the probability simplex and :math:`\rho` the
  ``rescale`` divisor (1, :math:`1 + c^2` or :math:`1 + c`). The direction
  :math:`d = J^\top \text{weights}` maximises the smallest improvement
  :math:`\min_k g_k^\top d` over the ball :math:`\|d - g_0\| \le c \|g_0\|`.
  All weights are 0 when :math:`\sqrt{w^{\star\top} \hat G w^\star}` is below
  ``norm_eps`` (a near Pareto-stationary point, where :math:`J^\top w^\star`
  has no direction) and when :math:`\operatorname{tr} G` is below
  ``norm_eps``. When :math:`G` is singular, :math:`w^\star` (hence the
  weights) may not be unique, but :math:`d` is.

  Solver (written here, no kept JAX library has a conic solver; the
  projections use ``optax.projections.projection_simplex``). K = 1 gives
  :math:`w^\star = 1` and K = 2 an exact closed form (on the segment
  :math:`w = (a, 1 - a)` the objective is :math:`\delta a + \varphi
  \sqrt{\kappa (a - a_0)^2 + m}`). For K >= 3, with :math:`\hat G = R
  R^\top` (``jnp.linalg.eigh``, eigenvalues below :math:`K \epsilon
  \lambda_{\max}` set to 0), the primal problem :math:`\max t` s.t.
  :math:`b + \varphi R u \ge t \mathbf{1}`, :math:`\|u\| \le 1` is solved by
  Mehrotra's predictor-corrector interior-point method with Nesterov-Todd
  scaling of the second-order cone (the method of CVXOPT and Clarabel;
  TorchJD calls Clarabel through cvxpy); the dual variables of its K linear
  constraints are :math:`w^\star`, those below their slack set to 0. The
  Newton systems use a QR factorisation of the scaled constraint matrix. The
  loop runs exactly ``max_iters`` times inside ``jit``, stops moving once the
  duality gap and the residuals are below :math:`\epsilon^{3/4}` and keeps
  the best iterate: about 12 iterations reach a gap of 1e-10 in float64, and
  float32 stalls near 1e-6 (the ball's boundary is resolved to
  :math:`\epsilon` only). ``polish_iters`` projected Newton steps on the
  smooth objective then finish the job: the Newton step on the free tasks
  (in the support, or with a gradient entry below the multiplier of
  :math:`\sum w = 1`), tried at 8 step sizes at once, projected onto the
  simplex and kept only if the objective does not increase. Measured against
  scipy's SLSQP in float64 on 65 random Jacobians with K <= 10
  (rank-deficient, Pareto-stationary and zero ones included) and
  :math:`c \in \{0, 0.4, 0.5, 1, 2\}`, the directions :math:`J^\top w` agree
  to 1.1e-7 of :math:`\|J\|_F` (median 1e-10); in float32 to 1e-5, and
  3e-4 at worst (near-stationary inputs with :math:`c = 1`). Every step is a
  few ``(2K+1)``-sized batched linear-algebra calls, and the function vmaps.

  Conventions: TorchJD's ``CAGradWeighting(c, norm_eps=1e-4)`` normalises
  :math:`G` by its trace, returns these weights with ``rescale=0`` (pinned:
  :math:`c = 0.5` on ``[[18, -22], [-22, 38]]`` gives ``[0.7041, 0.5000]``)
  and zeros below ``norm_eps``. LibMTL's ``CAGrad`` (``calpha=0.5``) and the
  Nash-MTL repository's (``c=0.4``) use ``rescale=1``, dividing the direction
  by :math:`1 + c^2` (``rescale=2``: by :math:`1 + c`), run scipy's SLSQP on
  the raw :math:`G` with 1e-8 added under the square roots instead of the
  zero rule, and the Nash-MTL repository multiplies the result by K. With
  ``norm_eps=0`` and :math:`G = 0` TorchJD divides 0 by 0; here the weights
  are 0. With
  :math:`c = 0` the weights are :math:`1/K` (the mean gradient); for
  :math:`c \ge 1` the direction conflicts with no task
  (:math:`J d \ge 0`).

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    c: radius of the ball relative to :math:`\|g_0\|`, >= 0. Required, as in
      TorchJD; LibMTL's default is 0.5, the Nash-MTL repository's 0.4.
    norm_eps: threshold on the trace of :math:`G` and on
      :math:`\|\hat J^\top w^\star\|` below which all weights are 0
      (default 1e-4, TorchJD's).
    rescale: 0 (default, TorchJD), 1 (LibMTL's and the Nash-MTL repository's
      default: divide by :math:`1 + c^2`) or 2 (divide by :math:`1 + c`).
    max_iters: the fixed interior-point iteration budget, used for K >= 3
      (default 20).
    polish_iters: projected Newton steps after it (default 4; 0 skips
      them).

  Returns:
    ``(K,)`` non-negative weights, the direction being :math:`d = J^\top w`;
    no gradient flows through them.

  Example:
    >>> cagrad_weights(jnp.array([[18., -22.], [-22., 38.]]), c=0.5)
    Array([0.7041, 0.5   ], dtype=float32)

  References:
    Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for
    Multi-task Learning", NeurIPS 2021, https://arxiv.org/abs/2110.14048.
    Vandenberghe, "The CVXOPT linear and quadratic cone program solvers",
    2010, https://www.seas.ucla.edu/~vandenbe/publications/coneprog.pdf.
  """
  _base.check_gramian(gramian, None, "cagrad_weights")
  gramian = lax.stop_gradient(gramian)
  num_tasks = gramian.shape[0]
  dtype = _base.float_dtype(gramian)
  c = jnp.asarray(c, dtype)
  factor, b, phi = _reduce(gramian, c, norm_eps)
  if num_tasks == 1:
    w = jnp.ones((1,), dtype)
  elif num_tasks == 2:
    w = _two_tasks(factor, b, phi)
  else:
    w = _interior_point(factor, b, phi, max_iters)
    w = _polish(factor, b, phi, w, polish_iters)
  s = jnp.linalg.norm(factor.T @ w)
  keep = (s >= norm_eps) & (s > 0)
  weights = jnp.where(
      keep, 1.0 / num_tasks + phi * w / jnp.where(keep, s, 1.0), 0.0)
  if rescale == 1:
    weights = weights / (1.0 + c**2)
  elif rescale == 2:
    weights = weights / (1.0 + c)
  return weights.astype(dtype)


def cagrad(c: float, norm_eps: float = 1e-4, rescale: int = 0,
           max_iters: int = 20, polish_iters: int = 4) -> _base.Aggregator:
  """CAGrad as an :class:`~mtl_jax.aggregation.Aggregator`.

  Args:
    c: see :func:`cagrad_weights` (required; LibMTL: 0.5, Nash-MTL repo: 0.4).
    norm_eps: see :func:`cagrad_weights`.
    rescale: see :func:`cagrad_weights` (0: TorchJD, 1: LibMTL and Nash-MTL).
    max_iters: see :func:`cagrad_weights`.
    polish_iters: see :func:`cagrad_weights`.

  Returns:
    An ``Aggregator`` with no parameters and a state that only records K.
  """
  _check_hparams(c, norm_eps, rescale, max_iters, polish_iters, "cagrad")

  def weights_fn(state, g):
    return cagrad_weights(g, c, norm_eps=norm_eps, rescale=rescale,
                          max_iters=max_iters,
                          polish_iters=polish_iters), state

  return _base.gramian_aggregator(weights_fn, _base.stateless, "cagrad")


def _check_hparams(c, norm_eps, rescale, max_iters, polish_iters,
                   method: str) -> None:
  _base.check_nonnegative(c, "c", method,
                          "LibMTL uses 0.5, the Nash-MTL repository 0.4.")
  _base.check_nonnegative(norm_eps, "norm_eps", method)
  if isinstance(rescale, bool) or rescale not in _RESCALES:
    raise ValueError(
        f"{method}: rescale must be 0 (TorchJD), 1 (divide by 1 + c^2, "
        f"LibMTL) or 2 (divide by 1 + c), got {rescale!r}.")
  _checks.integer(max_iters, "max_iters", method, low=1)
  _checks.integer(polish_iters, "polish_iters", method, low=0)


def _reduce(gramian, c, norm_eps):
  """``(R, b, phi)``: ``G / tr G = R R^T``, ``b = R R^T 1 / K``, ``phi``."""
  num_tasks = gramian.shape[0]
  dtype = gramian.dtype
  trace = jnp.trace(gramian)
  ok = (trace >= norm_eps) & (trace > 0)
  normed = jnp.where(ok, gramian / jnp.where(ok, trace, 1.0), 0.0)
  values, vectors = jnp.linalg.eigh(0.5 * (normed + normed.T))
  cutoff = num_tasks * jnp.finfo(dtype).eps * jnp.max(values, initial=0.0)
  factor = vectors * jnp.sqrt(jnp.where(values > cutoff, values, 0.0))
  mean = factor.T @ jnp.full((num_tasks,), 1.0 / num_tasks, dtype)  # g_0
  return factor, factor @ mean, c * jnp.linalg.norm(mean)


def _two_tasks(factor, b, phi):
  """The exact minimiser for K = 2: on ``w = (a, 1 - a)`` the objective is
  ``delta a + phi sqrt(kappa (a - a0)^2 + m)``, minimised in closed form."""
  diff = factor[0] - factor[1]         # g_1 - g_2 (normalised)
  kappa = diff @ diff
  has_kappa = kappa > 0
  a0 = -(factor[1] @ diff) / jnp.where(has_kappa, kappa, 1.0)
  foot = factor[1] + a0 * diff         # the point of the line nearest to 0
  m = foot @ foot
  delta = b[0] - b[1]
  r = -delta / jnp.where(phi > 0, phi, 1.0)
  inside = has_kappa & (phi > 0) & (r * r < kappa)
  # delta + phi kappa (a - a0) / sqrt(kappa (a - a0)^2 + m) = 0
  shift = r * jnp.sqrt(m / jnp.where(inside, kappa * (kappa - r * r), 1.0))
  a = jnp.where(inside, a0 + shift, jnp.where(delta < 0, 1.0, 0.0))
  a = jnp.clip(a, 0.0, 1.0)
  return jnp.stack([a, 1.0 - a])


# --- the interior-point method ------------------------------------------------
# Cone program in CVXOPT's form: minimise q^T x s.t. A x + s = h, s in C, with
# x = (u, t), q = -e_t, C = R_+^K x Q^{K+1} (Q the second-order cone):
#   linear block  s_l = b + phi R u - t 1 >= 0,  A_l = [-phi R, 1], h_l = b;
#   cone block    s_q = (1, u) in Q,             A_q = [[0, 0], [-I, 0]],
#                                                h_q = (1, 0).
# The dual variables are z = (z_l, z_q) in C with A^T z + q = 0, so that
# z_l >= 0 sums to 1: z_l is w.


def _jnorm2(x):
  """``x_0^2 - ||x_1||^2``, the squared Lorentz norm, without cancellation."""
  tail = jnp.linalg.norm(x[1:])
  return (x[0] - tail) * (x[0] + tail)


def _nt_scaling(s, z):
  """Symmetric ``W`` and ``W^{-1}`` with ``W z = W^{-1} s`` on the cone Q."""
  s_norm = jnp.sqrt(jnp.maximum(_jnorm2(s), jnp.finfo(s.dtype).tiny))
  z_norm = jnp.sqrt(jnp.maximum(_jnorm2(z), jnp.finfo(s.dtype).tiny))
  s_bar, z_bar = s / s_norm, z / z_norm
  gamma = jnp.sqrt(0.5 * (1.0 + s_bar @ z_bar))
  sign = jnp.ones_like(s).at[1:].set(-1.0)  # the diagonal of J
  w_bar = (s_bar + sign * z_bar) / (2.0 * gamma)
  v = w_bar.at[0].add(1.0) / jnp.sqrt(2.0 * (w_bar[0] + 1.0))
  beta = jnp.sqrt(s_norm / z_norm)
  scaling = beta * (2.0 * jnp.outer(v, v) - jnp.diag(sign))
  inverse = (2.0 * jnp.outer(sign * v, sign * v) - jnp.diag(sign)) / beta
  return scaling, inverse


def _jordan_product(x, y):
  return jnp.concatenate([(x @ y)[None], x[0] * y[1:] + y[0] * x[1:]])


def _jordan_solve(lam, v):
  """``x`` with ``lam o x = v`` (Jordan product of the cone Q)."""
  x0 = (lam[0] * v[0] - lam[1:] @ v[1:]) / _jnorm2(lam)
  return jnp.concatenate([x0[None], (v[1:] - x0 * lam[1:]) / lam[0]])


def _max_step_linear(x, dx):
  neg = dx < 0
  return jnp.min(jnp.where(neg, -x / jnp.where(neg, dx, -1.0), jnp.inf))


def _max_step_cone(x, dx):
  """Largest ``a`` with ``x + a dx`` in Q, for ``x`` inside Q."""
  sign = jnp.ones_like(x).at[1:].set(-1.0)
  qa, qb, qc = dx @ (sign * dx), x @ (sign * dx), _jnorm2(x)
  den = -qb + jnp.sqrt(jnp.maximum(qb * qb - qa * qc, 0.0))
  leaves = (qa < 0) | ((qb < 0) & (qb * qb >= qa * qc))
  return jnp.where(leaves & (den > 0), qc / jnp.where(den > 0, den, 1.0),
                   jnp.inf)


def _interior_point(factor, b, phi, max_iters):
  r"""CAGrad's weights as the duals of a second-order cone program.

  With ``factor`` :math:`R` (:math:`\hat G = R R^\top`), ``b`` and ``phi``
  from :func:`_reduce`, the primal is CAGrad's own problem in the factor's
  coordinates: over :math:`x = (u, t)`, maximise :math:`t` subject to
  :math:`t \le b_k + \varphi R_k u` for every task (the linear
  constraints) and :math:`\lVert u \rVert \le 1` (the cone), i.e. the
  best worst-task improvement in the ball around :math:`g_0`. The weights
  are the dual variables of the task constraints. A primal-dual
  interior-point method with Nesterov-Todd scaling (:func:`_nt_scaling`)
  and Mehrotra's correction runs exactly ``max_iters`` iterations (a fixed
  budget, for ``jit``), keeps the iterate of the smallest gap and residuals,
  and zeroes the weight of every task whose dual is below its slack.
  Returns ``(K,)`` weights on the simplex; :func:`_polish` finishes them.
  """
  k = b.shape[0]
  dtype = b.dtype
  a_lin = jnp.concatenate([-phi * factor, jnp.ones((k, 1), dtype)], 1)
  a_cone = jnp.zeros((k + 1, k + 1), dtype).at[1:, :k].set(
      -jnp.eye(k, dtype=dtype))
  h_cone = jnp.zeros((k + 1,), dtype).at[0].set(1.0)
  q = jnp.zeros((k + 1,), dtype).at[k].set(-1.0)
  degree = k + 1.0
  tol = jnp.finfo(dtype).eps ** 0.75

  def residuals(state):
    x, s_lin, s_cone, z_lin, z_cone = state
    r_x = a_lin.T @ z_lin + a_cone.T @ z_cone + q
    r_lin = a_lin @ x + s_lin - b
    r_cone = a_cone @ x + s_cone - h_cone
    gap = s_lin @ z_lin + s_cone @ z_cone
    res = jnp.max(jnp.abs(jnp.concatenate([r_x, r_lin, r_cone])))
    return r_x, r_lin, r_cone, gap, res

  def step(state):
    _, s_lin, s_cone, z_lin, z_cone = state
    r_x, r_lin, r_cone, gap, res = residuals(state)
    mu = gap / degree
    w_lin = jnp.sqrt(s_lin / z_lin)
    w_cone, w_cone_inv = _nt_scaling(s_cone, z_cone)
    lam_lin = jnp.sqrt(s_lin * z_lin)
    lam_cone = w_cone @ z_cone
    # A^T W^-2 A = T^T T with T = W^-1 A: a QR of T keeps the conditioning.
    tri = jnp.linalg.qr(jnp.concatenate([a_lin / w_lin[:, None],
                                         w_cone_inv @ a_cone]), mode="r")
    w2_cone_inv = w_cone_inv @ w_cone_inv

    def direction(d_lin, d_cone):
      # Newton step for A^T dz = -r_x, A dx + ds = -r_z and the linearised
      # complementarity lam o (W^-1 ds + W dz) = d.
      p_lin = d_lin / lam_lin
      p_cone = _jordan_solve(lam_cone, d_cone)
      t_lin = (r_lin + w_lin * p_lin) / w_lin**2
      t_cone = w2_cone_inv @ (r_cone + w_cone @ p_cone)
      rhs = -r_x - a_lin.T @ t_lin - a_cone.T @ t_cone
      y = jax.scipy.linalg.solve_triangular(tri, rhs, trans="T", lower=False)
      dx = jax.scipy.linalg.solve_triangular(tri, y, lower=False)
      dz_lin = (a_lin @ dx + r_lin + w_lin * p_lin) / w_lin**2
      dz_cone = w2_cone_inv @ (a_cone @ dx + r_cone + w_cone @ p_cone)
      # ds from the primal equation keeps the primal residual at rounding.
      return (dx, -r_lin - a_lin @ dx, -r_cone - a_cone @ dx, dz_lin, dz_cone)

    def max_step(d):
      _, ds_lin, ds_cone, dz_lin, dz_cone = d
      return jnp.min(jnp.stack([
          jnp.asarray(1.0, dtype), _max_step_linear(s_lin, ds_lin),
          _max_step_linear(z_lin, dz_lin), _max_step_cone(s_cone, ds_cone),
          _max_step_cone(z_cone, dz_cone)]))

    affine = direction(-lam_lin * lam_lin,
                       -_jordan_product(lam_cone, lam_cone))
    sigma = (1.0 - max_step(affine)) ** 3
    # Mehrotra's second-order correction, in the scaled variables.
    corr_lin = (affine[1] / w_lin) * (affine[3] * w_lin)
    corr_cone = _jordan_product(w_cone_inv @ affine[2], w_cone @ affine[4])
    e_cone = jnp.zeros_like(s_cone).at[0].set(1.0)
    combined = direction(
        sigma * mu - lam_lin * lam_lin - corr_lin,
        sigma * mu * e_cone - _jordan_product(lam_cone, lam_cone) - corr_cone)
    alpha = 0.99 * max_step(combined)
    new = tuple(v + alpha * dv for v, dv in zip(state, combined))
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in new]))
    done = (gap < tol) & (res < tol)
    return jax.tree.map(lambda old, nw: jnp.where(done | ~finite, old, nw),
                        state, new)

  def merit(state):
    _, _, _, gap, res = residuals(state)
    return jnp.maximum(gap, res)

  def body(_, carry):
    state, best, best_merit = carry
    state = step(state)
    m = merit(state)
    better = m < best_merit
    best = jax.tree.map(lambda n, o: jnp.where(better, n, o), state, best)
    return state, best, jnp.where(better, m, best_merit)

  t0 = jnp.min(b) - 1.0
  state = (jnp.zeros((k + 1,), dtype).at[k].set(t0), b - t0, h_cone,
           jnp.full((k,), 1.0 / k, dtype), h_cone)
  _, best, _ = lax.fori_loop(0, max_iters, body, (state, state, merit(state)))
  _, s_lin, _, z_lin, _ = best
  # Complementarity: a task whose dual variable is below its slack is
  # inactive and gets the weight 0 that it has at the solution.
  z_lin = jnp.maximum(z_lin, 0.0)
  w = jnp.where(z_lin > s_lin, z_lin, 0.0)
  w = jnp.where(jnp.sum(w) > 0, w, z_lin)
  total = jnp.sum(w)
  return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 1.0 / k)


def _polish(factor, b, phi, w, num_steps):
  """Projected Newton steps for the smooth objective (away from
  ``J^T w = 0``), with a batched backtracking over 8 step sizes."""
  num_tasks = b.shape[0]
  dtype = b.dtype
  eps = jnp.finfo(dtype).eps
  alphas = 0.5 ** jnp.arange(8, dtype=dtype)
  project = jax.vmap(projections.projection_simplex)

  def body(_, w):
    x = factor.T @ w
    s = jnp.linalg.norm(x)
    g = factor @ x
    s_safe = jnp.where(s > 0, s, 1.0)
    grad = b + phi * g / s_safe
    f_old = b @ w + phi * s
    # Free: the tasks in the support (the projection leaves rounding-sized
    # weights behind), and those whose gradient entry is below the multiplier
    # f of the constraint sum(w) = 1 (they would enter).
    free = (w > num_tasks * eps) | (grad < f_old)
    hess = phi * (factor @ factor.T / s_safe - jnp.outer(g, g) / s_safe**3)
    reg = eps ** 0.5 * jnp.max(jnp.abs(jnp.diagonal(hess)), initial=0.0)
    hess = (jnp.where(free[:, None] & free[None, :], hess, 0.0)
            + jnp.diag(jnp.where(free, reg, 1.0)))
    ones = free.astype(dtype)
    kkt = jnp.zeros((num_tasks + 1, num_tasks + 1), dtype)
    kkt = kkt.at[:num_tasks, :num_tasks].set(hess)
    kkt = kkt.at[:num_tasks, num_tasks].set(ones)
    kkt = kkt.at[num_tasks, :num_tasks].set(ones)
    rhs = jnp.concatenate([-jnp.where(free, grad, 0.0),
                           jnp.zeros((1,), dtype)])
    dw = jnp.where(free, jnp.linalg.solve(kkt, rhs)[:num_tasks], 0.0)
    # (optax's projection returns float64 for float32 input under x64.)
    cands = project(w + alphas[:, None] * dw).astype(dtype)
    f_cands = cands @ b + phi * jnp.linalg.norm(cands @ factor, axis=1)
    best = jnp.argmin(jnp.where(jnp.isfinite(f_cands), f_cands, jnp.inf))
    ok = ((s > 0) & (phi > 0) & jnp.isfinite(f_cands[best])
          & (f_cands[best] <= f_old + 4 * eps * (jnp.abs(f_old) + phi * s)))
    return jnp.where(ok, cands[best], w)

  return lax.fori_loop(0, num_steps, body, w)
