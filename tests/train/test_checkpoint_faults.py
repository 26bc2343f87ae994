"""Checkpoints under damage and faults: fall back, refuse, or say what to do.

A damaged newest step (its files' first bytes overwritten, or bytes flipped
inside the array data) is reported and moved aside, and the run resumes from
the newest intact step, ending where a run resumed from that step ends. A
checkpoint of another model is an error naming the first differing leaf. A
full disk makes the save fail with an error that names the intact step, and
after space is freed the run resumes from it. A non-finite value in the
weighting parameters or state is named and never checkpointed.
"""
import contextlib
import os
import subprocess
import warnings

import _train_fixtures as fx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import train
from mtl_jax.train import checkpoint as ckpt_lib


def _train(workdir, num_steps, *, name="dwa", state=None, **kwargs):
  if state is None:
    state, _, _ = fx.init_state(name)
  step = fx.jitted_step(name)
  kwargs.setdefault("checkpoint_every", 2)
  kwargs.setdefault("async_checkpoints", False)
  return train.train(step, state, fx.SeededBatches(), num_steps=num_steps,
                     workdir=workdir, progress=False, task_names=fx.TASK_NAMES,
                     **kwargs)


def _files(step_dir):
  for root, _, files in os.walk(step_dir):
    for f in files:
      yield os.path.join(root, f)


def _overwrite_starts(step_dir):
  """The issue's damage: the first bytes of every file of the step."""
  for path in _files(step_dir):
    with open(path, "r+b") as f:
      f.write(b"\0garbage\0")


def _flip_array_bytes(step_dir):
  """Quieter damage: bytes flipped in the middle of the array data files."""
  hit = 0
  for path in _files(os.path.join(step_dir, "state")):
    if os.sep + "d" + os.sep not in path:
      continue
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
      f.seek(size // 2)
      byte = f.read(1)
      f.seek(size // 2)
      f.write(bytes([byte[0] ^ 0xFF]))
    hit += 1
  assert hit


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  return _train(tmp_path_factory.mktemp("straight"), 10,
                checkpoint_every=None)


@pytest.mark.parametrize("damage", [_overwrite_starts, _flip_array_bytes],
                         ids=["overwritten_starts", "flipped_array_bytes"])
def test_damaged_latest_step_falls_back_to_the_previous_one(tmp_path, damage,
                                                            uninterrupted):
  _train(tmp_path, 8)                      # steps 4, 6, 8 kept
  damage(tmp_path / "checkpoints" / "8")
  with pytest.warns(RuntimeWarning, match=r"step 8 .*damaged"):
    resumed = _train(tmp_path, 10)
  assert (tmp_path / "checkpoints" / "8.damaged").is_dir()
  records = train.read_metrics(tmp_path)
  assert [r["step"] for r in records] == list(range(1, 11))
  # Resumed from step 6: the same end as the uninterrupted run.
  assert fx.max_abs_diff(resumed.params, uninterrupted.params) < 1e-6
  assert fx.max_abs_diff(resumed.method_state,
                         uninterrupted.method_state) < 1e-6


def test_no_intact_step_is_an_error_naming_the_workdir(tmp_path):
  _train(tmp_path, 4, keep_checkpoints=2)
  for step in ("2", "4"):
    _overwrite_starts(tmp_path / "checkpoints" / step)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=r"no intact checkpoint in .*checkpoints.*new "
                             r"workdir"):
      _train(tmp_path, 6)


def test_every_step_carries_its_manifest_and_checksum(tmp_path):
  final = _train(tmp_path, 2)
  checkpointer = ckpt_lib.Checkpointer(tmp_path / "checkpoints")
  try:
    data = checkpointer._read_data(2)  # pylint: disable=protected-access
  finally:
    checkpointer.close()
  host = train.to_host(final)
  assert data["sha256"] == ckpt_lib.checksum(host)
  assert data["manifest"] == ckpt_lib.manifest(host)


def test_a_checkpoint_of_another_model_names_the_first_differing_leaf(
    tmp_path):
  _train(tmp_path, 2)
  wide = train.create_train_state(jax.random.PRNGKey(0), fx.TinyMLP(hidden=16),
                                  fx.make_batch(0), fx.get_weighting("dwa"),
                                  fx.default_optimizer(), fx.NUM_TASKS)
  step = jax.jit(train.make_train_step(
      train.module_apply_fn(fx.TinyMLP(hidden=16)), fx.task_losses,
      fx.get_weighting("dwa"), fx.default_optimizer()))
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match=r"Dense_0.*saved \(8,\) float32, expected \(16,\) "
                           r"float32.*new workdir"):
    train.train(step, wide, fx.SeededBatches(), num_steps=4,
                workdir=tmp_path, checkpoint_every=2, progress=False)


@contextlib.contextmanager
def _small_filesystem(path, size="1m"):
  """A tmpfs of ``size`` at ``path`` (root in a container), else None."""
  os.makedirs(path, exist_ok=True)
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                         "tmpfs", str(path)], capture_output=True, check=False)
  if done.returncode != 0:
    yield None
    return
  try:
    yield path
  finally:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)


