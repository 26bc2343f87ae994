"""CelebA: 40 binary attributes per face, images resized to 64x64.

Reads the TFDS ``celeb_a`` dataset (218x178 RGB, 162770 / 19867 / 19962
train / validation / test) that the user has prepared in the array_record
format, with ``tfds.data_source``: no TensorFlow at training time.

Preparing ``celeb_a`` from the raw download is the one step that needs
TensorFlow (its builder decodes the images with TF). Do it once, anywhere::

  pip install tensorflow tensorflow-datasets
  tfds build celeb_a --file_format=array_record --data_dir=/data/tfds

then ``celeba.load("/data/tfds", "train", batch_size=512)`` with TF removed.

Example::

  from mtl_jax.data import celeba
  ds = celeba.load("/data/tfds", "train", batch_size=512)
  batch = next(iter(ds))   # image (512, 64, 64, 3) in [0, 1], attributes (512, 40)
"""
from __future__ import annotations

import os
from typing import Any

import grain
import numpy as np

from mtl_jax.data import _pipeline

ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
TASKS = ATTRIBUTES  # one binary task per attribute, column i of "attributes"
LOSSES = dict.fromkeys(ATTRIBUTES, "binary_cross_entropy")
NUM_TASKS = len(ATTRIBUTES)
IMAGE_SIZE = 64
SPLITS = ("train", "validation", "test")
TFDS_NAME = "celeb_a"
PREPARE_HELP = (
    "CelebA must be prepared once as TFDS 'celeb_a' in the array_record format. That step "
    "needs TensorFlow (optional, only for preparing):\n"
    "  pip install tensorflow\n"
    "  tfds build celeb_a --file_format=array_record --data_dir={data_dir}\n"
    "The raw files come from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (TFDS "
    "downloads them; see https://www.tensorflow.org/datasets/catalog/celeb_a). A copy "
    "already prepared as tfrecord can be converted to array_record with "
    "`tfds convert_format` (see `tfds convert_format --help`).")


def open_source(data_dir: str | os.PathLike, split: str) -> Any:
  """``tfds.data_source('celeb_a', ...)`` with an explanation when it is not prepared."""
  import tensorflow_datasets as tfds
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  try:
    return tfds.data_source(TFDS_NAME, split=split, data_dir=os.fspath(data_dir),
                            download=False)
  except (AssertionError, FileNotFoundError, NotImplementedError, ValueError) as e:
    raise FileNotFoundError(
        f"Could not open {TFDS_NAME} under {data_dir} as array_record (tfds: "
        f"{str(e).splitlines()[0] if str(e) else ''}).\n"
        + PREPARE_HELP.format(data_dir=data_dir)) from e


def resize(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
  """Resizes a uint8 (H, W, 3) image to float32 (size, size, 3) in [0, 1] (PIL bilinear)."""
  from PIL import Image
  out = Image.fromarray(np.asarray(image, np.uint8)).resize((size, size), Image.BILINEAR)
  return np.asarray(out, np.float32) / 255.0


def decode(example: dict[str, Any], size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
  """Stored example -> ``image`` (size, size, 3) float32, ``attributes`` (40,) int32."""
  attrs = example["attributes"]
  return {"image": resize(example["image"], size),
          "attributes": np.array([attrs[name] for name in ATTRIBUTES], np.int32)}


def load(
    data_dir: str | os.PathLike,
    split: str,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    worker_count: int = 0,
    read_threads: int = 0,
    drop_remainder: bool = True,
) -> grain.IterDataset:
  """Batches of CelebA from a prepared TFDS ``data_dir``.

  Args:
    data_dir: TFDS data directory holding ``celeb_a/<version>`` in array_record.
    split: ``"train"``, ``"validation"`` or ``"test"``.
    batch_size: examples per batch on this process.
    seed: shuffle seed.
    shuffle: reshuffle every epoch.
    num_epochs: passes over the split; ``None`` repeats forever.
    shard_index: default ``jax.process_index()``.
    shard_count: default ``jax.process_count()``.
    worker_count: Grain worker processes; JPEG/PNG decoding and resizing make
      this worth 2 or more for training.
    read_threads: Grain reader threads per process.
    drop_remainder: drop the last incomplete batch.

  Returns:
    A ``grain.IterDataset`` of dicts: ``image`` float32 (B, 64, 64, 3) in [0, 1]
    (the whole 218x178 face resized, bilinear), ``attributes`` int32 (B, 40) in
    {0, 1}, columns in the order of ``ATTRIBUTES``.

  Raises:
    FileNotFoundError: the data is not prepared as array_record; the message
      says how to prepare it (the only step that needs TensorFlow).
  """
  source = open_source(data_dir, split)
  return _pipeline.make_pipeline(
      source, batch_size=batch_size, decode=decode, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs, shard_index=shard_index, shard_count=shard_count,
      worker_count=worker_count, read_threads=read_threads, drop_remainder=drop_remainder)
