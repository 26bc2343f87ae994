"""End-to-end runs in subprocesses: SIGKILL and resume; two-process jax.distributed.

Marked slow. Every subprocess has a timeout so that a hang fails the test
instead of blocking CI.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import _train_fixtures as fx
import jax
import numpy as np
import pytest

from mtl_jax import train

WORKER = os.path.join(os.path.dirname(__file__), "train_worker.py")
TIMEOUT = 150


def _env(num_devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _worker(*args, num_devices=1):
  return subprocess.Popen([sys.executable, WORKER, *map(str, args)],
                          env=_env(num_devices), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(proc):
  out, _ = proc.communicate(timeout=TIMEOUT)
  assert proc.returncode == 0, out[-4000:]
  return out


def _complete_steps(directory):
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
  common = ["--method", "dwa", "--num-steps", 40, "--checkpoint-every", 4,
            "--sleep", 0.04]
  reference = _worker("--workdir", tmp_path / "ref", "--out", tmp_path / "ref",
                      *common)
  victim = _worker("--workdir", tmp_path / "run", "--out", tmp_path / "run",
                   *common)
  checkpoints = tmp_path / "run" / "single" / "checkpoints"
  deadline = time.monotonic() + TIMEOUT
  while not [s for s in _complete_steps(checkpoints) if s >= 12]:
    assert victim.poll() is None, "the run ended before it could be killed"
    assert time.monotonic() < deadline, "no checkpoint appeared"
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  victim.communicate(timeout=TIMEOUT)
  assert victim.returncode == -signal.SIGKILL
  killed_at = max(_complete_steps(checkpoints))
  assert 12 <= killed_at < 40
  _finish(_worker("--workdir", tmp_path / "run", "--out", tmp_path / "run",
                  *common))
  _finish(reference)
  ref = np.load(tmp_path / "ref-0.npz")
  got = np.load(tmp_path / "run-0.npz")
  assert int(got["single.step"]) == 40
  for key in ref.files:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, atol=1e-6,
                               err_msg=key)
  records = train.read_metrics(tmp_path / "run" / "single")
  assert [r["step"] for r in records] == list(range(1, 41))


def _pending_writes(directory):
  """Steps being written: orbax's temporary directories."""
  if not os.path.isdir(directory):
    return []
  return [d for d in os.listdir(directory) if "tmp" in d]


@pytest.mark.slow
def test_sigkill_during_an_asynchronous_checkpoint_write(tmp_path):
  """Killed while a step's files are being written: the half-written step is
  never taken for a checkpoint, and the resumed run ends where an
  uninterrupted one does."""
  common = ["--method", "dwa", "--num-steps", 24, "--checkpoint-every", 4,
            "--hidden", 200_000]
  reference = _worker("--workdir", tmp_path / "ref", "--out", tmp_path / "ref",
                      *common)
  _finish(reference)
  victim = _worker("--workdir", tmp_path / "run", "--out", tmp_path / "run",
                   *common)
  checkpoints = tmp_path / "run" / "single" / "checkpoints"
  deadline = time.monotonic() + TIMEOUT
  caught = None
  while caught is None:
    assert victim.poll() is None, "the run ended before a write was caught"
    assert time.monotonic() < deadline, "no checkpoint write was seen"
    pending = _pending_writes(checkpoints)
    if pending and _complete_steps(checkpoints):   # not the first write
      victim.send_signal(signal.SIGKILL)
      caught = pending
    time.sleep(0.002)
  victim.communicate(timeout=TIMEOUT)
  assert victim.returncode == -signal.SIGKILL
  complete = _complete_steps(checkpoints)
  assert complete and max(complete) < 24
  _finish(_worker("--workdir", tmp_path / "run", "--out", tmp_path / "run",
                  *common))
  ref = np.load(tmp_path / "ref-0.npz")
  got = np.load(tmp_path / "run-0.npz")
  assert int(got["single.step"]) == 24
  for key in ref.files:
    np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, atol=1e-6,
                               err_msg=key)


