"""Digit attributes: an offline many-task benchmark of ten binary tasks.

Each example is a strip of three real handwritten digits from scikit-learn's
bundled ``load_digits`` (8x8, values 0..16), side by side: left, centre and
right, an 8x24 one-channel image with values in [0, 1]. Every digit position
draws its class uniformly from 0..9, then one image of that class from the
split's pool. The tasks are binary attributes of the three classes
:math:`(l, c, r)`; a task's label is 1 when its rule holds:

================ =============================== ======== ======== =========
task             rule                            positive majority test maj.
================ =============================== ======== ======== =========
centre_even      c is even                       0.500    0.500    0.499
centre_ge7       c >= 7                          0.300    0.700    0.718
centre_prime     c in {2, 3, 5, 7}               0.400    0.600    0.595
centre_loop      c in {0, 6, 8, 9} (closed loop) 0.400    0.600    0.602
left_even        l is even                       0.500    0.500    0.499
right_ge5        r >= 5                          0.500    0.500    0.485
left_smaller     l < c                           0.450    0.550    0.570
centre_max       c > l and c > r                 0.285    0.715    0.721
sum_ge16         l + c + r >= 16                 0.352    0.648    0.669
left_right_odd   l + r is odd                    0.500    0.500    0.515
================ =============================== ======== ======== =========

"positive" is the exact rate under uniform classes and "majority" the
accuracy of always predicting the more frequent label, max(p, 1 - p). "test
maj." is the trivial baseline on the default copy (8000 / 1000 / 1000,
``data_seed=0``) as :func:`majority_accuracy` computes it: the label more
frequent in the train split, scored on the test split (below 0.5 where the
two splits lean opposite ways). The measured positive rates are within 0.01
of the exact ones on train and 0.025 on validation and test.

The first six tasks read one digit (as hard as recognising it); the last four
relate digits: an order between two (``left_smaller``) and among three
(``centre_max``), a sum of three (``sum_ge16``) and a parity of two, an XOR
(``left_right_odd``). Each is learnt alone by the benchmark's MLP well above
its majority accuracy (experiments/configs/digit_attributes.py). Two rules
tried first were not, and were replaced: ``l + c + r`` odd (an XOR of three)
and ``c`` strictly between ``l`` and ``r`` stayed at their majority accuracy
when trained alone, while the ten-task model learnt them (0.86 to 0.91),
which would have made Delta_m mostly a measure of those two tasks.

Two tasks of other kinds read the same strips (the digit-strips benchmark,
experiments/configs/digit_strips.py): ``centre``, the centre digit's class
(int32 0..9, trivial accuracy 0.092 on the default test split) and ``sum``,
l + c + r (float32 0..27, train mean 13.5, the mean predictor's test MAE
4.07 and RMSE 4.99). :func:`trivial_metrics` gives every task's
constant-predictor metric; :data:`KINDS` and :data:`OUTPUT_SIZES` say how
each task is learnt.

Labels are not stored: the example keeps the three classes (``digits``) and
the labels are computed from them when read, so any subset of the tasks
(``tasks=``) reads the same files. Train, validation and test strips draw from
the disjoint digit pools of :mod:`mtl_jax.data.digit_scenes` (70 / 15 / 15 %
of the 1797 digits). Strips are generated once from ``data_seed`` by a TFDS
builder into array_record (about 3 s for the default sizes) and read with
``tfds.data_source`` semantics through Grain. By default (``in_memory``) a
split's files are read once per process and Grain serves the strips from
memory: per strip, reading and labelling cost more than the model's step.

Example::

  from mtl_jax.data import digit_attributes
  ds = digit_attributes.load("train", batch_size=64, num_epochs=1)
  batch = next(iter(ds))  # image (64, 8, 24, 1), digits (64, 3), centre_even (64,) ...

  # Tiny data for tests:
  ds = digit_attributes.load("train", batch_size=8, data_dir=tmp_path,
                             num_train=32, num_validation=8, num_test=8)
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import _builder, _pipeline, digit_scenes

_Rule = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# Rules on integer class arrays (left, centre, right) -> bool array.
RULES: dict[str, _Rule] = {
    "centre_even": lambda l, c, r: c % 2 == 0,
    "centre_ge7": lambda l, c, r: c >= 7,
    "centre_prime": lambda l, c, r: np.isin(c, (2, 3, 5, 7)),
    "centre_loop": lambda l, c, r: np.isin(c, (0, 6, 8, 9)),
    "left_even": lambda l, c, r: l % 2 == 0,
    "right_ge5": lambda l, c, r: r >= 5,
    "left_smaller": lambda l, c, r: l < c,
    "centre_max": lambda l, c, r: (c > l) & (c > r),
    "sum_ge16": lambda l, c, r: l + c + r >= 16,
    "left_right_odd": lambda l, c, r: (l + r) % 2 == 1,
}
TASKS = tuple(RULES)
NUM_TASKS = len(TASKS)

# Tasks of other kinds on the same strips (the digit-strips benchmark):
# ``centre`` is the centre digit's class (10-way), ``sum`` is l + c + r
# (0..27) and ``number`` the two-digit number 10 l + r (0..99) that the outer
# digits read, as real numbers.
OTHER_TASKS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "centre": lambda l, c, r: c.astype(np.int32),
    "sum": lambda l, c, r: (l + c + r).astype(np.float32),
    "number": lambda l, c, r: (10 * l + r).astype(np.float32),
    "product": lambda l, c, r: (l * c).astype(np.float32),
}
# The regression targets' means under uniform digit classes (the heads start
# there): E[l + c + r] = 13.5, E[10 l + r] = 49.5.
TARGET_MEANS = {"sum": 13.5, "number": 49.5, "product": 20.25}
ALL_TASKS = TASKS + tuple(OTHER_TASKS)
# Each task's kind: "binary" (0/1 int32 label, a sigmoid BCE), "class"
# (int32 class 0..9, a softmax CE) or "regression" (float32, an MSE).
KINDS: dict[str, str] = {**dict.fromkeys(TASKS, "binary"), "centre": "class",
                         "sum": "regression", "number": "regression",
                         "product": "regression"}
LOSSES = {t: {"binary": "binary_cross_entropy", "class": "softmax_cross_entropy",
              "regression": "mse"}[k] for t, k in KINDS.items()}
# Output width of each task's head: one logit, ten logits, one real number.
OUTPUT_SIZES = {t: 10 if k == "class" else 1 for t, k in KINDS.items()}
DIGIT_SIZE = 8
IMAGE_SHAPE = (DIGIT_SIZE, 3 * DIGIT_SIZE, 1)
SPLITS = digit_scenes.SPLITS


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
  """``tasks`` as a tuple, checked against :data:`ALL_TASKS` (no repeats)."""
  tasks = tuple(tasks)
  unknown = [t for t in tasks if t not in KINDS]
  if unknown or not tasks or len(set(tasks)) != len(tasks):
    raise ValueError(f"tasks must be distinct names among {ALL_TASKS}, got {tasks!r}"
                     + (f" (unknown: {unknown})." if unknown else "."))
  return tasks


def labels_of(digits: np.ndarray, tasks: Sequence[str] = TASKS) -> dict[str, np.ndarray]:
  """Each task's targets from digit classes ``(..., 3)`` (left, centre, right).

  Binary tasks give 0/1 int32 labels, ``centre`` the int32 class, ``sum``
  the float32 l + c + r (:data:`KINDS`).
  """
  digits = np.asarray(digits)
  l, c, r = digits[..., 0], digits[..., 1], digits[..., 2]
  out = {}
  for t in check_tasks(tasks):
    if t in RULES:
      out[t] = RULES[t](l, c, r).astype(np.int32)
    else:
      out[t] = OTHER_TASKS[t](l, c, r)
  return out


# ------------------------------------------------------------------ generation

def render_strip(rng: np.random.Generator, images: np.ndarray,
                 labels: np.ndarray) -> dict[str, np.ndarray]:
  """One strip: three classes drawn uniformly, one pool image of each.

  Args:
    rng: generator that fixes the strip.
    images: pool of digits, (n, 8, 8) in [0, 1]; every class 0..9 present.
    labels: their classes, (n,).

  Returns:
    ``image`` float32 (8, 24, 1) and ``digits`` int32 (3,), left to right.
  """
  classes = rng.integers(0, 10, size=3)
  picks = [rng.choice(np.flatnonzero(labels == k)) for k in classes]
  strip = np.concatenate([images[i] for i in picks], axis=1)
  return {"image": strip[..., None].astype(np.float32),
          "digits": np.asarray(labels[picks], np.int32)}


# ----------------------------------------------------------------- TFDS builder

@dataclasses.dataclass
class DigitAttributesConfig(tfds.core.BuilderConfig):
  """Sizes and seed of a generated copy; the name encodes them."""
  num_train: int = 8000
  num_validation: int = 1000
  num_test: int = 1000
  data_seed: int = 0


def make_config(*, num_train: int = 8000, num_validation: int = 1000, num_test: int = 1000,
                data_seed: int = 0) -> DigitAttributesConfig:
  """Returns the builder config; copies with different settings never collide."""
  for name, value in (("num_train", num_train), ("num_validation", num_validation),
                      ("num_test", num_test)):
    if value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  return DigitAttributesConfig(
      name=f"n{num_train}-{num_validation}-{num_test}_seed{data_seed}",
      num_train=num_train, num_validation=num_validation, num_test=num_test,
      data_seed=data_seed)


class DigitAttributes(_builder.LocalBuilder):
  """TFDS builder of digit-attribute strips (array_record, no TensorFlow needed)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [make_config()]  # noqa: RUF012 (the TFDS idiom)

  def _info(self) -> tfds.core.DatasetInfo:
    def t(shape, dtype):  # raw bytes, as digit_scenes
      return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)

    return tfds.core.DatasetInfo(
        builder=self,
        description="Strips of three sklearn handwritten digits and their classes; "
        "binary attributes are computed from the classes (mtl_jax.data.digit_attributes).",
        features=tfds.features.FeaturesDict({
            "image": t(shape=IMAGE_SHAPE, dtype=np.float32),
            "digits": t(shape=(3,), dtype=np.int32),
        }),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager
    cfg = self.builder_config
    pools = digit_scenes.digit_pools()
    sizes = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}
    return {split: self._generate_examples(split, sizes[split], *pools[split])
            for split in SPLITS if sizes[split] > 0}

  def _generate_examples(self, split: str, num: int, images: np.ndarray, labels: np.ndarray):
    cfg = self.builder_config
    split_id = SPLITS.index(split)
    for i in range(num):
      yield i, render_strip(np.random.default_rng([cfg.data_seed, split_id, i]), images, labels)


