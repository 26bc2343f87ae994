"""Digit attributes: format, labels against the digits shown, disjoint pools, determinism."""
import hashlib

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses, metrics
from mtl_jax.data import digit_attributes, digit_scenes

SIZES = dict(num_train=40, num_validation=12, num_test=12)

# The rules again, written out one strip at a time, independently of the module.
PRIMES, LOOPS = {2, 3, 5, 7}, {0, 6, 8, 9}
EXPECTED = {
    "centre_even": lambda l, c, r: c % 2 == 0,
    "centre_ge7": lambda l, c, r: c in (7, 8, 9),
    "centre_prime": lambda l, c, r: c in PRIMES,
    "centre_loop": lambda l, c, r: c in LOOPS,
    "left_even": lambda l, c, r: l in (0, 2, 4, 6, 8),
    "right_ge5": lambda l, c, r: r > 4,
    "left_smaller": lambda l, c, r: l < c,
    "centre_max": lambda l, c, r: c == max(l, c, r) and [l, c, r].count(c) == 1,
    "sum_ge16": lambda l, c, r: l + c + r > 15,
    "left_right_odd": lambda l, c, r: (l % 2) != (r % 2),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("digit_attributes")
  digit_attributes.generate(path, **SIZES)
  return path


def _load(data_dir, split="train", **kwargs):
  kwargs = {"batch_size": 4, "num_epochs": 1, "shard_index": 0, "shard_count": 1,
            **SIZES, **kwargs}
  return digit_attributes.load(split, data_dir=data_dir, **kwargs)


def _all(ds):
  batches = list(ds)
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _cells(images):
  """(n, 8, 24, 1) strips -> (n, 3, 8, 8) digits, left to right."""
  return images[..., 0].reshape(-1, 8, 3, 8).transpose(0, 2, 1, 3)


def _key(img):
  return hashlib.sha1(np.ascontiguousarray(img, np.float32).tobytes()).hexdigest()


def test_batch_shapes_dtypes_and_ranges(data_dir):
  batch = next(iter(_load(data_dir)))
  expected = {"image": ((4, 8, 24, 1), np.float32), "digits": ((4, 3), np.int32),
              **dict.fromkeys(digit_attributes.TASKS, ((4,), np.int32))}
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
  x = _all(_load(data_dir, batch_size=40))
  assert x["image"].min() == 0.0 and x["image"].max() == 1.0
  assert set(np.unique(x["digits"])) <= set(range(10)) and len(np.unique(x["digits"])) > 5
  for t in digit_attributes.TASKS:
    assert set(np.unique(x[t])) <= {0, 1}, t


def test_task_names_agree_with_the_losses_module():
  assert digit_attributes.TASKS == losses.DIGIT_ATTRIBUTE_TASKS
  assert digit_attributes.NUM_TASKS == 10 == len(set(digit_attributes.TASKS))


def test_labels_follow_the_rules_of_the_stored_digits(data_dir):
  for split in digit_attributes.SPLITS:
    x = _all(_load(data_dir, split))
    for i, (l, c, r) in enumerate(x["digits"].tolist()):
      for task, rule in EXPECTED.items():
        assert x[task][i] == int(rule(l, c, r)), (split, task, (l, c, r))


def test_strips_show_digits_of_the_stored_classes_from_their_own_pool(data_dir):
  pools = digit_scenes.digit_pools()
  index = {split: {} for split in pools}
  for split, (images, labels) in pools.items():
    for img, y in zip(images, labels):
      index[split].setdefault(_key(img), set()).add(int(y))
  for split in digit_attributes.SPLITS:
    x = _all(_load(data_dir, split))
    for cells, digits in zip(_cells(x["image"]), x["digits"]):
      for cell, d in zip(cells, digits):
        key = _key(cell)
        assert int(d) in index[split].get(key, ()), split  # in its pool, that class
        assert all(key not in index[s] for s in index if s != split)  # in no other


def test_classes_are_drawn_uniformly_whatever_the_pool():
  images, labels = digit_scenes.digit_pools()["test"]
  rng = np.random.default_rng(0)
  digits = np.stack([digit_attributes.render_strip(rng, images, labels)["digits"]
                     for _ in range(3000)])
  counts = np.bincount(digits.ravel(), minlength=10) / digits.size
  np.testing.assert_allclose(counts, 0.1, atol=0.02)  # 9000 draws: sd ~0.003


def test_in_memory_and_streamed_batches_are_identical(data_dir):
  a = _all(_load(data_dir, seed=5, in_memory=True))
  b = _all(_load(data_dir, seed=5, in_memory=False))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_task_subset_reads_the_same_strips(data_dir):
  tasks = ("sum_ge16", "centre_even")
  sub = next(iter(_load(data_dir, tasks=tasks, shuffle=False)))
  full = next(iter(_load(data_dir, shuffle=False)))
  assert set(sub) == {"image", "digits", *tasks}
  for k in sub:
    np.testing.assert_array_equal(sub[k], full[k])
  with pytest.raises(ValueError, match="centre_odd"):
    _load(data_dir, tasks=("centre_odd",))
  with pytest.raises(ValueError, match="distinct"):
    _load(data_dir, tasks=("sum_ge16", "sum_ge16"))


def test_majority_accuracy_is_a_constant_classifier_on_the_split(data_dir):
  train = _all(_load(data_dir))
  test = _all(_load(data_dir, "test", batch_size=12))
  got = digit_attributes.majority_accuracy("test", data_dir, **SIZES)
  assert set(got) == set(digit_attributes.TASKS)
  m = metrics.binary_accuracy_metric()
  for t, acc in got.items():
    constant = 1.0 if train[t].mean() >= 0.5 else -1.0  # the train majority's logit
    state = m.update(m.init(), jnp.full(test[t].shape, constant), test[t])
    np.testing.assert_allclose(acc, m.compute(state)["accuracy"], atol=1e-6, err_msg=t)
  on_train = digit_attributes.majority_accuracy("train", data_dir, **SIZES)
  assert min(on_train.values()) >= 0.5


def test_generation_is_deterministic_from_data_seed(tmp_path):
  sizes = dict(num_train=6, num_validation=1, num_test=1)

  def strips(path, data_seed):
    ds = digit_attributes.load("train", batch_size=6, data_dir=path, data_seed=data_seed,
                               shuffle=False, num_epochs=1, shard_index=0, shard_count=1,
                               in_memory=False, **sizes)
    batch = next(iter(ds))
    return [_key(x) for x in batch["image"]], batch["digits"].tolist()

  assert strips(tmp_path / "a", 0) == strips(tmp_path / "b", 0)
  assert strips(tmp_path / "a", 0) != strips(tmp_path / "a", 1)


def test_shuffle_order_follows_the_seed(data_dir):
  def order(seed):
    return [_key(x) for x in _all(_load(data_dir, seed=seed))["image"]]

  assert order(3) == order(3) != order(4)
  assert sorted(order(3)) == sorted(order(4))


def test_bad_arguments_raise(data_dir):
  with pytest.raises(ValueError, match="split"):
    _load(data_dir, "val")
  with pytest.raises(ValueError, match="num_test"):
    digit_attributes.make_config(num_test=-1)
  with pytest.raises(ValueError, match="num_test > 0"):
    digit_attributes.load("test", batch_size=1, data_dir=data_dir, num_train=4,
                          num_validation=1, num_test=0)


STRIP_TASKS = ("centre", "sum", "left_right_odd", "left_smaller")


def test_centre_and_sum_targets_follow_the_stored_digits(data_dir):
  for split in digit_attributes.SPLITS:
    x = _all(_load(data_dir, split, tasks=STRIP_TASKS + ("product", "number")))
    assert x["centre"].dtype == np.int32 and x["sum"].dtype == np.float32
    assert x["product"].dtype == np.float32 and x["number"].dtype == np.float32
    for i, (l, c, r) in enumerate(x["digits"].tolist()):
      assert x["centre"][i] == c and x["sum"][i] == l + c + r, (split, (l, c, r))
      assert x["product"][i] == l * c and x["number"][i] == 10 * l + r
      assert x["left_smaller"][i] == int(l < c)
  # The heads start at these means: those of uniform digit classes.
  d = np.arange(10.0)
  assert {
      "sum": 3 * d.mean(), "number": 11 * d.mean(), "product": d.mean() ** 2} == digit_attributes.TARGET_MEANS


def test_trivial_metrics_are_constant_predictors(data_dir):
  train = _all(_load(data_dir, tasks=STRIP_TASKS))
  test = _all(_load(data_dir, "test", batch_size=12, tasks=STRIP_TASKS))
  got = digit_attributes.trivial_metrics("test", data_dir, STRIP_TASKS, **SIZES)
  assert list(got) == ["centre/accuracy", "sum/mae", "sum/rmse",
                       "left_right_odd/accuracy", "left_smaller/accuracy"]
  # The same numbers through the metrics of a model that outputs a constant.
  counts = np.bincount(train["centre"], minlength=10)
  mode = int(np.flatnonzero(counts == counts.max())[0])
  mean = float(np.mean(train["sum"]))
  outputs = {"centre": jnp.asarray(np.eye(10, dtype=np.float32)[np.full(12, mode)]),
             "sum": jnp.full((12,), mean),
             "left_right_odd": jnp.full((12,), 1.0 if train["left_right_odd"].mean() >= .5 else -1.),
             "left_smaller": jnp.full((12,), 1.0 if train["left_smaller"].mean() >= .5 else -1.)}
  m = metrics.digit_attribute_metrics(STRIP_TASKS)
  want = m.compute(m.update(m.init(), outputs, {t: jnp.asarray(test[t]) for t in STRIP_TASKS}))
  for k, v in got.items():
    np.testing.assert_allclose(v, want[k], rtol=1e-5, err_msg=k)
  assert digit_attributes.train_mean("sum", data_dir, **SIZES) == pytest.approx(mean, rel=1e-6)
  with pytest.raises(ValueError, match="trivial_metrics"):
    digit_attributes.majority_accuracy("test", data_dir, ("sum",), **SIZES)
  with pytest.raises(ValueError, match="regression task"):
    digit_attributes.train_mean("centre", data_dir, **SIZES)