def _fill(path):
  """Fills the filesystem of ``path``; returns the filler's path."""
  filler = os.path.join(path, "filler")
  with open(filler, "wb") as f:
    try:
      while True:
        f.write(b"\0" * 65536)
        f.flush()
    except OSError:
      pass
  return filler


def _remount(path, mode):
  done = subprocess.run(["mount", "-o", f"remount,{mode}", str(path)],
                        capture_output=True, check=False)
  assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("fault", ["full", "read_only"])
@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_full_disk_fails_clearly_and_keeps_the_last_checkpoint(
    tmp_path, async_save, fault, uninterrupted):
  with _small_filesystem(tmp_path / "small", "8m") as small:
    if small is None:
      if os.geteuid() == 0:
        pytest.skip("needs a small filesystem (mount -t tmpfs) or a non-root "
                    "user for a read-only directory")
      small = tmp_path / "small"
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(small, work / "checkpoints")   # only the checkpoints are small
    _train(work, 4, async_checkpoints=async_save)           # steps 2, 4
    filler = None
    if os.geteuid() != 0:
      os.chmod(small, 0o555)
    elif fault == "full":
      filler = _fill(small)
    else:
      _remount(small, "ro")
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=r"could not write checkpoint step .* last "
                             r"complete checkpoint, step 4, is left as it was"):
      _train(work, 10, async_checkpoints=async_save)
    if os.geteuid() != 0:
      os.chmod(small, 0o755)
    elif filler:
      os.remove(filler)
    else:
      _remount(small, "rw")
    resumed = _train(work, 10, async_checkpoints=async_save)
    assert fx.max_abs_diff(resumed.params, uninterrupted.params) < 1e-6


def test_nan_in_the_method_params_is_named_and_never_checkpointed(tmp_path):
  state, _, _ = fx.init_state("uw")
  log_vars = state.params["method"]["log_vars"].at[1].set(jnp.nan)
  state = state.replace(params={**state.params,
                                "method": {"log_vars": log_vars}})
  with pytest.raises(train.NonFiniteError,
                     match=r"initial train state .*'method'\]\['log_vars'"):
    _train(tmp_path, 4, name="uw", state=state)
  assert not os.path.exists(tmp_path / "checkpoints") or not [
      d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]


def test_nan_in_the_method_state_is_named_and_never_checkpointed(tmp_path):
  _train(tmp_path / "first", 2, name="dwa")
  state, _, _ = fx.init_state("dwa")
  bad = state.method_state._replace(
      loss_sum=state.method_state.loss_sum.at[0].set(jnp.inf))
  with pytest.raises(train.NonFiniteError, match=r"loss_sum"):
    _train(tmp_path / "second", 4, name="dwa",
           state=state.replace(method_state=bad))
  assert not (tmp_path / "second" / "checkpoints").exists() or not [
      d for d in os.listdir(tmp_path / "second" / "checkpoints")
      if d.isdigit()]


def test_a_nan_reaching_the_state_is_never_saved(tmp_path, monkeypatch):
  """Belt and braces: if a non-finite value got past the step's guard, the
  loop would refuse to write it."""
  state, _, _ = fx.init_state("dwa")
  good = fx.jitted_step("dwa")

  def leaky(s, b):
    s, m = good(s, b)
    return s.replace(params=jax.tree.map(lambda x: x * jnp.nan, s.params)), m

  with pytest.raises(train.NonFiniteError, match=r"step 2: .*not checkpointed"):
    train.train(leaky, state, fx.SeededBatches(), num_steps=4,
                workdir=tmp_path, checkpoint_every=2, progress=False)
  steps = [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert not steps
  del monkeypatch


class _OneDeviceNaN(fx.SeededBatches):
  """Batch 1 (0-based) has NaN targets of 'depth' in device 0's rows only."""

  def __next__(self):
    index = self.index
    batch = super().__next__()
    if index == 1:
      batch["y"][: fx.BATCH // 4, 1] = np.nan
    return batch


def test_nan_in_one_devices_batch_is_skipped_named_and_never_checkpointed(
    tmp_path):
  state, _, _ = fx.init_state("uw")
  step = train.pmap_step(fx.make_step("uw", axis_name="batch"), "batch")
  with pytest.warns(train.NonFiniteWarning, match=r"step 2: .*'depth'"):
    train.train(step, state, _OneDeviceNaN(), num_steps=4, workdir=tmp_path,
                placement=train.pmap_placement(), log_every=1,
                checkpoint_every=1, task_names=fx.TASK_NAMES, progress=False)
  checkpointer = train.Checkpointer(tmp_path / "checkpoints")
  template = train.to_host(state)
  saved = {s: checkpointer.restore(template, s)[0]
           for s in checkpointer.all_steps()}
  checkpointer.close()
  assert sorted(saved) == [2, 3, 4]
  for s in saved.values():
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(s))
  assert int(saved[2].total_skips) == 1
  records = train.read_metrics(tmp_path)
  assert records[1]["skipped"] and records[1]["non_finite_tasks"] == ["depth"]
