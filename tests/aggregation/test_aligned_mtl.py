"""Aligned-MTL: aligned principal components, the three scale modes."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative

from mtl_jax import aggregation
from mtl_jax.aggregation.aligned_mtl import aligned_mtl_weights

_weights = jax.jit(aligned_mtl_weights, static_argnames="scale_mode")


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_finite(index, scale_mode):
  jac = _inputs.all_jacobians()[index]
  w = _weights(jnp.asarray(jac @ jac.T), scale_mode=scale_mode)
  _asserts.assert_finite_shape(w, (jac.shape[0],))


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
def test_aligned_rows_are_orthogonal_with_equal_norms(scale_mode):
  # B J has orthogonal rows of norm sqrt(sigma): B G B = sigma I.
  jac = _inputs.jacobian(2, 4, 9, 4, dtype=np.float64)
  g = jac @ jac.T
  with jax.enable_x64():
    # The columns of B are the weights for the unit preferences e_k / (1/K).
    b = np.stack([np.asarray(_weights(jnp.asarray(g), np.eye(4)[k],
                                      scale_mode=scale_mode))
                  for k in range(4)], axis=1)
  eig = np.linalg.eigvalsh(g)
  sigma = {"min": eig.min(), "median": np.median(eig), "rmse": eig.mean()}
  np.testing.assert_allclose(b @ g @ b, sigma[scale_mode] * np.eye(4),
                             atol=1e-8 * eig.max())


@pytest.mark.parametrize("seed", range(3))
def test_permutation_invariant(seed):
  jac = _inputs.jacobian(seed, 5, 8, 5)
  perm = np.random.default_rng(seed).permutation(5)
  _asserts.assert_permutation_invariant(_weights, jac, perm, atol=1e-4)


def test_ones_preference_is_libmtl_convention_k_times():
  g = jnp.array([[18.0, -22.0], [-22.0, 38.0]])
  np.testing.assert_allclose(_weights(g, jnp.ones(2)), 2 * _weights(g),
                             rtol=1e-6)


def test_zero_gramian_keeps_identity():
  np.testing.assert_allclose(_weights(jnp.zeros((3, 3))), np.full(3, 1 / 3))


def test_bad_hyperparameters():
  with pytest.raises(ValueError, match="scale_mode"):
    aggregation.get("aligned_mtl", scale_mode="max")
  with pytest.raises(ValueError, match="3 entries but there are 2 tasks"):
    aggregation.get("aligned_mtl", pref_vector=(1.0, 1.0, 1.0)).init(2)
  with pytest.raises(ValueError, match=">= 0"):
    aggregation.get("aligned_mtl", pref_vector=(1.0, -1.0))


def test_factory_matches_function():
  g = jnp.array([[18.0, -22.0], [-22.0, 38.0]])
  method = aggregation.get("aligned_mtl", scale_mode="median")
  out = method.apply(*method.init(2), g)
  np.testing.assert_allclose(out.weights, _weights(g, scale_mode="median"),
                             rtol=1e-6)
