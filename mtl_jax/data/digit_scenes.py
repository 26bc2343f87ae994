"""Digit scenes: an offline dense multi-task benchmark shaped like NYUv2.

Each scene is a small RGB canvas (32x32 by default) showing 1 to
``max_digits`` real handwritten digits from scikit-learn's bundled
``load_digits`` (1797 images, 8x8, values 0..16), pasted at random positions
and sizes over a tilted background plane. Four tasks, three per-pixel and one
per image, with losses on very different scales:

* ``segmentation`` int32 (H, W): 0 background, 1 + digit class (11 classes);
  cross-entropy, about 2.4 at initialisation.
* ``depth`` float32 (H, W, 1), in centimetres: digit centres at
  100 * (0.6 * H) / digit size (nearer digits look larger, about 100..200),
  tilted by up to 40 degrees (about 70..250 in all); the background plane at
  300..400 tilted by up to 20 degrees; L1, about 100 at initialisation.
* ``normal`` float32 (H, W, 3): unit normal of a tilted plane per digit and of
  the background (x right, y down, z towards the camera; (0, 0, 1) faces the
  camera); 1 - cos.
* ``count`` int32 (): number of visible digits, 1..max_digits; cross-entropy
  over ``max_digits + 1`` classes.

The image carries every target: digit shape gives the class, apparent size and
haze give depth, Lambertian shading under a fixed light gives the normal.
Train, validation and test scenes use disjoint pools of sklearn digits. Scenes
are generated once from ``data_seed`` by a TFDS builder into array_record and
read with ``tfds.data_source`` semantics through Grain; the default sizes
(4000 / 500 / 500) build in a few seconds.

Example::

  from mtl_jax.data import digit_scenes
  ds = digit_scenes.load("train", batch_size=64, num_epochs=1)
  batch = next(iter(ds))   # {"image": (64, 32, 32, 3), "segmentation": ...}

  # Tiny data for tests (well under a second once jax and tfds are imported):
  ds = digit_scenes.load("train", batch_size=8, data_dir=tmp_path, num_train=32,
                         num_validation=8, num_test=8)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import _builder, _pipeline

TASKS = ("segmentation", "depth", "normal", "count")
LOSSES = {"segmentation": "cross_entropy", "depth": "l1", "normal": "cosine",
          "count": "cross_entropy"}
NUM_CLASSES = 11  # background + 10 digits
DEFAULT_MAX_DIGITS = 4
NUM_COUNT_CLASSES = DEFAULT_MAX_DIGITS + 1  # counts 0..max_digits (0 never occurs)
SPLITS = ("train", "validation", "test")
POOL_FRACTIONS = (0.7, 0.15, 0.15)  # of the 1797 sklearn digits, disjoint
_POOL_SEED = 20240601  # fixed: the pools never depend on data_seed
_LIGHT = np.array([-1.0, -1.0, 2.0]) / np.sqrt(6.0)
_MASK_THRESHOLD = 0.25  # digit pixels are those above a quarter of full ink
_MIN_VISIBLE = 4  # a digit with fewer visible pixels is not counted


# ------------------------------------------------------------------ generation

def pool_indices(num_digits: int = 1797) -> dict[str, np.ndarray]:
  """Disjoint indices into sklearn's digits for train, validation and test."""
  order = np.random.default_rng(_POOL_SEED).permutation(num_digits)
  cuts = np.cumsum([int(f * num_digits) for f in POOL_FRACTIONS[:-1]])
  return dict(zip(SPLITS, np.split(order, cuts)))


