"""Mean, Sum, Constant and Random: TorchJD's baselines in gradient space.

Each is checked for the properties TorchJD asserts for it (REFERENCE 8.6):
permutation-invariant (Mean, Sum), linear under scaling (Mean, Sum,
Constant), strongly stationary (all four); Random's weights lie on the
simplex and depend only on the key.
"""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative

from mtl_jax import aggregation
from mtl_jax.aggregation import constant_weights, mean_weights, random_weights, sum_weights

G_BASE = jnp.array([[18.0, -22.0], [-22.0, 38.0]])

_mean = jax.jit(mean_weights)
_sum = jax.jit(sum_weights)


def _constant_fn(k):
  c = np.arange(1.0, k + 1.0)
  return lambda g: constant_weights(g, c)


def _random_fn(draw):
  return lambda g: random_weights(g, jnp.asarray(draw))


@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_directions_are_mean_sum_and_combination(index):
  jac = _inputs.all_jacobians()[index]
  k = jac.shape[0]
  scale = max(1.0, float(np.abs(jac).max()))
  for fn, expected in ((_mean, jac.mean(axis=0)), (_sum, jac.sum(axis=0)),
                       (_constant_fn(k), np.arange(1.0, k + 1.0) @ jac)):
    w = fn(jnp.asarray(jac @ jac.T))
    _asserts.assert_finite_shape(w, (k,))
    np.testing.assert_allclose(_asserts.direction(fn, jac), expected,
                               atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_permutation_invariant(seed):
  jac = _inputs.jacobian(seed, 5, 7, 4)
  perm = np.random.default_rng(seed).permutation(5)
  for fn in (_mean, _sum):
    _asserts.assert_permutation_invariant(fn, jac, perm)


@pytest.mark.parametrize("seed", range(3))
def test_linear_under_scaling(seed):
  jac = _inputs.jacobian(seed, 4, 6, 3)
  rng = np.random.default_rng(seed)
  for fn in (_mean, _sum, _constant_fn(4)):
    _asserts.assert_linear_under_scaling(fn, jac, rng)


@pytest.mark.parametrize("seed", range(3))
def test_strongly_stationary(seed):
  # Not stationary (J x > 0 for some x), yet J^T w could vanish only for a
  # w with negative entries: positive weights never give d = 0.
  jac = _inputs.non_stationary(seed)
  k = jac.shape[0]
  draw = np.random.default_rng(seed).normal(size=k)
  for fn in (_mean, _sum, _constant_fn(k), _random_fn(draw)):
    _asserts.assert_strongly_stationary(fn, jac)


def test_pinned_torchjd_values():
  # softmax([1.5410, -0.2934]): 1 / (1 + e^-1.8344) = 0.86229.
  np.testing.assert_allclose(random_weights(G_BASE, jnp.array([1.5410, -0.2934])),
                             [0.8623, 0.1377], atol=1e-4)
  np.testing.assert_allclose(mean_weights(G_BASE), [0.5, 0.5])
  np.testing.assert_allclose(sum_weights(G_BASE), [1.0, 1.0])
  np.testing.assert_allclose(constant_weights(G_BASE, [1.0, 2.0]), [1.0, 2.0])


@pytest.mark.parametrize("k", [1, 3, 6])
def test_random_on_the_simplex_and_reproducible(k):
  jac = _inputs.jacobian(k, k, 4, min(k, 4))
  gramian = jnp.asarray(jac @ jac.T)
  method = aggregation.get("random", seed=5)
  params, state = method.init(k)
  apply = jax.jit(method.apply)
  key = jax.random.PRNGKey(5)
  seen = []
  for _ in range(3):
    key, sub = jax.random.split(key)
    out = apply(params, state, gramian)
    _asserts.assert_simplex(out.weights, atol=1e-6)
    # The documented draw: normal(split(key)[1], (K,)), softmaxed.
    np.testing.assert_allclose(
        out.weights, jax.nn.softmax(jax.random.normal(sub, (k,))), rtol=1e-6)
    np.testing.assert_array_equal(out.state.key, key)
    seen.append(np.asarray(out.weights))
    state = out.state
  # Same key, same weights; the key moves on, so the weights change.
  _, state0 = method.init(k)
  np.testing.assert_array_equal(apply(params, state0, gramian).weights, seen[0])
  if k > 1:
    assert not np.allclose(seen[0], seen[1])
  _, other = method.init(k, key=jax.random.PRNGKey(6))
  if k > 1:
    assert not np.allclose(apply(params, other, gramian).weights, seen[0])
  _asserts.assert_no_retrace(method.apply, params, state0, [gramian] * 3)


def test_random_weights_do_not_depend_on_the_gramian():
  draw = jnp.array([0.3, -1.2, 2.0])
  jac = _inputs.jacobian(2, 3, 5, 3)
  np.testing.assert_array_equal(
      random_weights(jnp.asarray(jac @ jac.T), draw),
      random_weights(jnp.eye(3), draw))


def test_no_gradient():
  jac = _inputs.jacobian(6, 3, 4, 3)
  gramian = jnp.asarray(jac @ jac.T)
  for fn in (mean_weights, sum_weights, _constant_fn(3)):
    _asserts.assert_no_gradient(fn, gramian)
  _asserts.assert_no_gradient(
      lambda z: random_weights(gramian, z), jnp.array([0.1, 0.2, -0.3]))


@pytest.mark.parametrize("name,kwargs,fn", [
    ("mean", {}, mean_weights),
    ("sum", {}, sum_weights),
    ("constant", {"weights": (0.5, -1.0, 3.0)},
     lambda g: constant_weights(g, (0.5, -1.0, 3.0))),
])
def test_factories_match_functions(name, kwargs, fn):
  jac = _inputs.jacobian(4, 3, 5, 3)
  gramian = jnp.asarray(jac @ jac.T)
  method = aggregation.get(name, **kwargs)
  params, state = method.init(3)
  assert params == {}
  out = jax.jit(method.apply)(params, state, gramian)
  np.testing.assert_array_equal(out.weights, fn(gramian))
  assert out.head_weights is None and out.aux_loss is None
  with jax.enable_x64():
    params, state = method.init(3)
    g64 = jnp.asarray(jac @ jac.T, jnp.float64)
    assert method.apply(params, state, g64).weights.dtype == jnp.float64


def test_constant_errors():
  method = aggregation.get("constant", weights=[1.0, 2.0])
  with pytest.raises(ValueError, match="weights has 2 entries but there are "
                                       "3 tasks"):
    method.init(3)
  params, state = method.init(2)
  with pytest.raises(ValueError, match="initialised for 2 tasks"):
    method.apply(params, state, jnp.eye(3))
  with pytest.raises(ValueError, match="must be a non-empty vector"):
    aggregation.get("constant", weights=[[1.0, 2.0]])
  with pytest.raises(ValueError, match="must be a non-empty vector"):
    aggregation.get("constant", weights=[])
  with pytest.raises(ValueError, match="must be finite"):
    aggregation.get("constant", weights=[1.0, float("nan")])
  with pytest.raises(ValueError, match="needs the hyperparameter"):
    aggregation.get("constant")
  with pytest.raises(ValueError, match="weights has 2 entries but there are "
                                       "3 tasks"):
    constant_weights(jnp.eye(3), [1.0, 2.0])


def test_random_draw_of_the_wrong_shape():
  with pytest.raises(ValueError, match=r"the draw must have shape \(2,\)"):
    random_weights(G_BASE, jnp.zeros(3))
