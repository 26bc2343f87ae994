"""The non-finite guard: skip the update, count, warn, stop; never checkpoint NaN."""
import _train_fixtures as fx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import train


def _nan_batch(seed=0, task=1):
  batch = fx.make_batch(seed)
  batch["y"][:, task] = np.nan
  return batch


def _assert_unchanged(old, new):
  for field in ("params", "opt_state", "model_state", "method_state"):
    assert fx.max_abs_diff(getattr(old, field), getattr(new, field)) == 0.0, field


@pytest.mark.parametrize("name", ["uw", "dwa", "gls"])
def test_nan_loss_skips_the_update_and_names_the_task(name):
  state, _, _ = fx.init_state(name)
  step = fx.jitted_step(name, donate=False)
  state, _ = step(state, fx.make_batch(0))
  skipped, metrics = step(state, _nan_batch())
  _assert_unchanged(state, skipped)
  assert int(skipped.step) == int(state.step) + 1
  assert bool(metrics["skipped"])
  np.testing.assert_array_equal(metrics["losses_finite"], [True, False, True])
  assert int(skipped.consecutive_skips) == 1 and int(skipped.total_skips) == 1
  again, _ = step(skipped, _nan_batch(1))
  assert int(again.consecutive_skips) == 2
  recovered, metrics = step(again, fx.make_batch(2))
  assert not bool(metrics["skipped"])
  assert int(recovered.consecutive_skips) == 0
  assert int(recovered.total_skips) == 2
  assert fx.max_abs_diff(again.params, recovered.params) > 0


def test_nan_gradient_with_finite_losses_is_skipped():
  """sqrt(sum(0^2)) is a finite 0 with a NaN gradient."""
  def losses(outputs, batch):
    return jnp.stack([jnp.sqrt(jnp.sum((outputs[n] * batch["mask"]) ** 2))
                      for n in fx.TASK_NAMES])
  state, w, tx = fx.init_state("ew")
  step = jax.jit(train.make_train_step(train.module_apply_fn(fx.TinyMLP()),
                                       losses, w, tx))
  batch = dict(fx.make_batch(0), mask=np.zeros((fx.BATCH,), np.float32))
  new, metrics = step(state, batch)
  assert bool(np.all(metrics["losses_finite"]))
  assert not bool(metrics["grads_finite"]) and bool(metrics["skipped"])
  _assert_unchanged(state, new)


def test_nan_on_one_device_skips_on_all_devices():
  state, _, _ = fx.init_state("uw")
  step = train.pmap_step(fx.make_step("uw", axis_name="batch"), "batch")
  batch = fx.make_batch(0)
  batch["y"][: fx.BATCH // 4, 0] = np.nan          # device 0's shard only
  old = train.replicate(state)
  old_host = train.unreplicate(old)
  new, metrics = step(old, train.shard_batch(batch))
  assert np.asarray(metrics["skipped"]).tolist() == [True] * 4
  _assert_unchanged(old_host, train.unreplicate(new))


def test_loop_warns_then_raises_after_max_consecutive_skips(tmp_path):
  state, _, _ = fx.init_state("uw")
  batches = fx.SeededBatches(nan_at=(2, 3, 4), nan_task=1)
  with pytest.warns(train.NonFiniteWarning, match=r"step [34]: .*'depth'"):
    with pytest.raises(train.NonFiniteError,
                       match=r"step 5: non-finite loss in task\(s\) \['depth'\]"):
      train.train(fx.jitted_step("uw", donate=False), state, batches,
                  num_steps=20, workdir=tmp_path, log_every=1,
                  checkpoint_every=1, max_consecutive_skips=2,
                  task_names=fx.TASK_NAMES, progress=False)
  # Checkpoints were taken at the skipped steps too, but hold the params of
  # step 2, the last good one; none holds a NaN.
  ckpt = train.Checkpointer(tmp_path / "checkpoints")
  steps = ckpt.all_steps()
  assert steps[-1] == 4
  template = train.to_host(state)
  restored = {s: ckpt.restore(template, s)[0] for s in steps}
  ckpt.close()
  for s in steps:
    for leaf in jax.tree.leaves(restored[s]):
      assert np.all(np.isfinite(leaf))
  assert fx.max_abs_diff(restored[2].params, restored[4].params) == 0.0
  records = train.read_metrics(tmp_path)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
  assert records[2]["skipped"] and records[2]["non_finite_tasks"] == ["depth"]
  assert records[2]["losses"]["depth"] is None


def test_zero_max_skips_stops_at_once(tmp_path):
  state, _, _ = fx.init_state("ew")
  batches = fx.SeededBatches(nan_at=(2,), nan_task=0)
  with pytest.raises(train.NonFiniteError, match=r"step 3: .*\['seg'\]"):
    train.train(fx.jitted_step("ew", donate=False), state, batches,
                num_steps=50, workdir=tmp_path, log_every=100,
                max_consecutive_skips=0, task_names=fx.TASK_NAMES,
                progress=False)
  assert batches.consumed == 3   # no step ran after the bad one


def test_isolated_nan_is_survived(tmp_path):
  state, _, _ = fx.init_state("uw")
  batches = fx.SeededBatches(nan_at=(1,), nan_task=2)
  with pytest.warns(train.NonFiniteWarning, match=r"step 2: .*'normal'"):
    final = train.train(fx.jitted_step("uw", donate=False), state, batches,
                        num_steps=6, workdir=tmp_path, log_every=3,
                        task_names=fx.TASK_NAMES, progress=False)
  assert int(final.total_skips) == 1 and int(final.step) == 6
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(final))