# ------------------------------------------------------------------ public API

def generate(data_dir: str | os.PathLike | None = None, **config: Any) -> tfds.core.DatasetBuilder:
  """Generates (once) and returns the prepared builder.

  Args:
    data_dir: cache directory; default ``$MTL_JAX_DATA_DIR`` or ``~/.cache/mtl_jax``.
    **config: keyword arguments of :func:`make_config` (``num_train``,
      ``num_validation``, ``num_test``, ``data_seed``).

  Returns:
    The ``tfds`` builder; files are under ``data_dir/digit_attributes/<config>/1.0.0``.
  """
  cfg = make_config(**config)
  if cfg.name in DigitAttributes.builder_configs:  # tfds wants registered configs by name
    cfg = cfg.name
  builder = DigitAttributes(data_dir=str(_pipeline.default_data_dir(data_dir)), config=cfg)
  builder.download_and_prepare(file_format="array_record")
  return builder


def _source(split: str, data_dir: str | os.PathLike | None, config: dict[str, Any]) -> Any:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  builder = generate(data_dir, **config)
  if split not in builder.info.splits:
    raise ValueError(f"Split {split!r} has 0 strips; pass num_{split} > 0.")
  return builder.as_data_source(split=split)


def _decoder(tasks: tuple[str, ...]) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
  def decode(example: dict[str, Any]) -> dict[str, np.ndarray]:
    digits = np.asarray(example["digits"], np.int32)
    return {"image": np.asarray(example["image"], np.float32), "digits": digits,
            **labels_of(digits, tasks)}
  return decode


