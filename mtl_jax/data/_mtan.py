"""TFDS builders for the ``.npy`` layouts that MTAN published for NYUv2 and Cityscapes.

The community copies of both datasets (MTAN, reused by LibMTL, Nash-MTL and
FAMO) are folders of one ``.npy`` file per example and per target::

  root/{train,val}/{image,<label folder>,depth[,normal]}/{0,1,2,...}.npy

A builder reads such a folder as its TFDS *manual directory* and writes an
array_record copy under ``data_dir`` once; later calls read the copy with
``tfds.data_source`` semantics. :func:`load` wraps it in the shared Grain
pipeline, with the optional augmentation of :mod:`mtl_jax.data._augment`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from collections.abc import Iterator
from typing import Any, ClassVar

import grain
import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import _augment, _builder, _pipeline

SPLITS = ("train", "validation", "train_fit", "train_holdout")
_SPLIT_FOLDERS = {"train": "train", "validation": "val"}
HOLDOUT_SEED = 0  # fixed, so the carved validation set never depends on the run's seed


class LayoutError(FileNotFoundError):
  """The manual directory is missing or does not have the expected layout."""


@dataclasses.dataclass
class MtanConfig(tfds.core.BuilderConfig):
  """Image size and label folder of a prepared copy."""
  height: int = 0
  width: int = 0
  label_folder: str = "label"
  num_classes: int = 0


def layout_text(name: str, folders: tuple[str, ...], height: int, width: int,
                source: str) -> str:
  """The expected layout and origin of a dataset, for error messages and docs."""
  shapes = {"image": f"({height}, {width}, 3) float", "depth": f"({height}, {width}, 1) float",
            "normal": f"({height}, {width}, 3) float"}
  lines = [f"Expected the {name} layout preprocessed by MTAN:",
           "  root/",
           "    train/   (and the same under val/)"]
  for folder in folders:
    shape = shapes.get(folder, f"({height}, {width}) int or float class ids, -1 = ignore")
    lines.append(f"      {folder}/0.npy, 1.npy, ...   {shape}")
  lines.append(f"Where to get it: {source}")
  return "\n".join(lines)


def check_layout(root: str | os.PathLike | None, folders: tuple[str, ...],
                 layout: str) -> dict[str, list[int]]:
  """Checks ``root`` and returns the example indices of each split.

  Raises:
    LayoutError: naming the missing or inconsistent folder, and showing the
      expected layout and where the data comes from.
  """
  if root is None or not pathlib.Path(root).is_dir():
    raise LayoutError(f"Manual directory {root!s} does not exist.\n{layout}")
  root = pathlib.Path(root)
  indices = {}
  for split, split_folder in _SPLIT_FOLDERS.items():
    per_folder = {}
    for folder in folders:
      path = root / split_folder / folder
      if not path.is_dir():
        raise LayoutError(f"Missing folder {path}.\n{layout}")
      names = [p.stem for p in path.glob("*.npy")]
      if not names or not all(n.isdigit() for n in names):
        raise LayoutError(f"{path} must hold files named 0.npy, 1.npy, ... "
                          f"(found {sorted(names)[:5] or 'none'}).\n{layout}")
      per_folder[folder] = sorted(int(n) for n in names)
    first = per_folder[folders[0]]
    for folder, idx in per_folder.items():
      if idx != first:
        missing = sorted(set(first) ^ set(idx))[:5]
        raise LayoutError(
            f"{root / split_folder} has different files in {folders[0]}/ and {folder}/ "
            f"(e.g. index {missing}).\n{layout}")
    indices[split] = first
  return indices


def _check_array(path: pathlib.Path, x: np.ndarray, shape: tuple[int, ...],
                 kind: str) -> None:
  """Raises a ValueError naming ``path`` if ``x`` has the wrong shape or dtype."""
  ok_dtype = (np.issubdtype(x.dtype, np.floating) if kind == "float"
              else np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer))
  if x.shape != shape or not ok_dtype:
    raise ValueError(f"{path}: expected shape {shape} and {kind} dtype, got shape {x.shape} "
                     f"and dtype {x.dtype}.")


def read_example(split_dir: pathlib.Path, index: int, folders: dict[str, str],
                 height: int, width: int, num_classes: int) -> dict[str, np.ndarray]:
  """Reads and validates one example; ``folders`` maps folder name to feature key."""
  out = {}
  for folder, key in folders.items():
    path = split_dir / folder / f"{index}.npy"
    try:
      x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise ValueError(f"{path}: not a readable .npy file ({e}).") from e
    if key == "segmentation":
      _check_array(path, x, (height, width), "int or float")
      labels = np.rint(x)
      if np.any(labels != x) or labels.min() < -1 or labels.max() >= num_classes:
        raise ValueError(f"{path}: class ids must be integers in [-1, {num_classes - 1}], "
                         f"got values in [{x.min()}, {x.max()}].")
      x = labels.astype(np.int32)
    else:
      if key == "depth" and x.ndim == 2:
        x = x[..., None]
      channels = 1 if key == "depth" else 3
      _check_array(path, x, (height, width, channels), "float")
      x = x.astype(np.float32)
    out[key] = x
  return out


class MtanBuilder(_builder.LocalBuilder, skip_registration=True):
  """Shared builder; subclasses set the class constants below."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET: ClassVar[str] = ""
  SOURCE: ClassVar[str] = ""
  FOLDERS: ClassVar[tuple[str, ...]] = ()  # without the label folder
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder with MTAN's train/ and val/ as `root`."

  @classmethod
  def layout(cls, config: MtanConfig) -> str:
    folders = ("image", config.label_folder) + cls.FOLDERS
    return layout_text(cls.DATASET, folders, config.height, config.width, cls.SOURCE)

  def _folders(self) -> dict[str, str]:
    folders = {"image": "image", self.builder_config.label_folder: "segmentation"}
    folders.update({f: f for f in self.FOLDERS})
    return folders

  def _info(self) -> tfds.core.DatasetInfo:
    h, w = self.builder_config.height, self.builder_config.width
    shapes = {"image": (h, w, 3), "segmentation": (h, w), "depth": (h, w, 1),
              "normal": (h, w, 3)}
    features = {
        key: tfds.features.Tensor(
            shape=shapes[key], dtype=np.int32 if key == "segmentation" else np.float32,
            encoding=tfds.features.Encoding.BYTES)
        for key in self._folders().values()}
    return tfds.core.DatasetInfo(
        builder=self, description=f"{self.DATASET} as preprocessed by MTAN.",
        features=tfds.features.FeaturesDict(features), homepage=self.SOURCE)

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
    root = pathlib.Path(dl_manager.manual_dir)
    indices = check_layout(root, tuple(self._folders()), self.layout(self.builder_config))
    return {split: self._generate_examples(root / _SPLIT_FOLDERS[split], idx)
            for split, idx in indices.items()}

  def _generate_examples(self, split_dir: pathlib.Path, indices: list[int]):
    cfg = self.builder_config
    for i in indices:
      yield i, read_example(split_dir, i, self._folders(), cfg.height, cfg.width,
                            cfg.num_classes)


