"""The QP solver of UPGrad, DualProj and MGDA, against an exact reference."""
import functools

import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from mtl_jax.aggregation import _qp


def reference_projection(matrix, lower):
  """Exact ``argmin_{v >= u} v^T A v`` in float64 for a positive definite A.

  With A = L L^T and v = u + x: min ||L^T x + L^T u||^2 over x >= 0, a
  non-negative least-squares problem that scipy solves exactly (active set).
  """
  matrix = np.asarray(matrix, np.float64)
  lower = np.asarray(lower, np.float64)
  factor = np.linalg.cholesky(matrix)
  x, _ = scipy.optimize.nnls(factor.T, -factor.T @ lower, maxiter=10_000)
  return lower + x


def normalize_regularize(gramian, norm_eps=1e-4, reg_eps=1e-4):
  """TorchJD's normalisation and ridge, in float64 numpy."""
  gramian = np.asarray(gramian, np.float64)
  trace = np.trace(gramian)
  base = gramian / trace if trace >= norm_eps else np.zeros_like(gramian)
  return base + reg_eps * np.eye(len(gramian))


def _problems(num_tasks, seed=0):
  """UPGrad's and DualProj's bounds on Jacobians of every kind with K tasks:
  random of several ranks, non-, weakly and strongly stationary."""
  k = num_tasks
  jacobians = [_inputs.jacobian(seed + r, k, 2 * k, r, dtype=np.float64)
               for r in sorted({1, max(1, k // 2), k})]
  jacobians += [_inputs.jacobian(seed + 7, k, max(1, k // 2), max(1, k // 2),
                                 dtype=np.float64)]
  if k >= 2:
    jacobians += [f(seed, k, p, np.float64)
                  for f in (_inputs.non_stationary, _inputs.weakly_stationary,
                            _inputs.strongly_stationary)
                  for p in (max(2, k // 2), 3 * k)]
  bounds = np.vstack([np.eye(k) / k, np.full((1, k), 1 / k)])
  matrices = np.stack([normalize_regularize(j @ j.T) for j in jacobians])
  return matrices, bounds


@functools.partial(jax.jit, static_argnames=("newton_steps",
                                             "active_set_steps"))
def _project_all(matrices, bounds, newton_steps=_qp.NEWTON_STEPS,
                 active_set_steps=None):
  """One compile per K: every matrix against every bound row."""
  return jax.vmap(lambda a: _qp.project_to_dual_cone(
      a, bounds, newton_steps=newton_steps,
      active_set_steps=active_set_steps))(matrices)


def _relative_error(actual, expected):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected)
  return np.abs(actual - expected).max(-1) / np.abs(expected).max(-1)


@pytest.mark.parametrize("num_tasks", [1, 4, 9, 40])
@pytest.mark.slow
def test_matches_the_float64_reference(num_tasks):
  matrices, bounds = _problems(num_tasks)
  with jax.enable_x64():
    v = np.asarray(_project_all(jnp.asarray(matrices), jnp.asarray(bounds)))
  for a, v_a in zip(matrices, v):
    ref = np.stack([reference_projection(a, u) for u in bounds])
    assert np.all(v_a >= bounds - 1e-12)
    assert _relative_error(v_a, ref).max() < 1e-8
    # KKT: the gradient A v is >= 0, and 0 where the bound is not tight.
    grad = v_a @ a
    assert np.all(grad >= -1e-10)
    np.testing.assert_allclose(grad * (v_a - bounds), 0.0, atol=1e-10)


def test_float32_on_well_conditioned_gramians():
  # Full row rank with many more parameters than tasks: cond(A) ~ 10.
  k = 9
  jacobians = [_inputs.jacobian(s, k, 50, k, dtype=np.float64)
               for s in range(4)] + [_inputs.non_stationary(0, k, 50,
                                                            np.float64)]
  matrices = np.stack([normalize_regularize(j @ j.T) for j in jacobians])
  bounds = np.vstack([np.eye(k) / k, np.full((1, k), 1 / k)])
  v = _project_all(jnp.asarray(matrices, jnp.float32),
                   jnp.asarray(bounds, jnp.float32))
  assert v.dtype == jnp.float32
  for a, v_a in zip(matrices, np.asarray(v)):
    ref = np.stack([reference_projection(a, u) for u in bounds])
    assert _relative_error(v_a, ref).max() < 2e-5


@pytest.mark.slow
def test_newton_steps_alone_cycle_and_the_active_set_phase_recovers():
  # A rank-deficient Gramian on which the primal-dual active-set iteration
  # cycles: the Lawson-Hanson phase is what makes the solve reliable, and the
  # solution it reaches is a fixed point of further steps.
  jac = _inputs.jacobian(65, 4, 8, 2, dtype=np.float64)
  a = normalize_regularize(jac @ jac.T)
  ref = reference_projection(a, np.full(4, 0.25))
  with jax.enable_x64():
    a, u = jnp.asarray(a[None]), jnp.full((1, 4), 0.25)
    newton_only = _project_all(a, u, newton_steps=40, active_set_steps=0)
    default = _project_all(a, u)
    longer = _project_all(a, u, active_set_steps=40)
  assert _relative_error(newton_only[0], ref) > 1e-2
  assert _relative_error(default[0], ref) < 1e-12
  np.testing.assert_array_equal(longer, default)


def test_degenerate_matrices():
  # A = 0 (a zero Gramian without ridge): every feasible v is optimal and the
  # solver stays at the bound. A zero bound gives zero.
  matrices = jnp.stack([jnp.zeros((3, 3)), jnp.eye(3)])
  bounds = jnp.array([[0.5, 0.0, 0.25], [0.0, 0.0, 0.0]])
  v = _project_all(matrices, bounds)
  np.testing.assert_array_equal(v[0, 0], bounds[0])
  np.testing.assert_array_equal(v[1, 1], 0.0)
  # Rank-deficient without ridge: still finite and feasible, and J^T v is the
  # projection.
  jac = _inputs.jacobian(5, 6, 8, 2, dtype=np.float64)
  a = normalize_regularize(jac @ jac.T, reg_eps=0.0)
  u = np.full((1, 6), 1 / 6)
  with jax.enable_x64():
    v = np.asarray(_project_all(jnp.asarray(a[None]), jnp.asarray(u)))[0, 0]
  ref = reference_projection(a + 1e-12 * np.eye(6), u[0])
  assert np.all(np.isfinite(v)) and np.all(v >= 1 / 6 - 1e-12)
  np.testing.assert_allclose(v @ jac, ref @ jac, atol=1e-6)


def test_simplex_min_norm_on_known_cases():
  # MGDA's reduction (tests/aggregation/test_mgda.py checks it at length):
  # TorchJD's pinned value, equal gradients, orthogonal ones, zero.
  simplex = jax.vmap(_qp.simplex_min_norm)
  w = simplex(jnp.array([[[18.0, -22.0], [-22.0, 38.0]], jnp.ones((2, 2)),
                         jnp.eye(2), jnp.zeros((2, 2))]))
  np.testing.assert_allclose(w[0], [0.6, 0.4], atol=1e-6)
  np.testing.assert_allclose(jnp.sum(w[1]), 1.0, atol=1e-6)
  np.testing.assert_allclose(w[2:], 0.5, atol=1e-6)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_kkt_residuals_at_64_tasks(x64):
  """UPGrad's 64 projections and DualProj's one at K = 64 satisfy the KKT
  conditions of min_{v >= u} v^T A v (A v >= 0, v >= u, A v . (v - u) = 0),
  and MGDA's simplex point those of min_{w in simplex} w^T G w, to the
  precision of the dtype; the early exit does not cut them short."""
  k = 64
  jac = _inputs.conflicting_jacobian(3, k)
  gram = jac @ jac.T
  a = normalize_regularize(gram)
  bounds = np.vstack([np.eye(k) / k, np.full((1, k), 1 / k)])
  tol = 1e-9 if x64 else 2e-4
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    v = np.asarray(_qp.project_to_dual_cone(jnp.asarray(a, dtype),
                                            jnp.asarray(bounds, dtype)),
                   np.float64)
    w = np.asarray(_qp.simplex_min_norm(jnp.asarray(gram / np.trace(gram),
                                                    dtype)), np.float64)
  grad = v @ a  # (rows, K): A v, the multipliers
  scale = np.abs(grad).max()
  assert np.all(v >= bounds - tol / k)
  assert np.all(grad >= -tol * scale)
  assert np.abs(grad * (v - bounds)).max() <= tol * scale / k
  ref = np.stack([reference_projection(a, u) for u in bounds[[0, -1]]])
  assert _relative_error(v[[0, -1]], ref).max() < (1e-8 if x64 else 1e-3)
  # MGDA: w on the simplex, (G w)_i >= w^T G w, with equality on the support,
  # to rounding on the scale of G (the minimum norm is 1e-5 of it here).
  g = gram / np.trace(gram)
  gw, value = g @ w, w @ g @ w
  g_scale = np.abs(g).max()
  assert np.all(w >= 0) and abs(w.sum() - 1) < tol
  assert np.all(gw >= value - tol * g_scale)
  support = w > 1e-3 / k
  np.testing.assert_allclose(gw[support], value, atol=tol * g_scale)
