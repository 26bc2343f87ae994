"""IMTL-G: equal projections on the unit gradients, any rank."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative

from mtl_jax import aggregation
from mtl_jax.aggregation.imtl_g import imtl_g_weights

_weights = jax.jit(imtl_g_weights)


@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_finite_and_sums_to_one_or_zero(index):
  jac = _inputs.all_jacobians()[index]
  w = np.asarray(_weights(jnp.asarray(jac @ jac.T)))
  _asserts.assert_finite_shape(w, (jac.shape[0],))
  assert abs(w.sum() - 1.0) < 1e-4 or np.all(w == 0.0)


@pytest.mark.parametrize("shape", [(2, 5, 2), (4, 9, 4), (9, 11, 9)])
def test_equal_projections_on_unit_gradients_for_full_rank(shape):
  jac = _inputs.jacobian(1, *shape, dtype=np.float64)
  with jax.enable_x64():
    d = _asserts.direction(_weights, jac)
  projections = jac @ d / np.linalg.norm(jac, axis=1)
  np.testing.assert_allclose(projections, projections[0], rtol=1e-8)
  assert projections[0] > 0


@pytest.mark.parametrize("seed", range(3))
def test_permutation_invariant(seed):
  jac = _inputs.jacobian(seed, 6, 8, 6)
  perm = np.random.default_rng(seed).permutation(6)
  _asserts.assert_permutation_invariant(_weights, jac, perm, atol=1e-4)


def test_zero_gramian_gives_zero_weights():
  np.testing.assert_array_equal(_weights(jnp.zeros((3, 3))), 0.0)


def test_factory_matches_function():
  g = jnp.array([[18.0, -22.0], [-22.0, 38.0]])
  method = aggregation.get("imtl_g")
  out = method.apply(*method.init(2), g)
  np.testing.assert_allclose(out.weights, imtl_g_weights(g), atol=1e-7)
