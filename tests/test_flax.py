"""Flax modules holding the weighting parameters: UW and IMTL-L."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax.flax import IMTLLWeighting, UncertaintyWeighting
from mtl_jax.weighting import imtl_l_loss, uncertainty_loss, uw_o_weights

LOSSES = jnp.asarray([0.2, 1.0, 5.0])


@pytest.mark.parametrize("init_log_var", [None, -0.5])
def test_uncertainty_weighting_params(init_log_var):
  kwargs = {} if init_log_var is None else {"init_log_var": init_log_var}
  module = UncertaintyWeighting(num_tasks=3, **kwargs)
  variables = module.init(jax.random.PRNGKey(0), LOSSES)
  assert jax.tree.structure(variables) == jax.tree.structure(
      {"params": {"log_vars": 0}})
  log_vars = variables["params"]["log_vars"]
  assert log_vars.shape == (3,) and log_vars.dtype == jnp.float32
  expected = 0.0 if init_log_var is None else init_log_var
  np.testing.assert_array_equal(log_vars, np.full(3, expected))


@pytest.mark.parametrize("task_types", [
    None, ("classification", "regression", "classification")])
def test_uncertainty_weighting_matches_the_function(task_types):
  module = UncertaintyWeighting(num_tasks=3, task_types=task_types)
  log_vars = jnp.asarray([-0.4, 0.1, 0.9])
  total, weights = module.apply({"params": {"log_vars": log_vars}}, LOSSES)
  ref_total, ref_weights = uncertainty_loss(LOSSES, log_vars, task_types)
  np.testing.assert_allclose(total, ref_total, rtol=1e-6)
  np.testing.assert_allclose(weights, ref_weights, rtol=1e-6)
  # The weights are the gradient in the losses, and carry none themselves.
  grad = jax.grad(lambda l: module.apply(
      {"params": {"log_vars": log_vars}}, l)[0])(LOSSES)
  np.testing.assert_allclose(grad, weights, rtol=1e-6)


def test_uncertainty_weighting_rejects_unknown_task_type():
  module = UncertaintyWeighting(num_tasks=2, task_types=("regression", "seg"))
  with pytest.raises(ValueError, match="unknown task type"):
    module.init(jax.random.PRNGKey(0), LOSSES[:2])


@pytest.mark.parametrize("init_log_scale", [None, 0.3])
def test_imtl_l_weighting_params_and_values(init_log_scale):
  kwargs = {} if init_log_scale is None else {"init_log_scale": init_log_scale}
  module = IMTLLWeighting(num_tasks=3, **kwargs)
  variables = module.init(jax.random.PRNGKey(0), LOSSES)
  log_scales = variables["params"]["log_scales"]
  expected = 0.0 if init_log_scale is None else init_log_scale
  np.testing.assert_allclose(log_scales, np.full(3, expected), rtol=1e-7)
  total, weights = module.apply(variables, LOSSES)
  ref_total, ref_weights = imtl_l_loss(LOSSES, log_scales)
  np.testing.assert_allclose(total, ref_total, rtol=1e-6)
  np.testing.assert_allclose(weights, ref_weights, rtol=1e-6)


def _train_weighting(module, steps, learning_rate):
  """Adam on the module's parameters with the task losses held fixed."""
  params = module.init(jax.random.PRNGKey(0), LOSSES)["params"]
  opt = optax.adam(optax.exponential_decay(learning_rate, 100, 0.5))

  def step(carry, _):
    params, opt_state = carry
    grads = jax.grad(lambda p: module.apply({"params": p}, LOSSES)[0])(params)
    updates, opt_state = opt.update(grads, opt_state)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=steps))(
      (params, opt.init(params)))
  return params


def test_uncertainty_weighting_trains_to_log_loss():
  params = _train_weighting(UncertaintyWeighting(num_tasks=3), 800, 0.1)
  # Regression optimum s = log L: weights 1 / (2 L), UW-O's over 2.
  np.testing.assert_allclose(params["log_vars"], np.log(LOSSES), atol=1e-3)
  _, weights = UncertaintyWeighting(num_tasks=3).apply({"params": params},
                                                       LOSSES)
  np.testing.assert_allclose(weights, 0.5 * uw_o_weights(LOSSES), rtol=2e-3)


def test_imtl_l_weighting_trains_to_inverse_loss():
  params = _train_weighting(IMTLLWeighting(num_tasks=3), 800, 0.1)
  # Optimum e^s L = 1: s = -log L, weights 1 / L.
  np.testing.assert_allclose(params["log_scales"], -np.log(LOSSES), atol=1e-3)


class _TwoTaskNet(nn.Module):
  """A shared layer, two heads and the weighting inside the model."""

  @nn.compact
  def __call__(self, x, y):
    h = nn.tanh(nn.Dense(8)(x))
    pred_a, pred_b = nn.Dense(1)(h)[:, 0], nn.Dense(1)(h)[:, 0]
    losses = jnp.stack([jnp.mean((pred_a - y[:, 0]) ** 2),
                        jnp.mean((pred_b - y[:, 1]) ** 2)])
    total, weights = UncertaintyWeighting(num_tasks=2, name="weighting")(losses)
    return total, (losses, weights)


def test_trains_inside_a_model_with_optax():
  x = jax.random.normal(jax.random.PRNGKey(1), (32, 4))
  y = jnp.stack([x[:, 0], 100.0 * x[:, 1]], axis=1)  # very different scales
  model = _TwoTaskNet()
  params = model.init(jax.random.PRNGKey(2), x, y)["params"]
  assert set(params["weighting"]) == {"log_vars"}
  opt = optax.adam(1e-2)
  opt_state = opt.init(params)

  @jax.jit
  def train_step(params, opt_state):
    (total, aux), grads = jax.value_and_grad(
        lambda p: model.apply({"params": p}, x, y), has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, total, aux

  first = None
  for _ in range(60):
    params, opt_state, total, (_losses, weights) = train_step(params, opt_state)
    first = total if first is None else first
  assert np.isfinite(total) and total < first
  log_vars = params["weighting"]["log_vars"]
  # The large-scale task's log-variance grew the most: it gets the smaller
  # weight, as uncertainty weighting intends.
  assert log_vars[1] > log_vars[0] and weights[1] < weights[0]
