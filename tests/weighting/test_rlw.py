"""RLW: a fresh softmax of a standard normal draw at every step."""
import _asserts
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import rlw_weights


@pytest.mark.parametrize("num_tasks", [1, 2, 5])
def test_weights_on_simplex(num_tasks):
  keys = jax.random.split(jax.random.PRNGKey(0), 64)
  w = jax.jit(jax.vmap(lambda k: rlw_weights(k, num_tasks)))(keys)
  _asserts.assert_finite_shape(w, (64, num_tasks))
  _asserts.assert_simplex(w, atol=1e-6)


def test_is_softmax_of_a_standard_normal_draw():
  key = jax.random.PRNGKey(11)
  np.testing.assert_allclose(rlw_weights(key, 4),
                             jax.nn.softmax(jax.random.normal(key, (4,))),
                             rtol=1e-6)


def test_draws_are_symmetric_across_tasks():
  # E[w_k] = 1/K by symmetry; 4000 draws put the mean within ~0.01 of it.
  keys = jax.random.split(jax.random.PRNGKey(1), 4000)
  mean = jax.jit(jax.vmap(lambda k: rlw_weights(k, 3)))(keys).mean(axis=0)
  np.testing.assert_allclose(mean, 1.0 / 3.0, atol=0.02)


def test_same_key_same_weights_other_key_other_weights():
  key = jax.random.PRNGKey(42)
  np.testing.assert_array_equal(rlw_weights(key, 3), rlw_weights(key, 3))
  assert not np.allclose(rlw_weights(key, 3),
                         rlw_weights(jax.random.PRNGKey(43), 3))


def test_apply_is_pure_and_the_state_advances():
  method = weighting.rlw(seed=0)
  params, state = method.init(3)
  losses = jnp.asarray([1.0, 2.0, 3.0])
  first = method.apply(params, state, losses)
  again = method.apply(params, state, losses)
  np.testing.assert_array_equal(first.weights, again.weights)  # same state
  second = method.apply(params, first.state, losses)
  assert not np.allclose(first.weights, second.weights)  # the key moved on
  assert not np.array_equal(first.state.key, state.key)
  _asserts.assert_simplex(second.weights)


def test_seed_and_init_key():
  losses = jnp.asarray([1.0, 2.0, 3.0])
  def weights(method, **init_kwargs):
    params, state = method.init(3, **init_kwargs)
    return method.apply(params, state, losses).weights
  np.testing.assert_array_equal(weights(weighting.rlw(seed=5)),
                                weights(weighting.rlw(seed=5)))
  assert not np.allclose(weights(weighting.rlw(seed=5)),
                         weights(weighting.rlw(seed=6)))
  key = jax.random.PRNGKey(9)
  np.testing.assert_array_equal(weights(weighting.rlw(seed=5), key=key),
                                weights(weighting.rlw(seed=6), key=key))


def test_jit_draws_the_same_weights_as_eager():
  method = weighting.rlw(seed=2)
  params, state = method.init(4)
  losses = jnp.asarray([1.0, 2.0, 3.0, 4.0])
  eager = method.apply(params, state, losses)
  jitted = jax.jit(method.apply)(params, state, losses)
  np.testing.assert_allclose(jitted.weights, eager.weights, rtol=1e-6)
  np.testing.assert_array_equal(jitted.state.key, eager.state.key)