def prepare(builder_cls: type[MtanBuilder], root: str | os.PathLike | None,
            config: MtanConfig, data_dir: str | os.PathLike | None) -> MtanBuilder:
  """Builds the array_record copy of ``root`` under ``data_dir`` if not there yet."""
  builder = builder_cls(data_dir=str(_pipeline.default_data_dir(data_dir)), config=config)
  if not builder.is_prepared():
    layout = builder_cls.layout(config)
    check_layout(root, ("image", config.label_folder) + builder_cls.FOLDERS, layout)
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  return builder


def select_split(builder: MtanBuilder, split: str, holdout_fraction: float) -> Any:
  """Random-access source of ``split``; ``train_fit``/``train_holdout`` carve train."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  if split in _SPLIT_FOLDERS:
    return builder.as_data_source(split=split)
  if not 0.0 < holdout_fraction < 1.0:
    raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}.")
  source = builder.as_data_source(split="train")
  order = np.random.default_rng(HOLDOUT_SEED).permutation(len(source))
  k = max(1, int(round(holdout_fraction * len(source))))
  chosen = order[:k] if split == "train_holdout" else order[k:]
  return _pipeline.Subset(source, np.sort(chosen))


_DTYPES = {"image": np.float32, "segmentation": np.int32, "depth": np.float32,
           "normal": np.float32}


def decode(example: dict[str, Any]) -> dict[str, np.ndarray]:
  """Casts a stored example to the batch dtypes."""
  return {k: np.asarray(v, dtype=_DTYPES[k]) for k, v in example.items()}


def load(builder_cls: type[MtanBuilder], root: str | os.PathLike | None, split: str,
         config: MtanConfig, *, batch_size: int, data_dir: str | os.PathLike | None,
         augment: bool, inverse_depth: bool, holdout_fraction: float,
         **pipeline_kwargs: Any) -> grain.IterDataset:
  """Prepares if needed, selects the split and returns the Grain pipeline."""
  builder = prepare(builder_cls, root, config, data_dir)
  source = select_split(builder, split, holdout_fraction)
  aug = (functools.partial(_augment.random_scale_crop_flip, inverse_depth=inverse_depth)
         if augment else None)
  return _pipeline.make_pipeline(source, batch_size=batch_size, decode=decode, augment=aug,
                                 **pipeline_kwargs)
