"""The partitioned optimiser: own learning rate, no decay on the weighting."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import train

PARAMS = {"model": {"w": jnp.array([1.0, -2.0])},
          "method": {"log_vars": jnp.array([0.5, -0.5])}}


def _first_update(tx, grads):
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  return updates


def test_weighting_gets_its_own_learning_rate():
  tx = train.make_optimizer(0.1, method_learning_rate=0.01)
  grads = {"model": {"w": jnp.array([3.0, -1.0])},
           "method": {"log_vars": jnp.array([2.0, -4.0])}}
  updates = _first_update(tx, grads)
  # Adam's first step is -lr * sign(g) (up to eps).
  np.testing.assert_allclose(updates["model"]["w"], [-0.1, 0.1], rtol=1e-5)
  np.testing.assert_allclose(updates["method"]["log_vars"], [-0.01, 0.01],
                             rtol=1e-5)


def test_weight_decay_reaches_the_model_only_by_default():
  tx = train.make_optimizer(0.1, weight_decay=0.5, method_learning_rate=0.01)
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  updates = _first_update(tx, zeros)
  np.testing.assert_allclose(updates["model"]["w"], -0.1 * 0.5 * PARAMS["model"]["w"],
                             rtol=1e-6)
  np.testing.assert_array_equal(updates["method"]["log_vars"], 0.0)


def test_method_weight_decay_is_configurable():
  tx = train.make_optimizer(optax.sgd(0.1), method_learning_rate=0.01,
                            method_weight_decay=0.2)
  updates = _first_update(tx, jax.tree.map(jnp.zeros_like, PARAMS))
  np.testing.assert_allclose(updates["method"]["log_vars"],
                             -0.01 * 0.2 * PARAMS["method"]["log_vars"],
                             rtol=1e-6)
  np.testing.assert_array_equal(updates["model"]["w"], 0.0)


def test_model_transformation_and_schedules_are_accepted():
  schedule = optax.linear_schedule(1.0, 0.0, 10)
  tx = train.make_optimizer(optax.sgd(0.5), method_learning_rate=schedule)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  updates = _first_update(tx, grads)
  np.testing.assert_allclose(updates["model"]["w"], -0.5)
  np.testing.assert_allclose(updates["method"]["log_vars"], -1.0, rtol=1e-5)


def test_empty_weighting_params_are_fine():
  tx = train.make_optimizer(optax.sgd(0.5), method_learning_rate=0.1)
  params = {"model": PARAMS["model"], "method": {}}
  updates, _ = tx.update(params, tx.init(params), params)
  assert updates["method"] == {}


def test_bad_trees_and_arguments_raise():
  tx = train.make_optimizer(0.1, method_learning_rate=0.01)
  with pytest.raises(ValueError, match="top-level keys"):
    tx.init({"params": PARAMS["model"]})
  with pytest.raises(ValueError, match="weight_decay"):
    train.make_optimizer(optax.sgd(0.1), weight_decay=0.1,
                         method_learning_rate=0.01)
  with pytest.raises(ValueError, match=">= 0"):
    train.make_optimizer(0.1, method_learning_rate=0.01,
                         method_weight_decay=-1.0)
