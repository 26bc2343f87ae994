"""FairGrad: the equation G w = w^(-1/alpha), TorchJD's properties, limits."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative

from mtl_jax.aggregation import _barrier
from mtl_jax.aggregation.fairgrad import fairgrad, fairgrad_weights

# alpha traced: one compile per Gramian shape and dtype.
_weights = jax.jit(fairgrad_weights)

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)
G_BASE = J_BASE @ J_BASE.T

# Full-rank inputs: (seed, num_tasks, num_params); the numbers of tasks of
# _inputs.all_jacobians(), so that the compiled solves are shared.
FULL_RANK = [(0, 2, 5), (1, 4, 4), (3, 9, 11)]
ALPHAS = (0.1, 0.5, 1.0, 2.0, 5.0)


def _typical_jacobians():
  """TorchJD's typical matrices: zero, random of every rank, and strongly,
  strictly weakly and non-weakly stationary ones (9 tasks rather than
  TorchJD's 20, to share the compiled solves with the 9 x 11 inputs)."""
  out = list(_inputs.all_jacobians())
  for seed in range(2):
    out += [_inputs.strongly_stationary(seed, 9, 5),
            _inputs.weakly_stationary(seed, 9, 5),
            _inputs.non_stationary(seed, 9, 5),
            _inputs.strongly_stationary(seed, 9, 100)]
  return out


def test_pinned_torchjd():
  w = _weights(jnp.asarray(G_BASE), 1.0)
  np.testing.assert_allclose(w, [0.5915, 0.4071], atol=1e-4)
  np.testing.assert_allclose(np.asarray(w) @ J_BASE, [0.0766, 0.9985, 0.9985],
                             atol=1e-4)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("seed,k,p", FULL_RANK)
def test_solves_the_equation(seed, k, p, alpha):
  jac = _inputs.jacobian(seed, k, p, k, dtype=np.float64)
  jac *= np.logspace(-1, 1, k)[:, None]          # unequal gradient norms
  gramian = jac @ jac.T
  with jax.enable_x64():
    w64 = _weights(jnp.asarray(gramian), alpha)
    assert w64.dtype == jnp.float64
    assert np.all(np.asarray(w64) > 0)
    assert _barrier.residual(jnp.asarray(gramian), 1 / alpha, w64) < 1e-6
    # float32: the residual of its weights, in float64.
    w32 = _weights(jnp.asarray(gramian, jnp.float32), alpha)
    assert w32.dtype == jnp.float32
    w32 = jnp.asarray(w32, jnp.float64)
    assert _barrier.residual(jnp.asarray(gramian), 1 / alpha, w32) < 1e-4
  np.testing.assert_allclose(w32, w64, rtol=1e-4)


def test_closed_forms():
  # Orthogonal gradients: s_i w_i = w_i^(-1/alpha), so
  # w_i = s_i^(-alpha / (1 + alpha)); here s = [4, 1/4, 1].
  gramian = jnp.diag(jnp.array([4.0, 0.25, 1.0]))
  for alpha in (0.5, 1.0, 3.0):
    np.testing.assert_allclose(_weights(gramian, alpha),
                               np.array([4.0, 0.25, 1.0])
                               ** (-alpha / (1 + alpha)), rtol=1e-5)
  # One task: w = G^(-alpha / (1 + alpha)); alpha = 1: 1 / ||g||.
  np.testing.assert_allclose(_weights(jnp.array([[9.0]]), 1.0), [1 / 3],
                             rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-10, 1e5])
def test_scale_covariant(scale):
  # G -> c G gives w -> c^(-alpha / (1 + alpha)) w (alpha = 2: c^(-2/3)).
  jac = _inputs.jacobian(4, 4, 7, 4)
  gramian = jnp.asarray(jac @ jac.T)
  np.testing.assert_allclose(_weights(scale * gramian, 2.0),
                             scale ** (-2 / 3) * _weights(gramian, 2.0),
                             rtol=1e-4)


@pytest.mark.parametrize("index", range(len(_typical_jacobians())))
def test_finite_and_non_conflicting_for_alpha_0_1(index):
  # TorchJD's property, on its typical matrices (alpha = 0.1): J d >= 0.
  # Where a solution exists J d = w^-10 > 0 exactly; where none does (the
  # ridge's solution) the negative part stays at rounding level. In float64,
  # as TorchJD (whose scipy solve runs in float64); in float32 on J scaled to
  # a unit root-mean-square row norm, since there the rounding of G w is
  # relative to the size of G.
  jac = _typical_jacobians()[index].astype(np.float64)
  with jax.enable_x64():
    w = _weights(jnp.asarray(jac @ jac.T), 0.1)
  _asserts.assert_finite_shape(w, (jac.shape[0],))
  assert np.all(np.asarray(w) > 0)
  _asserts.assert_non_conflicting(jac, np.asarray(w) @ jac, atol=4e-4)
  rms = np.sqrt(np.mean(np.sum(jac**2, axis=1)))
  jac32 = (jac / (rms if rms > 0 else 1.0)).astype(np.float32)
  d32 = _asserts.direction(lambda g: _weights(g, 0.1), jac32)
  _asserts.assert_finite_shape(d32, (jac.shape[1],))
  _asserts.assert_non_conflicting(jac32, d32, atol=4e-4)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 5.0])
@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_degenerate_inputs_give_finite_weights(index, alpha):
  jac = _inputs.all_jacobians()[index]
  for x64 in (False, True):
    with jax.enable_x64(x64):
      dtype = jnp.float64 if x64 else jnp.float32
      w = _weights(jnp.asarray(jac @ jac.T, dtype), alpha)
      _asserts.assert_finite_shape(w, (jac.shape[0],))
      assert np.all(np.asarray(w) > 0)