def digit_pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The pools of :func:`pool_indices` as arrays.

  Returns:
    ``{split: (images (n, 8, 8) float32 in [0, 1], labels (n,) int64)}``.
  """
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = digits.images.astype(np.float32) / 16.0
  return {split: (images[idx], digits.target[idx])
          for split, idx in pool_indices(len(digits.target)).items()}


def _resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
  """Resizes a square (n, n) image to (size, size), align-corners bilinear."""
  n = img.shape[0]
  pos = np.linspace(0.0, n - 1.0, size)
  lo = np.clip(np.floor(pos).astype(int), 0, n - 2)
  frac = pos - lo
  rows = img[lo] * (1 - frac)[:, None] + img[lo + 1] * frac[:, None]
  return rows[:, lo] * (1 - frac)[None, :] + rows[:, lo + 1] * frac[None, :]


def _random_normal(rng: np.random.Generator, max_deg: float) -> np.ndarray:
  """A unit normal tilted by up to ``max_deg`` around the x and y axes."""
  tx, ty = np.tan(np.deg2rad(rng.uniform(-max_deg, max_deg, size=2)))
  n = np.array([tx, ty, 1.0])
  return n / np.linalg.norm(n)


def _plane_depth(normal: np.ndarray, d0: float, cy: float, cx: float, size: int,
                 cm_per_px: float) -> np.ndarray:
  """Depth over the canvas of the plane through (cy, cx, d0) with ``normal``."""
  y, x = np.mgrid[0:size, 0:size].astype(np.float64)
  slope = -normal[:2] / normal[2] * cm_per_px
  return d0 - slope[0] * (x - cx) - slope[1] * (y - cy)


def render_scene(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray,
                 image_size: int = 32, max_digits: int = DEFAULT_MAX_DIGITS) -> dict[str, Any]:
  """Renders one scene from a pool of digits.

  Args:
    rng: generator that fixes the scene.
    images: pool of digits, (n, 8, 8) in [0, 1].
    labels: their classes, (n,).
    image_size: canvas side in pixels.
    max_digits: digits per scene are drawn uniformly from 1..max_digits.

  Returns:
    One example: ``image``, ``segmentation``, ``depth``, ``normal``, ``count``.
  """
  s = image_size
  bg_normal = _random_normal(rng, 20.0)
  depth = _plane_depth(bg_normal, rng.uniform(300.0, 400.0), s / 2, s / 2, s, 2.0)
  normal = np.broadcast_to(bg_normal, (s, s, 3)).copy()
  albedo = rng.uniform(0.25, 0.45) + rng.normal(0.0, 0.03, size=(s, s, 1))
  albedo = np.repeat(albedo, 3, axis=-1)
  seg = np.zeros((s, s), np.int32)
  owner = np.full((s, s), -1)

  num = int(rng.integers(1, max_digits + 1))
  lo, hi = max(4, round(0.3 * s)), max(5, round(0.6 * s))
  sizes = rng.integers(lo, hi + 1, size=num)
  d0s = 100.0 * (0.6 * s) / sizes * rng.uniform(0.95, 1.05, size=num)
  for k in np.argsort(-d0s):  # painter's algorithm: far digits first
    size = int(sizes[k])
    pick = int(rng.integers(len(labels)))
    ink = _resize_bilinear(images[pick], size)
    top, left = rng.integers(0, s - size + 1, size=2)
    mask = np.zeros((s, s), bool)
    mask[top:top + size, left:left + size] = ink > _MASK_THRESHOLD
    n = _random_normal(rng, 40.0)
    plane = _plane_depth(n, d0s[k], top + size / 2, left + size / 2, s, d0s[k] / (2.0 * s))
    colour = rng.uniform(0.5, 1.0, size=3)
    full_ink = np.zeros((s, s))
    full_ink[top:top + size, left:left + size] = ink
    depth[mask] = plane[mask]
    normal[mask] = n
    albedo[mask] = colour * (0.4 + 0.6 * full_ink[mask, None])
    seg[mask] = int(labels[pick]) + 1
    owner[mask] = k

  visible = np.bincount(owner[owner >= 0], minlength=num)
  shading = 0.3 + 0.7 * np.clip(normal @ _LIGHT, 0.0, None)
  haze = np.exp(-depth / 600.0)
  image = albedo * (shading * haze)[..., None] + rng.normal(0.0, 0.02, size=(s, s, 3))
  return {
      "image": np.clip(image, 0.0, 1.0).astype(np.float32),
      "segmentation": seg,
      "depth": depth[..., None].astype(np.float32),
      "normal": normal.astype(np.float32),
      "count": np.int32(np.sum(visible >= _MIN_VISIBLE)),
  }


# ----------------------------------------------------------------- TFDS builder

@dataclasses.dataclass
class DigitScenesConfig(tfds.core.BuilderConfig):
  """Sizes and seed of a generated copy; the name encodes them."""
  image_size: int = 32
  max_digits: int = DEFAULT_MAX_DIGITS
  num_train: int = 4000
  num_validation: int = 500
  num_test: int = 500
  data_seed: int = 0


def make_config(*, image_size: int = 32, max_digits: int = DEFAULT_MAX_DIGITS,
                num_train: int = 4000, num_validation: int = 500, num_test: int = 500,
                data_seed: int = 0) -> DigitScenesConfig:
  """Returns the builder config; copies with different settings never collide."""
  for name, value in (("image_size", image_size), ("max_digits", max_digits)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}.")
  if image_size < 8:
    raise ValueError(f"image_size must be >= 8, got {image_size}.")
  for name, value in (("num_train", num_train), ("num_validation", num_validation),
                      ("num_test", num_test)):
    if value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  name = (f"s{image_size}_d{max_digits}_n{num_train}-{num_validation}-{num_test}"
          f"_seed{data_seed}")
  return DigitScenesConfig(
      name=name, image_size=image_size, max_digits=max_digits, num_train=num_train,
      num_validation=num_validation, num_test=num_test, data_seed=data_seed)


class DigitScenes(_builder.LocalBuilder):
  """TFDS builder of digit scenes (array_record, no TensorFlow needed)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [make_config()]  # noqa: RUF012 (the TFDS idiom)

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size

    def t(shape, dtype):  # raw bytes: serialising float lists is 10x slower
      return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)

    return tfds.core.DatasetInfo(
        builder=self,
        description="Scenes of sklearn handwritten digits with segmentation, depth, "
        "normals and digit count (mtl_jax.data.digit_scenes).",
        features=tfds.features.FeaturesDict({
            "image": t(shape=(s, s, 3), dtype=np.float32),
            "segmentation": t(shape=(s, s), dtype=np.int32),
            "depth": t(shape=(s, s, 1), dtype=np.float32),
            "normal": t(shape=(s, s, 3), dtype=np.float32),
            "count": tfds.features.Scalar(dtype=np.int32),
        }),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager
    cfg = self.builder_config
    pools = digit_pools()
    sizes = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}
    return {split: self._generate_examples(split, sizes[split], *pools[split])
            for split in SPLITS if sizes[split] > 0}

  def _generate_examples(self, split: str, num: int, images: np.ndarray, labels: np.ndarray):
    cfg = self.builder_config
    split_id = SPLITS.index(split)
    for i in range(num):
      rng = np.random.default_rng([cfg.data_seed, split_id, i])
      yield i, render_scene(rng, images, labels, cfg.image_size, cfg.max_digits)


