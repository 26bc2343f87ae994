"""ConFIG: the Gramian form against the Jacobian form, TorchJD's properties."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative

from mtl_jax import aggregation
from mtl_jax.aggregation.config import config_weights

_weights = jax.jit(config_weights)


def _config_on_jacobian(jac, pref=None):
  """ConFIG as the paper writes it, on the explicit Jacobian (numpy)."""
  norms = np.linalg.norm(jac, axis=1, keepdims=True)
  units = np.where(norms > 0, jac / np.where(norms > 0, norms, 1.0), 0.0)
  pref = np.ones(jac.shape[0]) if pref is None else np.asarray(pref)
  b = np.linalg.pinv(units, rcond=1e-10) @ pref  # rank cut-off above rounding
  if np.linalg.norm(b) < 1e-12:  # U x = p has no solution but 0
    return np.zeros(jac.shape[1])
  u = b / np.linalg.norm(b)
  return np.sum(jac @ u) * u


@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_gramian_form_equals_jacobian_form(index):
  jac = _inputs.all_jacobians(dtype=np.float64)[index]
  with jax.enable_x64():
    d = _asserts.direction(_weights, jac)
  expected = _config_on_jacobian(jac)
  np.testing.assert_allclose(d, expected,
                             atol=1e-8 * max(1.0, np.abs(expected).max()))


def test_preference_vector():
  jac = _inputs.jacobian(5, 3, 6, 3, dtype=np.float64)
  pref = np.array([1.0, 2.0, 0.5])
  with jax.enable_x64():
    d = _asserts.direction(lambda g: _weights(g, pref), jac)
  np.testing.assert_allclose(d, _config_on_jacobian(jac, pref), atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_permutation_invariant(seed):
  jac = _inputs.jacobian(seed, 5, 8, 5)
  perm = np.random.default_rng(seed).permutation(5)
  _asserts.assert_permutation_invariant(_weights, jac, perm, atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_linear_under_scaling(seed):
  jac = _inputs.jacobian(seed, 4, 7, 4)
  _asserts.assert_linear_under_scaling(_weights, jac,
                                       np.random.default_rng(seed), atol=1e-4,
                                       rtol=1e-3)


def test_zero_row_is_ignored():
  jac = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
  w = _weights(jnp.asarray(jac @ jac.T))
  _asserts.assert_finite_shape(w, (2,))
  np.testing.assert_allclose(w @ jac, jac[0], rtol=1e-6)


def test_factory_matches_function():
  g = jnp.array([[18.0, -22.0], [-22.0, 38.0]])
  method = aggregation.get("config")
  out = method.apply(*method.init(2), g)
  np.testing.assert_allclose(out.weights, config_weights(g), atol=1e-7)
