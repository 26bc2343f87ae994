"""Nash-MTL: G alpha = 1/alpha, the clipping, the warm start and the state."""
import itertools

import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.aggregation import _barrier
from mtl_jax.aggregation.fairgrad import fairgrad_weights
from mtl_jax.aggregation.nash_mtl import NashMTLState, nash_mtl, nash_mtl_weights

# max_norm traced: one compile per Gramian shape and dtype (inf: the
# unclipped alpha, as max_norm=None gives).
_weights = jax.jit(lambda g, max_norm=1.0: nash_mtl_weights(
    g, max_norm=max_norm))


def _alpha(gramian):
  return _weights(gramian, np.inf)


_steps = jax.jit(lambda g, warm, n: nash_mtl_weights(
    g, max_norm=None, optim_niter=n, warm_start=warm), static_argnums=2)
# The same Newton budget as Nash-MTL's default.
_fairgrad = jax.jit(lambda g: fairgrad_weights(g, 1.0, max_iters=20))

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)
G_BASE = J_BASE @ J_BASE.T

# One factory per configuration, so that the tests share its compiled apply.
_EVERY_3 = nash_mtl(update_weights_every=3)
_apply_every_3 = jax.jit(_EVERY_3.apply)
_ONE_ITER = nash_mtl(optim_niter=1, max_norm=None)
_apply_one_iter = jax.jit(_ONE_ITER.apply)


def _gramians(num, num_tasks=4, seed=0):
  return [jnp.asarray(j @ j.T) for j in
          (_inputs.jacobian(seed + s, num_tasks, 6, num_tasks)
           for s in range(num))]


def test_pinned_torchjd():
  # TorchJD's NashMTL(n_tasks=2) on J_base; W is FairGrad's pinned weights
  # [0.5915, 0.4071] over ||J^T alpha|| = sqrt(K) = sqrt(2).
  w = np.asarray(_weights(jnp.asarray(G_BASE)))
  np.testing.assert_allclose(w @ J_BASE, [0.0542, 0.7061, 0.7061], atol=1e-4)
  np.testing.assert_allclose(w, np.array([0.5915, 0.4071]) / np.sqrt(2),
                             atol=1e-4)
  np.testing.assert_allclose(_alpha(jnp.asarray(G_BASE)), [0.5915, 0.4071],
                             atol=1e-4)


@pytest.mark.parametrize("seed,k,p", [(1, 4, 4), (2, 4, 9)])
def test_solves_the_equation_and_clips(seed, k, p):
  jac = _inputs.jacobian(seed, k, p, k, dtype=np.float64)
  jac *= np.logspace(-1, 1, k)[:, None]          # unequal gradient norms
  gramian = jac @ jac.T
  with jax.enable_x64():
    alpha = _alpha(jnp.asarray(gramian))
    assert alpha.dtype == jnp.float64
    assert _barrier.residual(jnp.asarray(gramian), 1.0, alpha) < 1e-6
    alpha32 = jnp.asarray(_alpha(jnp.asarray(gramian, jnp.float32)),
                          jnp.float64)
    assert _barrier.residual(jnp.asarray(gramian), 1.0, alpha32) < 1e-4
  alpha = np.asarray(alpha)
  # ||J^T alpha||^2 = alpha^T (1 / alpha) = K, then the clipping.
  np.testing.assert_allclose(np.linalg.norm(alpha @ jac), np.sqrt(k),
                             rtol=1e-6)
  for max_norm in (1.0, 2.5):
    w = np.asarray(_weights(jnp.asarray(gramian, jnp.float32), max_norm),
                   np.float64)
    np.testing.assert_allclose(
        w, alpha * min(1.0, max_norm / np.sqrt(k)), rtol=1e-4)


def _four_tasks():
  """Full rank, and the 4 x 3 Jacobians of ranks 1 to 3 of _inputs."""
  return [_inputs.jacobian(11, 4, 6, 4)] + _inputs.all_jacobians()[3:6]


@pytest.mark.parametrize("index", range(4))
def test_same_direction_as_fairgrad_alpha_1(index):
  # Before its clipping Nash-MTL is FairGrad with alpha = 1 (the same
  # equation and solver); after it, the same direction up to scale.
  # In float64: where no solution exists (rank-deficient) the float32
  # weights are set by rounding, which differs from program to program.
  jac = _four_tasks()[index].astype(np.float64)
  with jax.enable_x64():
    gramian = jnp.asarray(jac @ jac.T)
    fair = np.asarray(_fairgrad(gramian))
    np.testing.assert_allclose(_alpha(gramian), fair, rtol=1e-6)
    w = np.asarray(_weights(gramian))
  _asserts.assert_finite_shape(w, (4,))
  scale = w[0] / fair[0]
  assert 0 < scale <= 1 + 1e-6
  np.testing.assert_allclose(w, scale * fair, rtol=1e-6)