@functools.lru_cache(maxsize=8)
def _split_arrays(split: str, data_dir: str, config: tuple[tuple[str, Any], ...]
                  ) -> dict[str, np.ndarray]:
  """Every stored strip of a split as two arrays (read once per process)."""
  source = _source(split, data_dir, dict(config))
  examples = source.__getitems__(range(len(source)))
  arrays = {"image": np.stack([e["image"] for e in examples]).astype(np.float32),
            "digits": np.stack([e["digits"] for e in examples]).astype(np.int32)}
  for a in arrays.values():
    a.setflags(write=False)
  return arrays


def _in_memory_source(split: str, data_dir: str | os.PathLike | None, config: dict[str, Any],
                      tasks: tuple[str, ...]) -> _pipeline.ArraySource:
  """The split in memory, labels computed once for the whole split."""
  path = str(_pipeline.default_data_dir(data_dir))
  arrays = _split_arrays(split, path, tuple(sorted(config.items())))
  return _pipeline.ArraySource({**arrays, **labels_of(arrays["digits"], tasks)})


def load(
    split: str,
    *,
    batch_size: int,
    data_dir: str | os.PathLike | None = None,
    tasks: Sequence[str] = TASKS,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    worker_count: int = 0,
    read_threads: int = 0,
    drop_remainder: bool = True,
    num_train: int = 8000,
    num_validation: int = 1000,
    num_test: int = 1000,
    data_seed: int = 0,
    in_memory: bool = True,
) -> grain.IterDataset:
  """Batches of digit strips with their attribute labels, generated on first use.

  Args:
    split: ``"train"``, ``"validation"`` or ``"test"``.
    batch_size: examples per batch on this process.
    data_dir: cache directory; default ``$MTL_JAX_DATA_DIR`` or ``~/.cache/mtl_jax``.
    tasks: the targets to compute, a subset of :data:`ALL_TASKS` (the ten
      binary attributes by default).
    seed: shuffle seed (the strips themselves depend only on ``data_seed``).
    shuffle: reshuffle every epoch.
    num_epochs: passes over the split; ``None`` repeats forever.
    shard_index: default ``jax.process_index()``.
    shard_count: default ``jax.process_count()``.
    worker_count: Grain worker processes (0: in the calling process).
    read_threads: Grain reader threads per process.
    drop_remainder: drop the last incomplete batch.
    num_train: strips in the train split.
    num_validation: strips in the validation split.
    num_test: strips in the test split.
    data_seed: seed of the strips.
    in_memory: read the split's array_record files once per process (about
      0.7 s and 6 MB for 8000 strips) and serve the strips from memory, with
      the labels computed for the whole split at once; ``False`` reads and
      labels strip by strip from the files (the same batches, about 8x slower:
      16 ms against 2 ms per batch of 64 on two CPU cores).

  Returns:
    A ``grain.IterDataset`` of dicts: ``image`` float32 (B, 8, 24, 1) in
    [0, 1], ``digits`` int32 (B, 3) (left, centre, right classes) and one
    (B,) target array per task: int32 0/1 labels (binary), int32 classes
    (``centre``), float32 sums (``sum``). Call ``iter(ds)``; the iterator
    has ``get_state()`` / ``set_state()``.
  """
  tasks = check_tasks(tasks)
  config = dict(num_train=num_train, num_validation=num_validation, num_test=num_test,
                data_seed=data_seed)
  if in_memory:
    source, decode = _in_memory_source(split, data_dir, config, tasks), None
  else:
    source, decode = _source(split, data_dir, config), _decoder(tasks)
  return _pipeline.make_pipeline(
      source, batch_size=batch_size, decode=decode, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs, shard_index=shard_index, shard_count=shard_count,
      worker_count=worker_count, read_threads=read_threads, drop_remainder=drop_remainder)