@pytest.mark.slow
def test_two_processes_killed_and_restarted_equal_an_uninterrupted_run(
    tmp_path):
  """Both processes of a jax.distributed run are killed mid-run and
  restarted: they resume from their common checkpoint and end where one
  process with the four devices ends without interruption."""
  args = ["--workdir", tmp_path / "multi", "--out", tmp_path / "multi",
          "--method", "uw", "--modes", "pmap", "--num-steps", 16,
          "--checkpoint-every", 2, "--num-processes", 2, "--sleep", 0.15]
  port = _free_port()
  procs = [_worker(*args, "--process-id", i, "--port", port, num_devices=2)
           for i in range(2)]
  checkpoints = tmp_path / "multi" / "pmap" / "checkpoints"
  try:
    deadline = time.monotonic() + TIMEOUT
    while not [s for s in _complete_steps(checkpoints) if s >= 6]:
      assert all(p.poll() is None for p in procs), "a process ended early"
      assert time.monotonic() < deadline, "no checkpoint appeared"
      time.sleep(0.02)
    for p in procs:
      p.send_signal(signal.SIGKILL)
    for p in procs:
      p.communicate(timeout=TIMEOUT)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  killed_at = max(_complete_steps(checkpoints))
  assert 6 <= killed_at < 16
  port = _free_port()
  procs = [_worker(*args, "--process-id", i, "--port", port, num_devices=2)
           for i in range(2)]
  try:
    outs = [_finish(p) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  state, _, _ = fx.init_state("uw")
  ref = train.train(train.pmap_step(fx.make_step("uw", axis_name="batch")),
                    state, fx.SeededBatches(), num_steps=16,
                    workdir=tmp_path / "ref", placement=train.pmap_placement(),
                    progress=False)
  for i in range(2):
    got = np.load(tmp_path / f"multi-{i}.npz")
    assert int(got["pmap.step"]) == 16
    for path, leaf in jax.tree_util.tree_flatten_with_path(ref.params)[0]:
      key = f"pmap{jax.tree_util.keystr(path)}"
      np.testing.assert_allclose(got[key], np.asarray(leaf), rtol=1e-5,
                                 atol=1e-6,
                                 err_msg=f"process {i} {key}\n{outs[i][-2000:]}")
  records = train.read_metrics(tmp_path / "multi" / "pmap")
  assert [r["step"] for r in records] == list(range(1, 17))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _four_device_run(tmp_path, mode):
  state, _, _ = fx.init_state("uw")
  if mode == "pmap":
    step = train.pmap_step(fx.make_step("uw", axis_name="batch"))
    placement = train.pmap_placement()
  else:
    mesh = train.make_mesh("data")
    step = train.mesh_step(fx.make_step("uw", axis_name="data"), mesh, "data")
    placement = train.mesh_placement(mesh, "data")
  return train.train(step, state, fx.SeededBatches(), num_steps=4,
                     workdir=tmp_path / mode, placement=placement,
                     progress=False)


@pytest.mark.slow
def test_two_processes_with_gloo_equal_one_process_with_four_devices(tmp_path):
  port = _free_port()
  procs = [_worker("--workdir", tmp_path / "multi", "--out", tmp_path / "multi",
                   "--method", "uw", "--modes", "pmap,mesh", "--num-steps", 4,
                   "--checkpoint-every", 2, "--num-processes", 2,
                   "--process-id", i, "--port", port, num_devices=2)
           for i in range(2)]
  try:
    outs = [_finish(p) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert jax.device_count() == 4
  for mode in ("pmap", "mesh"):
    ref = _four_device_run(tmp_path / "ref", mode)
    ref_leaves = {f"{mode}{jax.tree_util.keystr(p)}": np.asarray(x) for p, x in
                  jax.tree_util.tree_flatten_with_path(ref.params)[0]}
    for i in range(2):
      got = np.load(tmp_path / f"multi-{i}.npz")
      assert int(got["device_count"]) == 4 and int(got["process_count"]) == 2
      for key, value in ref_leaves.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6,
                                   err_msg=f"process {i} {key}\n{outs[i][-2000:]}")
    # Only process 0 wrote the logs: one line per step, not two.
    records = train.read_metrics(tmp_path / "multi" / mode)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert _complete_steps(tmp_path / "multi" / mode / "checkpoints") == [2, 4]
