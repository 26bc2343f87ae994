"""Cityscapes at 128x256 with segmentation and inverse depth (MTAN's copy).

Reads the community ``.npy`` layout that MTAN preprocessed (2975 train and
500 validation images), used by LibMTL, Nash-MTL and FAMO::

  root/{train,val}/image/{i}.npy     (128, 256, 3) float
  root/{train,val}/label_7/{i}.npy   (128, 256) 7 classes, -1 = ignore
                                     (label_2 and label_19 also accepted)
  root/{train,val}/depth/{i}.npy     (128, 256, 1) inverse depth, 0 = invalid

The first call writes an array_record copy under ``data_dir`` with a TFDS
builder (one per label set); later calls read it and ignore ``root``.

Example::

  from mtl_jax.data import cityscapes
  ds = cityscapes.load("/data/cityscapes", "train", batch_size=64)
  batch = next(iter(ds))   # image (64, 128, 256, 3), segmentation, depth
"""
from __future__ import annotations

import os
from typing import Any

import grain

from mtl_jax.data import _mtan

TASKS = ("segmentation", "depth")
LOSSES = {"segmentation": "cross_entropy", "depth": "l1"}
NUM_CLASSES = 7  # default label set; 2 and 19 are the alternatives
LABEL_SETS = (2, 7, 19)
IGNORE_LABEL = -1
IMAGE_SIZE = (128, 256)
SPLITS = _mtan.SPLITS
SOURCE = ("MTAN's preprocessed Cityscapes (https://github.com/lorenmt/mtan, README link "
          "'CityScapes [2 Task]'; the same files are used by LibMTL, Nash-MTL and FAMO). "
          "Unzip it and pass the folder that contains train/ and val/.")


class MtanCityscapes(_mtan.MtanBuilder):
  """TFDS builder of MTAN's Cityscapes from a manual directory."""
  DATASET = "Cityscapes"
  SOURCE = SOURCE
  FOLDERS = ("depth",)


def config(num_classes: int = NUM_CLASSES,
           image_size: tuple[int, int] = IMAGE_SIZE) -> _mtan.MtanConfig:
  """Builder config for one label set; a smaller ``image_size`` is for fixtures."""
  if num_classes not in LABEL_SETS:
    raise ValueError(f"num_classes must be one of {LABEL_SETS}, got {num_classes}.")
  h, w = image_size
  return _mtan.MtanConfig(name=f"label_{num_classes}_{h}x{w}", height=h, width=w,
                          label_folder=f"label_{num_classes}", num_classes=num_classes)


def load(
    root: str | os.PathLike | None,
    split: str,
    *,
    batch_size: int,
    data_dir: str | os.PathLike | None = None,
    num_classes: int = NUM_CLASSES,
    augment: bool = False,
    holdout_fraction: float = 0.1,
    image_size: tuple[int, int] = IMAGE_SIZE,
    **pipeline_kwargs: Any,
) -> grain.IterDataset:
  """Batches of Cityscapes, preparing the array_record copy of ``root`` on first use.

  Args:
    root: folder with ``train/`` and ``val/`` in MTAN's layout (see module doc).
    split: ``"train"``, ``"validation"``, ``"train_fit"`` or ``"train_holdout"``.
    batch_size: examples per batch on this process.
    data_dir: where the prepared copy lives; default ``$MTL_JAX_DATA_DIR`` or
      ``~/.cache/mtl_jax``.
    num_classes: label set, read from ``label_{num_classes}/``: 2, 7 or 19.
    augment: random scale-crop ({1, 1.2, 1.5}) and horizontal flip. The inverse
      depth is multiplied by the scale (MTAN's code divides it, as for depth).
    holdout_fraction: share of train held out by ``"train_holdout"``.
    image_size: (H, W) of the files; only test fixtures change it.
    **pipeline_kwargs: ``seed``, ``shuffle``, ``num_epochs``, ``shard_index``,
      ``shard_count``, ``worker_count``, ``read_threads``, ``drop_remainder``
      of :func:`mtl_jax.data.make_pipeline`.

  Returns:
    A ``grain.IterDataset`` of dicts: ``image`` float32 (B, H, W, 3),
    ``segmentation`` int32 (B, H, W) with -1 = ignore, ``depth`` float32
    (B, H, W, 1) inverse depth with 0 = invalid.

  Raises:
    LayoutError: ``root`` is missing or malformed (the message shows the layout).
    ValueError: a file has the wrong shape or dtype (the message names it).
  """
  return _mtan.load(MtanCityscapes, root, split, config(num_classes, image_size),
                    batch_size=batch_size, data_dir=data_dir, augment=augment,
                    inverse_depth=True, holdout_fraction=holdout_fraction, **pipeline_kwargs)