def split_digits(split: str, data_dir: str | os.PathLike | None = None,
                 **config: Any) -> np.ndarray:
  """The stored classes of every strip of ``split``, int32 (n, 3), in file order.

  ``config``: ``num_train``, ``num_validation``, ``num_test``, ``data_seed``
  as :func:`load` (defaults alike); the copy is generated if missing.
  """
  cfg = make_config(**config)
  config = {k: getattr(cfg, k) for k in ("num_train", "num_validation", "num_test", "data_seed")}
  path = str(_pipeline.default_data_dir(data_dir))
  return _split_arrays(split, path, tuple(sorted(config.items())))["digits"]


def majority_accuracy(split: str = "test", data_dir: str | os.PathLike | None = None,
                      tasks: Sequence[str] = TASKS, **config: Any) -> dict[str, float]:
  """Each task's trivial baseline: the accuracy on ``split`` of always predicting
  the label that is more frequent in the train split.

  Args:
    split: the split scored.
    data_dir: cache directory, as :func:`load`.
    tasks: the tasks, a subset of :data:`TASKS`.
    **config: ``num_train``, ``num_validation``, ``num_test``, ``data_seed`` as
      :func:`load` (the copy is generated if missing; it needs ``num_train > 0``).

  Returns:
    ``{task: accuracy}``; a classifier beats the trivial one on a task only
    above this value. For ``centre`` the constant is the train split's most
    frequent class (ties: the smallest); ``sum`` is not a classification
    (see :func:`trivial_metrics`).
  """
  tasks = check_tasks(tasks)
  if any(KINDS[t] == "regression" for t in tasks):
    raise ValueError(f"majority_accuracy scores classification tasks, got {tasks!r}; "
                     "use trivial_metrics for regression tasks such as 'sum'.")
  train = labels_of(split_digits("train", data_dir, **config), tasks)
  scored = labels_of(split_digits(split, data_dir, **config), tasks)
  out = {}
  for t in tasks:
    if KINDS[t] == "class":
      majority = int(np.argmax(np.bincount(train[t], minlength=10)))
    else:
      majority = int(2 * train[t].sum() >= len(train[t]))  # ties: predict 1
    out[t] = float(np.mean(scored[t] == majority))
  return out