def test_degenerate_inputs():
  # Zero Gramian: 1/K, nothing to clip. Two pairs of opposite gradients:
  # finite weights and d = 0.
  np.testing.assert_allclose(_weights(jnp.zeros((4, 4))), 0.25, rtol=1e-7)
  jac = np.array([[1.0, 2.0], [-1.0, -2.0], [3.0, -1.0], [-3.0, 1.0]],
                 np.float32)
  for x64 in (False, True):
    with jax.enable_x64(x64):
      dtype = jnp.float64 if x64 else jnp.float32
      w = _weights(jnp.asarray(jac @ jac.T, dtype))
      _asserts.assert_finite_shape(w, (4,))
      d = _asserts.direction(_weights, jnp.asarray(jac, dtype))
      np.testing.assert_allclose(d, 0.0, atol=1e-6 if x64 else 1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_permutation_equivariant(seed):
  jac = _inputs.jacobian(seed, 4, 7, 4)
  perm = np.random.default_rng(seed).permutation(4)
  gramian = jac @ jac.T
  np.testing.assert_allclose(_weights(jnp.asarray(gramian[perm][:, perm])),
                             np.asarray(_weights(jnp.asarray(gramian)))[perm],
                             rtol=1e-5)
  _asserts.assert_permutation_invariant(_weights, jac, perm)


@pytest.mark.slow
def test_warm_start():
  gramian = _gramians(1, seed=7)[0]
  converged = np.asarray(_alpha(gramian))
  # From the solution the steps stay there.
  np.testing.assert_allclose(_steps(gramian, jnp.asarray(converged), 6),
                             converged, rtol=1e-5)
  # A warm start that is not finite and positive (zeros: the initial state)
  # is a cold start; one far off, with a higher objective than the cold
  # start, is dropped for it.
  cold = _steps(gramian, None, 6)
  np.testing.assert_array_equal(_steps(gramian, jnp.zeros(4), 6), cold)
  np.testing.assert_array_equal(_steps(gramian, jnp.full((4,), 1e6), 6), cold)
  # With one Newton step per call each call continues from the last, so
  # after n calls the state is the solve with n steps; the residual falls
  # from call to call (quadratically at the end) to float32's noise.
  params, state = _ONE_ITER.init(4)
  residuals = []
  for _ in range(6):
    out = _apply_one_iter(params, state, gramian)
    state = out.state
    np.testing.assert_array_equal(out.weights, state.alpha)
    residuals.append(float(_barrier.residual(gramian, 1.0, state.alpha)))
  np.testing.assert_allclose(state.alpha, cold, rtol=1e-5)
  assert residuals[0] > 1e-1
  assert all(b < a for a, b in itertools.pairwise(residuals))
  assert residuals[-1] < 1e-5


def test_update_weights_every_reuses_alpha():
  # Calls 0, 3, 6 solve; in between the last alpha is only rescaled to
  # ||J^T w|| <= 1 for the current Gramian.
  gramians = _gramians(7)
  params, state = _EVERY_3.init(4)
  np.testing.assert_array_equal(state.alpha, 0.0)
  solved = None
  for call, gramian in enumerate(gramians):
    out = _apply_every_3(params, state, gramian)
    if call % 3 == 0:
      solved = np.asarray(_alpha(gramian), np.float64)
      np.testing.assert_allclose(out.state.alpha, solved, rtol=1e-5)
    else:
      np.testing.assert_array_equal(out.state.alpha, state.alpha)
    norm = np.sqrt(solved @ np.asarray(gramian, np.float64) @ solved)
    np.testing.assert_allclose(out.weights, solved * min(1.0, 1.0 / norm),
                               rtol=1e-5)
    assert int(out.state.count) == (call + 1) % 3
    state = out.state


def test_factory_matches_function_and_state_is_stable():
  gramians = _gramians(4, seed=3)
  params, state = _EVERY_3.init(4)
  assert isinstance(state, NashMTLState)
  assert state.alpha.shape == (4,) and state.alpha.dtype == jnp.float32
  assert state.count.shape == () and state.count.dtype == jnp.int32
  out = _apply_every_3(params, state, gramians[0])
  np.testing.assert_allclose(out.weights, _weights(gramians[0]), rtol=1e-6)
  assert jax.tree.structure(out.state) == jax.tree.structure(state)
  for new, old in zip(jax.tree.leaves(out.state), jax.tree.leaves(state)):
    assert new.shape == old.shape and new.dtype == old.dtype
  _asserts.assert_no_retrace(_EVERY_3.apply, params, state, gramians)
  # float64 Gramians under x64: the state follows the default dtype.
  with jax.enable_x64():
    params, state = _EVERY_3.init(4)
    assert state.alpha.dtype == jnp.float64
    gramian = jnp.asarray(gramians[0], jnp.float64)
    out = _apply_every_3(params, state, gramian)
    assert out.weights.dtype == out.state.alpha.dtype == jnp.float64
    np.testing.assert_allclose(out.weights, _weights(gramian), rtol=1e-12)


def test_jit_equals_no_jit_and_no_gradient():
  gramian = _gramians(1, seed=5)[0]
  np.testing.assert_allclose(nash_mtl_weights(gramian), _weights(gramian),
                             rtol=1e-6)
  _asserts.assert_no_gradient(nash_mtl_weights, gramian)


@pytest.mark.parametrize("kwargs", [{"max_norm": 0.0}, {"max_norm": -1.0},
                                    {"optim_niter": 0},
                                    {"optim_niter": 2.0}])
def test_bad_hyperparameters_raise(kwargs):
  with pytest.raises(ValueError, match="nash_mtl"):
    nash_mtl(**kwargs)


@pytest.mark.parametrize("every", [0, -1, 1.5])
def test_bad_update_weights_every_raises(every):
  with pytest.raises(ValueError, match="update_weights_every"):
    nash_mtl(update_weights_every=every)
