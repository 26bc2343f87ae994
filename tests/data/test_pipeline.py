"""The shared Grain pipeline: sharding, shuffling, epochs and checkpointed state."""
import json

import numpy as np
import pytest

from mtl_jax.data import _pipeline


def _ids_pipeline(n=23, **kwargs):
  source = _pipeline.ArraySource({"id": np.arange(n)})
  kwargs.setdefault("shard_index", 0)
  kwargs.setdefault("shard_count", 1)
  return _pipeline.make_pipeline(source, **kwargs)


def _ids(ds):
  return [int(i) for batch in ds for i in batch["id"]]


@pytest.mark.parametrize("shard_count", [1, 2, 3, 4])
def test_shards_are_disjoint_and_cover_the_split(shard_count):
  shards = [_ids(_ids_pipeline(batch_size=1, num_epochs=1, shard_index=i,
                               shard_count=shard_count)) for i in range(shard_count)]
  flat = sorted(i for shard in shards for i in shard)
  assert flat == list(range(23))
  assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_each_epoch_is_a_new_permutation_of_the_split():
  ids = _ids(_ids_pipeline(batch_size=1, num_epochs=3, seed=5))
  epochs = [ids[0:23], ids[23:46], ids[46:69]]
  for epoch in epochs:
    assert sorted(epoch) == list(range(23))
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
  assert epochs[0] != list(range(23))


def test_same_seed_same_order_other_seed_other_order():
  a = _ids(_ids_pipeline(batch_size=4, num_epochs=1, seed=1))
  b = _ids(_ids_pipeline(batch_size=4, num_epochs=1, seed=1))
  c = _ids(_ids_pipeline(batch_size=4, num_epochs=1, seed=2))
  assert a == b and a != c


def test_no_shuffle_keeps_source_order():
  assert _ids(_ids_pipeline(batch_size=5, num_epochs=1, shuffle=False,
                            drop_remainder=False)) == list(range(23))


@pytest.mark.parametrize("drop_remainder, sizes", [(True, [5] * 4), (False, [5] * 4 + [3])])
def test_batching_and_remainder(drop_remainder, sizes):
  ds = _ids_pipeline(batch_size=5, num_epochs=1, drop_remainder=drop_remainder)
  assert [len(b["id"]) for b in ds] == sizes


def test_restored_iterator_continues_exactly_where_it_stopped(tmp_path):
  ds = _ids_pipeline(batch_size=4, num_epochs=None, seed=3)
  it = iter(ds)
  for _ in range(7):  # crosses the first epoch boundary (23 examples)
    next(it)
  state = it.get_state()
  json.dumps(state)  # checkpointable as JSON
  _pipeline.save_state(it, tmp_path / "state.json")
  expected = [next(it)["id"].tolist() for _ in range(5)]
  for restore in (lambda i: i.set_state(state),
                  lambda i: _pipeline.restore_state(i, tmp_path / "state.json")):
    fresh = iter(ds)
    restore(fresh)
    assert [next(fresh)["id"].tolist() for _ in range(5)] == expected


def test_augmentation_is_seeded_and_changes_across_epochs():
  def augment(example, rng):
    return {"id": example["id"], "noise": rng.random()}

  def run(seed):
    ds = _pipeline.make_pipeline(_pipeline.ArraySource({"id": np.arange(4)}), batch_size=1,
                                 augment=augment, seed=seed, shuffle=False, num_epochs=2,
                                 shard_index=0, shard_count=1)
    return [float(b["noise"][0]) for b in ds]

  first = run(0)
  assert first == run(0) and first != run(1)
  assert first[:4] != first[4:]  # a new draw for the same example in epoch 2


def test_shard_defaults_to_jax_process():
  import jax
  assert _pipeline.resolve_shard(None, None) == (jax.process_index(), jax.process_count())


@pytest.mark.parametrize("index, count", [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard_raises(index, count):
  with pytest.raises(ValueError, match="shard_index"):
    _pipeline.resolve_shard(index, count)


def test_bad_batch_size_raises():
  with pytest.raises(ValueError, match="batch_size"):
    _ids_pipeline(batch_size=0)


def test_data_dir_argument_then_env_then_home(monkeypatch, tmp_path):
  monkeypatch.setenv(_pipeline.DATA_DIR_ENV, str(tmp_path / "env"))
  assert _pipeline.default_data_dir(tmp_path / "arg") == tmp_path / "arg"
  assert _pipeline.default_data_dir() == tmp_path / "env"
  monkeypatch.delenv(_pipeline.DATA_DIR_ENV)
  assert _pipeline.default_data_dir().name == "mtl_jax"


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_state():
  reference = _ids_pipeline(batch_size=3, num_epochs=2, seed=4)
  with_workers = _ids_pipeline(batch_size=3, num_epochs=2, seed=4, worker_count=2)
  # One pass of the workers (each pass starts worker processes) gives both
  # the whole stream and a state 3 batches in.
  it = iter(with_workers)
  head = [next(it)["id"].tolist() for _ in range(3)]
  state = it.get_state()
  tail = [batch["id"].tolist() for batch in it]
  it.close()
  assert [i for b in head + tail for i in b] == _ids(reference)
  expected = tail[:4]
  fresh = iter(with_workers)
  fresh.set_state(state)
  assert [next(fresh)["id"].tolist() for _ in range(4)] == expected
  fresh.close()