def train_mean(task: str = "sum", data_dir: str | os.PathLike | None = None,
               **config: Any) -> float:
  """The mean of a regression task's target over the train split (the
  constant predictor's value; ``config`` as :func:`majority_accuracy`)."""
  if KINDS.get(task) != "regression":
    raise ValueError(f"train_mean needs a regression task, got {task!r}; "
                     f"regression tasks: {[t for t, k in KINDS.items() if k == 'regression']}.")
  return float(labels_of(split_digits("train", data_dir, **config), (task,))[task].mean())


def trivial_metrics(split: str = "test", data_dir: str | os.PathLike | None = None,
                    tasks: Sequence[str] = TASKS, **config: Any) -> dict[str, float]:
  """Each task's constant-predictor metric on ``split``, named as the metrics
  of :func:`mtl_jax.metrics.digit_attribute_metrics`.

  Classification tasks (binary and ``centre``): ``<task>/accuracy`` of the
  train split's majority label (:func:`majority_accuracy`). Regression
  (``sum``): ``<task>/mae`` and ``<task>/rmse`` of always predicting the
  train split's mean (:func:`train_mean`).

  Args:
    split: the split scored.
    data_dir: cache directory, as :func:`load`.
    tasks: a subset of :data:`ALL_TASKS`.
    **config: ``num_train``, ``num_validation``, ``num_test``, ``data_seed``.

  Returns:
    ``{metric_name: value}``; a model beats the trivial one on a task only
    above (accuracy) or below (mae, rmse) this value.
  """
  tasks = check_tasks(tasks)
  classified = tuple(t for t in tasks if KINDS[t] != "regression")
  out = {}
  if classified:
    acc = majority_accuracy(split, data_dir, classified, **config)
    out.update({f"{t}/accuracy": v for t, v in acc.items()})
  for t in tasks:
    if KINDS[t] == "regression":
      mean = train_mean(t, data_dir, **config)
      err = labels_of(split_digits(split, data_dir, **config), (t,))[t] - mean
      out[f"{t}/mae"] = float(np.mean(np.abs(err)))
      out[f"{t}/rmse"] = float(np.sqrt(np.mean(np.square(err))))
  return {m: out[m] for m in sorted(out, key=lambda m: tasks.index(m.split("/")[0]))}
