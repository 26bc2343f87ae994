"""Writers of tiny fixture datasets in the exact on-disk layouts (no binaries committed)."""
from __future__ import annotations

import pathlib

import numpy as np


def write_nyuv2(root: pathlib.Path, num_train: int = 5, num_val: int = 3,
                size: tuple[int, int] = (12, 16), seed: int = 0) -> pathlib.Path:
  """Writes MTAN's NYUv2 layout: image, label (-1 ignore), depth (0 invalid), normal."""
  h, w = size
  rng = np.random.default_rng(seed)
  for split, n in (("train", num_train), ("val", num_val)):
    for i in range(n):
      label = rng.integers(-1, 13, size=(h, w)).astype(np.float32)  # MTAN stores floats
      depth = rng.uniform(0.5, 10.0, size=(h, w, 1)).astype(np.float32)
      depth[rng.random((h, w)) < 0.1] = 0.0
      normal = rng.normal(size=(h, w, 3)).astype(np.float32)
      normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
      normal[rng.random((h, w)) < 0.1] = 0.0
      arrays = {"image": rng.random((h, w, 3), dtype=np.float32), "label": label,
                "depth": depth, "normal": normal}
      _save(root / split, i, arrays)
  return root


def write_cityscapes(root: pathlib.Path, num_train: int = 5, num_val: int = 3,
                     size: tuple[int, int] = (8, 16), seed: int = 0) -> pathlib.Path:
  """Writes MTAN's Cityscapes layout with label_2, label_7 and label_19."""
  h, w = size
  rng = np.random.default_rng(seed)
  for split, n in (("train", num_train), ("val", num_val)):
    for i in range(n):
      depth = rng.uniform(0.0, 0.1, size=(h, w, 1)).astype(np.float32)
      depth[rng.random((h, w)) < 0.1] = 0.0
      arrays = {"image": rng.random((h, w, 3), dtype=np.float32), "depth": depth}
      for c in (2, 7, 19):
        arrays[f"label_{c}"] = rng.integers(-1, c, size=(h, w)).astype(np.float32)
      _save(root / split, i, arrays)
  return root


def _save(split_dir: pathlib.Path, index: int, arrays: dict[str, np.ndarray]) -> None:
  for folder, x in arrays.items():
    (split_dir / folder).mkdir(parents=True, exist_ok=True)
    np.save(split_dir / folder / f"{index}.npy", x)
