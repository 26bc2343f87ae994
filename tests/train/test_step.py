"""The train and eval steps on one device: no retrace, bf16, model state, eval."""
import _train_fixtures as fx
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import train, weighting


def test_step_is_traced_once():
  state, _w, _tx = fx.init_state("uw")
  step = fx.make_step("uw")
  counted = jax.jit(chex.assert_max_traces(step, n=1), donate_argnums=0)
  state = jax.device_put(state)
  for i in range(3):
    state, _ = counted(state, fx.make_batch(i))
  assert int(state.step) == 3


def test_step_updates_everything_and_reports_global_metrics():
  state, _, _ = fx.init_state("uw")
  new, metrics = jax.jit(fx.make_step("uw"))(state, fx.make_batch(0))
  assert int(new.step) == 1 and int(metrics["step"]) == 1
  assert fx.max_abs_diff(state.params["method"], new.params["method"]) > 0
  assert fx.max_abs_diff(state.params["model"], new.params["model"]) > 0
  assert not np.array_equal(state.rng, new.rng)
  assert metrics["losses"].shape == metrics["weights"].shape == (fx.NUM_TASKS,)
  assert not bool(metrics["skipped"])
  # UW's weights are 0.5 exp(-s) at the pre-update log-variances (0 at init).
  np.testing.assert_allclose(metrics["weights"], 0.5, rtol=1e-6)


class _RecordingModel:
  """Wraps TinyMLP and records the dtypes it was traced with."""

  def __init__(self):
    self.seen = []
    self._apply = train.module_apply_fn(fx.TinyMLP())

  def __call__(self, variables, batch, *, train, rngs):
    self.seen.append((batch["image"].dtype,
                      variables["params"]["Dense_0"]["kernel"].dtype))
    return self._apply(variables, batch, train=train, rngs=rngs)


def _run(compute_dtype, num_steps=5):
  state, _, _ = fx.init_state("uw")
  model = _RecordingModel()
  step = jax.jit(fx.make_step("uw", compute_dtype=compute_dtype,
                              model_apply=model))
  history = []
  for i in range(num_steps):
    state, metrics = step(state, fx.make_batch(i))
    history.append(metrics)
  return state, history, model.seen


def test_bfloat16_model_keeps_losses_weights_and_params_in_float32():
  state16, hist16, seen16 = _run(jnp.bfloat16)
  state32, hist32, seen32 = _run(None)
  assert seen16[0] == (jnp.bfloat16, jnp.bfloat16)   # the model ran in bf16
  assert seen32[0] == (jnp.float32, jnp.float32)
  for m in hist16:
    for key in ("losses", "weights", "total", "grad_norm"):
      assert m[key].dtype == jnp.float32, key
  for leaf in jax.tree.leaves((state16.params, state16.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  assert state16.params["method"]["log_vars"].dtype == jnp.float32
  # Close to the float32 run, but not equal: bf16 has an 8-bit mantissa.
  losses16 = np.array([m["losses"] for m in hist16])
  losses32 = np.array([m["losses"] for m in hist32])
  np.testing.assert_allclose(losses16, losses32, rtol=5e-2)
  assert np.abs(losses16 - losses32).max() > 0
  assert fx.max_abs_diff(state16.params, state32.params) < 2e-2


class _BatchNormMLP(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
    h = nn.Dense(4)(h)
    return {name: h[:, k] for k, name in enumerate(fx.TASK_NAMES)}


def test_batch_stats_are_updated_and_averaged_across_devices():
  model = _BatchNormMLP()
  w = weighting.get("ew")
  tx = train.make_optimizer(optax.sgd(0.1), method_learning_rate=0.1)
  state = train.create_train_state(jax.random.PRNGKey(0), model,
                                   fx.make_batch(0), w, tx, fx.NUM_TASKS)
  assert set(state.model_state) == {"batch_stats"}
  step = train.pmap_step(train.make_train_step(
      train.module_apply_fn(model), fx.task_losses, w, tx, axis_name="batch"))
  batch = fx.make_batch(3)
  new, _ = step(train.replicate(state), train.shard_batch(batch))
  mean = np.asarray(new.model_state["batch_stats"]["BatchNorm_0"]["mean"])
  np.testing.assert_allclose(mean, np.broadcast_to(mean[0], mean.shape))
  # momentum 0.5 from 0: half of the average of the per-device means, which
  # here equals half the whole-batch mean.
  np.testing.assert_allclose(mean[0], 0.5 * batch["image"].mean(0), atol=1e-6)


def test_eval_step_does_not_change_the_state():
  state, w, _ = fx.init_state("dwa")
  eval_step = jax.jit(train.make_eval_step(
      train.module_apply_fn(fx.TinyMLP()), fx.task_losses, weighting=w))
  metrics, outputs = eval_step(state, fx.make_batch(0))
  assert set(outputs) == set(fx.TASK_NAMES)
  assert metrics["losses"].shape == (fx.NUM_TASKS,)
  np.testing.assert_allclose(metrics["weights"], 1.0)   # DWA's first epoch
  direct = fx.task_losses(fx.TinyMLP().apply({"params": state.params["model"]},
                                             fx.make_batch(0)["image"],
                                             train=False), fx.make_batch(0))
  np.testing.assert_allclose(metrics["losses"], direct, rtol=1e-6)


def test_eval_step_under_pmap_averages_the_losses():
  state, _, _ = fx.init_state("ew")
  apply = train.module_apply_fn(fx.TinyMLP())
  single = jax.jit(train.make_eval_step(apply, fx.task_losses))
  pmapped = jax.pmap(train.make_eval_step(apply, fx.task_losses,
                                          axis_name="batch"), axis_name="batch")
  batch = fx.make_batch(1)
  ref, _ = single(state, batch)
  got, outputs = pmapped(train.replicate(state), train.shard_batch(batch))
  np.testing.assert_allclose(np.asarray(got["losses"])[0], ref["losses"],
                             rtol=1e-5)
  assert outputs["seg"].shape == (4, fx.BATCH // 4)


def test_task_loss_fn_must_return_a_vector():
  state, w, tx = fx.init_state("ew")
  step = train.make_train_step(train.module_apply_fn(fx.TinyMLP()),
                               lambda o, b: fx.task_losses(o, b)[None], w, tx)
  with pytest.raises(ValueError, match=r"\(num_tasks,\) vector"):
    jax.jit(step)(state, fx.make_batch(0))


def test_custom_gradient_fn_is_used():
  """The seam: a gradient_fn replaces 'grad of the weighted total'."""
  state, w, _tx = fx.init_state("ew")
  default = train.weighted_sum_gradients(w)
  calls = []

  def zero_model_grads(losses_fn, params, method_state, axis_name,
                       perturbations):
    calls.append((axis_name, perturbations))
    agg = default(losses_fn, params, method_state, axis_name)
    return agg._replace(grads=jax.tree.map(jnp.zeros_like, agg.grads))

  step = train.make_train_step(train.module_apply_fn(fx.TinyMLP()),
                               fx.task_losses, w, optax.sgd(0.1),
                               gradient_fn=zero_model_grads)
  state = state.replace(opt_state=optax.sgd(0.1).init(state.params))
  new, metrics = jax.jit(step)(state, fx.make_batch(0))
  assert calls == [(None, None)]
  assert fx.max_abs_diff(state.params, new.params) == 0.0
  assert float(metrics["grad_norm"]) == 0.0
