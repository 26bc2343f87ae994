"""Digit scenes: generation, value ranges, masks, disjoint digit pools, determinism."""
import hashlib

import numpy as np
import pytest

from mtl_jax.data import digit_scenes

SIZES = dict(num_train=40, num_validation=12, num_test=12)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("digit_scenes")
  digit_scenes.generate(path, **SIZES)
  return path


def _load(data_dir, split="train", **kwargs):
  kwargs = {"batch_size": 4, "num_epochs": 1, "shard_index": 0, "shard_count": 1,
            **SIZES, **kwargs}
  return digit_scenes.load(split, data_dir=data_dir, **kwargs)


def _all(ds):
  batches = list(ds)
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _hashes(images):
  return [hashlib.sha1(x.tobytes()).hexdigest() for x in images]


def test_batch_shapes_and_dtypes(data_dir):
  batch = next(iter(_load(data_dir)))
  expected = {"image": ((4, 32, 32, 3), np.float32), "segmentation": ((4, 32, 32), np.int32),
              "depth": ((4, 32, 32, 1), np.float32), "normal": ((4, 32, 32, 3), np.float32),
              "count": ((4,), np.int32)}
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
  assert set(digit_scenes.TASKS) <= set(batch)


def test_value_ranges_and_masks(data_dir):
  x = _all(_load(data_dir, batch_size=40))
  assert x["image"].min() >= 0.0 and x["image"].max() <= 1.0
  seg = x["segmentation"]
  assert seg.min() == 0 and seg.max() <= 10 and len(np.unique(seg)) > 5
  depth = x["depth"][..., 0]
  digit = seg > 0
  assert depth[digit].max() < 270.0 < depth[~digit].min()  # digits float before the plane
  assert depth.max() < 450.0 and depth.min() > 50.0
  np.testing.assert_allclose(np.linalg.norm(x["normal"], axis=-1), 1.0, atol=1e-5)
  assert (x["normal"][..., 2] > 0).all()  # every surface faces the camera
  assert ((x["count"] >= 1) & (x["count"] <= digit_scenes.DEFAULT_MAX_DIGITS)).all()
  assert len(np.unique(x["count"])) > 1
  # At least as many visible digits as distinct classes on the canvas.
  classes = [len(np.unique(s[s > 0])) for s in seg]
  assert (x["count"] >= np.array(classes)).all()


def test_loss_scales_differ_by_orders_of_magnitude(data_dir):
  x = _all(_load(data_dir, batch_size=40))
  depth_l1_of_mean = np.abs(x["depth"] - x["depth"].mean()).mean()
  uniform_cross_entropy = np.log(digit_scenes.NUM_CLASSES)
  assert depth_l1_of_mean > 20 * uniform_cross_entropy


def test_digit_pools_are_disjoint_and_cover_sklearn():
  pools = digit_scenes.pool_indices()
  flat = np.concatenate(list(pools.values()))
  assert sorted(flat.tolist()) == list(range(1797))
  assert len(pools["train"]) > len(pools["validation"]) > 0 and len(pools["test"]) > 0


def test_scenes_use_only_digits_of_their_pool():
  pool = digit_scenes.digit_pools()["test"]
  only_sevens = (pool[0][pool[1] == 7], pool[1][pool[1] == 7])
  for i in range(5):
    scene = digit_scenes.render_scene(np.random.default_rng(i), *only_sevens)
    assert set(np.unique(scene["segmentation"]).tolist()) == {0, 8}


def test_splits_hold_different_scenes(data_dir):
  train = set(_hashes(_all(_load(data_dir))["image"]))
  test = set(_hashes(_all(_load(data_dir, "test"))["image"]))
  assert len(train) == 40 and len(test) == 12 and not train & test


def test_generation_is_deterministic_from_data_seed(tmp_path):
  sizes = dict(num_train=6, num_validation=1, num_test=1)

  def images(path, data_seed):
    ds = digit_scenes.load("train", batch_size=6, data_dir=path, data_seed=data_seed,
                           shuffle=False, num_epochs=1, shard_index=0, shard_count=1, **sizes)
    return sorted(_hashes(next(iter(ds))["image"]))

  assert images(tmp_path / "a", 0) == images(tmp_path / "b", 0)
  assert images(tmp_path / "a", 0) != images(tmp_path / "a", 1)


def test_order_is_deterministic_under_seed(data_dir):
  a = _hashes(_all(_load(data_dir, seed=3))["image"])
  assert a == _hashes(_all(_load(data_dir, seed=3))["image"])
  assert a != _hashes(_all(_load(data_dir, seed=4))["image"])


def test_process_shards_are_disjoint_and_cover_the_split(data_dir):
  shards = [_hashes(_all(_load(data_dir, batch_size=1, shard_index=i, shard_count=3))["image"])
            for i in range(3)]
  flat = [h for s in shards for h in s]
  assert len(flat) == len(set(flat)) == 40


def test_restored_iterator_continues_where_it_stopped(data_dir):
  ds = _load(data_dir, num_epochs=None)
  it = iter(ds)
  for _ in range(12):  # past the first epoch of 10 batches
    next(it)
  state = it.get_state()
  expected = [next(it)["image"] for _ in range(3)]
  fresh = iter(ds)
  fresh.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(fresh)["image"], want)


def test_cached_copy_is_reused(data_dir):
  before = sorted(p.stat().st_mtime_ns for p in data_dir.rglob("*.array_record*"))
  digit_scenes.generate(data_dir, **SIZES)
  assert sorted(p.stat().st_mtime_ns for p in data_dir.rglob("*.array_record*")) == before


def test_env_var_sets_the_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("MTL_JAX_DATA_DIR", str(tmp_path))
  digit_scenes.generate(num_train=2, num_validation=1, num_test=1)
  assert list(tmp_path.glob("digit_scenes/*/1.0.0/*train*.array_record*"))


def test_bad_arguments_raise(data_dir):
  with pytest.raises(ValueError, match="split"):
    _load(data_dir, "val")
  with pytest.raises(ValueError, match="image_size"):
    digit_scenes.make_config(image_size=4)


@pytest.mark.slow
def test_default_size_generates_in_under_a_minute(tmp_path):
  import time
  start = time.perf_counter()
  builder = digit_scenes.generate(tmp_path)
  assert time.perf_counter() - start < 60.0
  assert builder.info.splits["train"].num_examples == 4000