@pytest.mark.parametrize("alpha,bound", [(0.5, 5e-3), (1.0, 5e-2),
                                         (2.0, 0.25)])
def test_pareto_stationary_gives_small_direction(alpha, bound):
  # No solution (J^T v = 0 for some v > 0): d is small next to the gradients
  # (MGDA's would be 0), less so as alpha grows.
  for jac in (np.array([[1.0, 2.0], [-1.0, -2.0]], np.float32),
              _inputs.strongly_stationary(0, 9, 5),
              _inputs.strongly_stationary(1, 9, 100)):
    rms = np.sqrt(np.mean(np.sum(jac.astype(np.float64) ** 2, axis=1)))
    for x64 in (False, True):
      with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        d = _asserts.direction(lambda g: _weights(g, alpha),
                               jnp.asarray(jac, dtype))
        assert np.linalg.norm(d) <= bound * rms


def test_weakly_stationary_improves_the_other_tasks():
  # Tasks 0 and 1 conflict exactly; task 2 can improve on its own: the
  # weights of 0 and 1 grow together (to 1e4 in float32: their difference is
  # a few ulps) and d = w_2 g_2 with ||g_2||^2 w_2 = w_2^(-1/alpha), i.e.
  # w_2 = 1 for ||g_2|| = 1.
  jac = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], np.float32)
  for alpha in (0.5, 1.0, 2.0):
    w = np.asarray(_weights(jnp.asarray(jac @ jac.T), alpha), np.float64)
    assert w[0] > 100 and w[1] > 100
    np.testing.assert_allclose(w @ jac, [0.0, 1.0], atol=5e-3)


def test_zero_gradient_task_does_not_change_the_others():
  jac = _inputs.jacobian(5, 3, 6, 3)
  with_zero = np.insert(jac, 1, 0.0, axis=0)     # task 1 has no gradient
  w = np.asarray(_weights(jnp.asarray(with_zero @ with_zero.T), 1.0))
  _asserts.assert_finite_shape(w, (4,))
  assert 0 < w[1] < 10
  np.testing.assert_allclose(w[[0, 2, 3]],
                             _weights(jnp.asarray(jac @ jac.T), 1.0),
                             rtol=1e-5)


def test_zero_gramian_and_alpha_zero_give_uniform():
  np.testing.assert_allclose(_weights(jnp.zeros((3, 3)), 1.0), 1 / 3, rtol=1e-7)
  np.testing.assert_array_equal(fairgrad_weights(jnp.asarray(G_BASE), 0.0),
                                0.5)
  np.testing.assert_array_equal(_weights(jnp.asarray(G_BASE), 0.0), 0.5)


@pytest.mark.parametrize("seed", range(3))
def test_permutation_equivariant(seed):
  jac = _inputs.jacobian(seed, 4, 7, 4)
  perm = np.random.default_rng(seed).permutation(4)
  gramian = jac @ jac.T
  np.testing.assert_allclose(
      _weights(jnp.asarray(gramian[perm][:, perm]), 2.0),
      np.asarray(_weights(jnp.asarray(gramian), 2.0))[perm], rtol=1e-5)
  _asserts.assert_permutation_invariant(lambda g: _weights(g, 2.0), jac, perm)


def test_jit_and_vmap():
  jacs = np.stack([_inputs.jacobian(s, 4, 6, 4) for s in range(3)])
  gramians = jnp.asarray(np.einsum("bkp,blp->bkl", jacs, jacs))
  loop = np.stack([_weights(g, 2.0) for g in gramians])
  np.testing.assert_allclose(fairgrad_weights(gramians[0], 2.0), loop[0],
                             rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(_weights)(gramians,
                                                jnp.array([2.0, 2.0, 2.0])),
                             loop, rtol=1e-5)


def test_factory_matches_function_and_keeps_state():
  method = fairgrad(alpha=2.0)
  params, state = method.init(4)
  gramians = [jnp.asarray(j @ j.T) for j in
              (_inputs.jacobian(s, 4, 6, 4) for s in range(3))]
  out = jax.jit(method.apply)(params, state, gramians[0])
  np.testing.assert_allclose(out.weights, _weights(gramians[0], 2.0),
                             rtol=1e-6)
  assert jax.tree.structure(out.state) == jax.tree.structure(state)
  _asserts.assert_no_retrace(method.apply, params, state, gramians)


@pytest.mark.parametrize("kwargs", [{"alpha": -0.1}, {"alpha": float("nan")},
                                    {"alpha": 1.0, "max_iters": 0},
                                    {"alpha": 1.0, "max_iters": 2.5},
                                    {"alpha": 1.0, "reg_eps": -1e-8}])
def test_bad_hyperparameters_raise(kwargs):
  with pytest.raises(ValueError, match="fairgrad"):
    fairgrad(**kwargs)


def test_float32_matches_float64_at_64_tasks():
  """On an ill-conditioned Gramian of 64 conflicting tasks (eigenvalues
  from 1e-3 to 11 times the mean), the float32 direction is within 1e-3 of
  the float64 one. (The former ridge floor K eps moved it by 4e-3.)"""
  jac = _inputs.conflicting_jacobian(3, 64)
  gram = jac @ jac.T
  with jax.enable_x64():
    ref = np.asarray(_weights(jnp.asarray(gram), 2.0))
  w = np.asarray(_weights(jnp.asarray(gram, jnp.float32), 2.0), np.float64)
  delta = w - ref
  assert np.sqrt(delta @ gram @ delta) <= 1e-3 * np.sqrt(ref @ gram @ ref)
