"""The loop: logs, checkpoints, in-process resume, fetches only at log time."""
import json
import os

import _train_fixtures as fx
import numpy as np
import pytest
from _slow import ENGINE_CORE, core_first

from mtl_jax import train


def _train(tmp_path, num_steps, *, name="dwa", placement=None, step=None,
           batches=None, **kwargs):
  state, _, _ = fx.init_state(name)
  step = step or fx.jitted_step(name)
  kwargs.setdefault("progress", False)
  return train.train(step, state, batches or fx.SeededBatches(),
                     num_steps=num_steps, workdir=tmp_path,
                     placement=placement, task_names=fx.TASK_NAMES, **kwargs)


def test_smoke_writes_one_line_per_step_and_keeps_n_checkpoints(tmp_path):
  final = _train(tmp_path, 7, log_every=3, checkpoint_every=2,
                 keep_checkpoints=2, tensorboard=True, progress=True)
  records = train.read_metrics(tmp_path)
  assert [r["step"] for r in records] == list(range(1, 8))
  assert set(records[0]["weights"]) == set(fx.TASK_NAMES)
  assert all(r["weights"] == dict.fromkeys(fx.TASK_NAMES, 1.0) for r in records[:4])
  assert records[-1]["weights"] != records[0]["weights"]   # DWA's epoch 2+
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["6", "7"]
  assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))
  assert int(final.step) == 7


class _CountingPlacement:
  """single_device(), counting the device-to-host fetches."""

  def __init__(self):
    self.fetches = 0
    base = train.single_device()
    def get(tree):
      self.fetches += 1
      return base.get(tree)
    self.placement = base._replace(get=get)


def test_metrics_are_fetched_only_every_log_every_steps(tmp_path):
  counter = _CountingPlacement()
  _train(tmp_path, 12, placement=counter.placement, log_every=4)
  # 3 metric fetches (steps 4, 8, 12) + the final state; nothing per step.
  assert counter.fetches == 4
  assert len(train.read_metrics(tmp_path)) == 12


# Every kind of method state: DWA's epoch means, GradVac's EMA of cosines and
# its key, FAMO's logits and their Adam moments, the (K, P) buffers of MoCo,
# DB-MTL and ExcessMTL, GradNorm's learnable logits and initial losses,
# GradDrop's key, SDMGrad's warm start, UW-SO-entropy's loss average.
STATEFUL = ["dwa", "gradvac", "famo", "moco", "db_mtl", "excess_mtl",
            "gradnorm", "graddrop", "sdmgrad", "uw_so_entropy"]


@pytest.mark.parametrize("name", core_first(STATEFUL, ENGINE_CORE))
def test_resume_continues_like_an_uninterrupted_run(tmp_path, name):
  """The method's state comes back from the checkpoint with the parameters,
  and the resumed run ends where the uninterrupted one does."""
  straight = _train(tmp_path / "a", 10, name=name, checkpoint_every=3)
  first = _train(tmp_path / "b", 6, name=name, checkpoint_every=3)
  assert int(first.step) == 6
  # A stale record past the last checkpoint must be dropped on resume.
  with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"step": 7, "stale": True}) + "\n")
  batches = fx.SeededBatches()
  resumed = _train(tmp_path / "b", 10, name=name, checkpoint_every=3,
                   batches=batches)
  assert batches.consumed == 4            # only the steps 7..10
  assert fx.max_abs_diff(straight.params, resumed.params) < 1e-6
  assert fx.max_abs_diff(straight.method_state, resumed.method_state) < 1e-6
  records = train.read_metrics(tmp_path / "b")
  assert [r["step"] for r in records] == list(range(1, 11))
  assert not any("stale" in r for r in records)


def test_pmap_and_mesh_placements_match_single_device(tmp_path):
  ref = _train(tmp_path / "single", 4, name="gls")
  pmapped = _train(tmp_path / "pmap", 4, name="gls",
                   step=train.pmap_step(fx.make_step("gls", axis_name="batch")),
                   placement=train.pmap_placement(), checkpoint_every=2)
  mesh = train.make_mesh("data")
  meshed = _train(tmp_path / "mesh", 4, name="gls",
                  step=train.mesh_step(fx.make_step("gls", axis_name="data"),
                                       mesh, "data"),
                  placement=train.mesh_placement(mesh, "data"))
  assert fx.max_abs_diff(ref.params, pmapped.params) < 1e-5
  assert fx.max_abs_diff(ref.params, meshed.params) < 1e-5
  assert np.shape(pmapped.step) == ()     # one replica came back


def test_checkpointer_ignores_half_written_steps(tmp_path):
  """What a save killed midway leaves: an orbax temporary directory."""
  state, _, _ = fx.init_state("uw")
  host = train.to_host(state)
  ckpt = train.Checkpointer(tmp_path, async_save=False)
  ckpt.save(3, host, {"index": 3})
  ckpt.close()
  partial = tmp_path / "5.orbax-checkpoint-tmp-1234567"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_text("half")
  ckpt = train.Checkpointer(tmp_path)
  assert ckpt.latest_step() == 3 and ckpt.all_steps() == [3]
  restored, data = ckpt.restore(host)
  ckpt.close()
  assert data == {"index": 3}
  assert fx.max_abs_diff(restored, host) == 0.0


def test_bytes_iterator_state_round_trips(tmp_path):
  state, _, _ = fx.init_state("ew")
  ckpt = train.Checkpointer(tmp_path, async_save=False)
  ckpt.save(1, train.to_host(state), b'{"grain": 1}\x00')
  assert ckpt.restore(train.to_host(state))[1] == b'{"grain": 1}\x00'
  ckpt.close()


def test_bad_loop_arguments_raise(tmp_path):
  with pytest.raises(ValueError, match="log_every"):
    _train(tmp_path, 3, log_every=0)
  with pytest.raises(ValueError, match="checkpoint_every"):
    _train(tmp_path, 3, checkpoint_every=0)
