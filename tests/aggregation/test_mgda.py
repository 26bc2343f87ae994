"""MGDA: Frank-Wolfe on the simplex, TorchJD's properties and KKT conditions."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from _slow import representative

from mtl_jax import aggregation
from mtl_jax.aggregation import mgda_weights

_weights = jax.jit(mgda_weights)
# A tight solve for the optimality checks.
_tight = jax.jit(lambda g: mgda_weights(g, epsilon=0.0, max_iters=1000))


@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_weights_on_simplex_and_non_conflicting(index):
  jac = _inputs.all_jacobians()[index]
  w = _weights(jnp.asarray(jac @ jac.T))
  _asserts.assert_finite_shape(w, (jac.shape[0],))
  _asserts.assert_simplex(w, atol=1e-5)
  _asserts.assert_non_conflicting(jac, _asserts.direction(_tight, jac),
                                  atol=1e-3)


def _min_norm_reference(jac):
  """min ||J^T w|| over the simplex by NNLS: the sum-to-one constraint as a
  heavily weighted extra row."""
  big = 1e4 * max(1.0, np.abs(jac).max())
  a = np.vstack([jac.T, big * np.ones((1, jac.shape[0]))])
  b = np.concatenate([np.zeros(jac.shape[1]), [big]])
  w, _ = scipy.optimize.nnls(a, b)
  return w / w.sum()


@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_reaches_the_minimum_norm(index):
  jac = _inputs.all_jacobians()[index].astype(np.float64)
  with jax.enable_x64():
    w = np.asarray(_weights(jnp.asarray(jac @ jac.T)))
  ref = _min_norm_reference(jac)
  scale = max(1.0, np.abs(jac).max()) ** 2
  assert w @ (jac @ jac.T) @ w <= ref @ (jac @ jac.T) @ ref + 1e-6 * scale
  np.testing.assert_allclose(w @ jac, ref @ jac, atol=1e-3 * np.sqrt(scale))


@pytest.mark.parametrize("index", [0, 1, 7])  # full row rank
def test_kkt_conditions(index):
  # min_w w^T G w on the simplex: (G w)_i >= w^T G w for all i, with equality
  # where w_i > 0.
  jac = _inputs.all_jacobians()[index].astype(np.float64)
  assert np.linalg.matrix_rank(jac) == jac.shape[0]
  with jax.enable_x64():
    g = jac @ jac.T
    w = np.asarray(_weights(jnp.asarray(g)))
  gw, wgw = g @ w, w @ g @ w
  scale = max(1.0, np.abs(g).max())
  assert np.all(gw >= wgw - 1e-6 * scale)
  np.testing.assert_allclose(gw[w > 1e-6], wgw, atol=1e-6 * scale)


@pytest.mark.parametrize("seed", range(3))
def test_permutation_invariant(seed):
  jac = _inputs.jacobian(seed, 5, 7, 5)
  perm = np.random.default_rng(seed).permutation(5)
  _asserts.assert_permutation_invariant(_tight, jac, perm, atol=1e-4,
                                        rtol=1e-3)


def test_two_opposite_gradients_give_zero_direction():
  jac = np.array([[1.0, 2.0], [-1.0, -2.0]], np.float32)
  np.testing.assert_allclose(_asserts.direction(_weights, jac), 0.0, atol=1e-6)


def test_float64_and_jit_agree():
  jac = _inputs.jacobian(3, 4, 6, 4, dtype=np.float64)
  with jax.enable_x64():
    g = jnp.asarray(jac @ jac.T)
    w64 = mgda_weights(g)
    assert w64.dtype == jnp.float64
    np.testing.assert_allclose(_weights(g), w64, atol=1e-12)
  np.testing.assert_allclose(_weights(jnp.asarray(g, jnp.float32)), w64,
                             atol=1e-5)


def test_factory_matches_function_and_keeps_state():
  g = jnp.array([[18.0, -22.0], [-22.0, 38.0]])
  method = aggregation.get("mgda")
  params, state = method.init(2)
  out = jax.jit(method.apply)(params, state, g)
  np.testing.assert_allclose(out.weights, mgda_weights(g), atol=1e-7)
  assert jax.tree.structure(out.state) == jax.tree.structure(state)