# ------------------------------------------------------------------ public API

_DTYPES = {"image": np.float32, "segmentation": np.int32, "depth": np.float32,
           "normal": np.float32, "count": np.int32}


def _decode(example: dict[str, Any]) -> dict[str, np.ndarray]:
  """Casts a stored example to the batch dtypes (TFDS returns scalars as int64)."""
  return {k: np.asarray(example[k], dtype=dt) for k, dt in _DTYPES.items()}


def generate(data_dir: str | os.PathLike | None = None, **config: Any) -> tfds.core.DatasetBuilder:
  """Generates (once) and returns the prepared builder.

  Args:
    data_dir: cache directory; default ``$MTL_JAX_DATA_DIR`` or ``~/.cache/mtl_jax``.
    **config: keyword arguments of :func:`make_config` (``image_size``,
      ``max_digits``, ``num_train``, ``num_validation``, ``num_test``, ``data_seed``).

  Returns:
    The ``tfds`` builder; files are under ``data_dir/digit_scenes/<config>/1.0.0``.
  """
  cfg = make_config(**config)
  if cfg.name in DigitScenes.builder_configs:  # tfds wants registered configs by name
    cfg = cfg.name
  builder = DigitScenes(data_dir=str(_pipeline.default_data_dir(data_dir)), config=cfg)
  builder.download_and_prepare(file_format="array_record")
  return builder


def load(
    split: str,
    *,
    batch_size: int,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    worker_count: int = 0,
    read_threads: int = 0,
    drop_remainder: bool = True,
    image_size: int = 32,
    max_digits: int = DEFAULT_MAX_DIGITS,
    num_train: int = 4000,
    num_validation: int = 500,
    num_test: int = 500,
    data_seed: int = 0,
) -> grain.IterDataset:
  """Batches of digit scenes, generating and caching them on first use.

  Args:
    split: ``"train"``, ``"validation"`` or ``"test"``.
    batch_size: examples per batch on this process.
    data_dir: cache directory; default ``$MTL_JAX_DATA_DIR`` or ``~/.cache/mtl_jax``.
    seed: shuffle seed (the scenes themselves depend only on ``data_seed``).
    shuffle: reshuffle every epoch.
    num_epochs: passes over the split; ``None`` repeats forever.
    shard_index: default ``jax.process_index()``.
    shard_count: default ``jax.process_count()``.
    worker_count: Grain worker processes (0: in the calling process).
    read_threads: Grain reader threads per process.
    drop_remainder: drop the last incomplete batch.
    image_size: canvas side in pixels.
    max_digits: at most this many digits per scene (at least one).
    num_train: scenes in the train split.
    num_validation: scenes in the validation split.
    num_test: scenes in the test split.
    data_seed: seed of the scenes.

  Returns:
    A ``grain.IterDataset`` of dicts: ``image`` float32 (B, H, W, 3) in [0, 1],
    ``segmentation`` int32 (B, H, W) in 0..10, ``depth`` float32 (B, H, W, 1) in
    cm, ``normal`` float32 (B, H, W, 3) unit, ``count`` int32 (B,). Call
    ``iter(ds)``; the iterator has ``get_state()`` / ``set_state()``.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  builder = generate(data_dir, image_size=image_size, max_digits=max_digits,
                     num_train=num_train, num_validation=num_validation, num_test=num_test,
                     data_seed=data_seed)
  if split not in builder.info.splits:
    raise ValueError(f"Split {split!r} has 0 scenes; pass num_{split} > 0.")
  source = builder.as_data_source(split=split)
  return _pipeline.make_pipeline(
      source, batch_size=batch_size, decode=_decode, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
      shard_index=shard_index, shard_count=shard_count, worker_count=worker_count,
      read_threads=read_threads, drop_remainder=drop_remainder)
