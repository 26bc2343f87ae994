"""NYUv2 with 13-class segmentation, depth and surface normals (MTAN's copy).

Reads the community ``.npy`` layout that MTAN preprocessed (795 train and
654 validation images, 288x384), used by LibMTL, Nash-MTL and FAMO::

  root/{train,val}/image/{i}.npy    (288, 384, 3) float
  root/{train,val}/label/{i}.npy    (288, 384) 13 classes, -1 = ignore
  root/{train,val}/depth/{i}.npy    (288, 384, 1) float, 0 = invalid
  root/{train,val}/normal/{i}.npy   (288, 384, 3) float, zero vector = invalid

The first call writes an array_record copy under ``data_dir`` (about 2.6 GB in
float32) with a TFDS builder; later calls read that copy and ignore ``root``.
Delete ``data_dir/mtan_nyuv2`` to rebuild from a changed ``root``.

Splits: ``"train"`` (root/train), ``"validation"`` (root/val, the set the
papers report on), and ``"train_fit"`` / ``"train_holdout"``: train split
into a fixed ``holdout_fraction`` held out for model selection and the rest.

Example::

  from mtl_jax.data import nyuv2
  ds = nyuv2.load("/data/nyuv2", "train", batch_size=8, augment=True)
  batch = next(iter(ds))   # image (8, 288, 384, 3), segmentation (8, 288, 384), ...
"""
from __future__ import annotations

import os
from typing import Any

import grain

from mtl_jax.data import _mtan

TASKS = ("segmentation", "depth", "normal")
LOSSES = {"segmentation": "cross_entropy", "depth": "l1", "normal": "cosine"}
NUM_CLASSES = 13
IGNORE_LABEL = -1
IMAGE_SIZE = (288, 384)
SPLITS = _mtan.SPLITS
SOURCE = ("MTAN's preprocessed NYUv2 (https://github.com/lorenmt/mtan, README link "
          "'NYUv2 [3 Task]'; the same files are used by LibMTL, Nash-MTL and FAMO). "
          "Unzip it and pass the folder that contains train/ and val/.")


class MtanNyuv2(_mtan.MtanBuilder):
  """TFDS builder of MTAN's NYUv2 from a manual directory."""
  DATASET = "NYUv2"
  SOURCE = SOURCE
  FOLDERS = ("depth", "normal")


def config(image_size: tuple[int, int] = IMAGE_SIZE) -> _mtan.MtanConfig:
  """Builder config; a smaller ``image_size`` is for test fixtures."""
  h, w = image_size
  return _mtan.MtanConfig(name=f"{h}x{w}", height=h, width=w, label_folder="label",
                          num_classes=NUM_CLASSES)


def load(
    root: str | os.PathLike | None,
    split: str,
    *,
    batch_size: int,
    data_dir: str | os.PathLike | None = None,
    augment: bool = False,
    holdout_fraction: float = 0.1,
    image_size: tuple[int, int] = IMAGE_SIZE,
    **pipeline_kwargs: Any,
) -> grain.IterDataset:
  """Batches of NYUv2, preparing the array_record copy of ``root`` on first use.

  Args:
    root: folder with ``train/`` and ``val/`` in MTAN's layout (see module doc).
    split: ``"train"``, ``"validation"``, ``"train_fit"`` or ``"train_holdout"``.
    batch_size: examples per batch on this process.
    data_dir: where the prepared copy lives; default ``$MTL_JAX_DATA_DIR`` or
      ``~/.cache/mtl_jax``.
    augment: random scale-crop ({1, 1.2, 1.5}, depth divided by the scale)
      and horizontal flip (normal x negated); the papers use it for training.
    holdout_fraction: share of train held out by ``"train_holdout"``.
    image_size: (H, W) of the files; only test fixtures change it.
    **pipeline_kwargs: ``seed``, ``shuffle``, ``num_epochs``, ``shard_index``,
      ``shard_count``, ``worker_count``, ``read_threads``, ``drop_remainder``
      of :func:`mtl_jax.data.make_pipeline`.

  Returns:
    A ``grain.IterDataset`` of dicts: ``image`` float32 (B, H, W, 3),
    ``segmentation`` int32 (B, H, W) with -1 = ignore, ``depth`` float32
    (B, H, W, 1) with 0 = invalid, ``normal`` float32 (B, H, W, 3) with the zero
    vector = invalid.

  Raises:
    LayoutError: ``root`` is missing or malformed (the message shows the layout).
    ValueError: a file has the wrong shape or dtype (the message names it).
  """
  return _mtan.load(MtanNyuv2, root, split, config(image_size), batch_size=batch_size,
                    data_dir=data_dir, augment=augment, inverse_depth=False,
                    holdout_fraction=holdout_fraction, **pipeline_kwargs)
