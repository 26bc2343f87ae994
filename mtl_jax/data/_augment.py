"""Dense augmentation of MTAN-style examples: random scale-crop and flip.

As in MTAN and the papers that reuse its data (LibMTL, Nash-MTL, FAMO):
a crop of ``1 / s`` of the image, ``s`` drawn from ``{1, 1.2, 1.5}``, is
resized back to full size, and a horizontal flip is applied with probability
1/2. Zooming in by ``s`` is what moving the camera ``s`` times closer looks
like, so depth is divided by ``s`` (inverse depth is multiplied by ``s``);
flipping mirrors the surface normals, so their x component changes sign.

Examples are dicts with ``image`` (H, W, C) and any of ``segmentation``
(H, W), ``depth`` (H, W, 1) and ``normal`` (H, W, 3). The image is resized
bilinearly; labels, depth and normals with nearest neighbour, so that the
ignore label -1, the invalid depth 0 and the invalid zero normal stay exact.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Example = dict[str, np.ndarray]
SCALES = (1.0, 1.2, 1.5)


def _nearest_index(crop: int, out: int) -> np.ndarray:
  """Source indices of an align-corners nearest resize from ``crop`` to ``out``."""
  if out == 1:
    return np.zeros(1, np.int64)
  return np.rint(np.linspace(0.0, crop - 1.0, out)).astype(np.int64)


def _bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """Align-corners bilinear resize of (h, w, c) to (out_h, out_w, c)."""

  def axis(n: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.linspace(0.0, n - 1.0, out) if out > 1 else np.zeros(1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, max(n - 2, 0))
    return lo, (pos - lo).astype(x.dtype)

  (y0, fy), (x0, fx) = axis(x.shape[0], out_h), axis(x.shape[1], out_w)
  y1 = np.minimum(y0 + 1, x.shape[0] - 1)
  x1 = np.minimum(x0 + 1, x.shape[1] - 1)
  rows = x[y0] * (1 - fy)[:, None, None] + x[y1] * fy[:, None, None]
  return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def scale_crop(example: Example, scale: float, top: int, left: int,
               inverse_depth: bool = False) -> Example:
  """Crops ``1/scale`` of the image at (top, left) and resizes it back.

  Args:
    example: dense example (see the module docstring).
    scale: zoom factor >= 1.
    top: first row of the crop, in ``[0, H - round(H / scale)]``.
    left: first column of the crop, in ``[0, W - round(W / scale)]``.
    inverse_depth: ``depth`` holds inverse depth (Cityscapes disparity), so it
      is multiplied by ``scale`` instead of divided.

  Returns:
    A new example of the same shapes and dtypes.
  """
  h, w = example["image"].shape[:2]
  ch, cw = int(round(h / scale)), int(round(w / scale))
  if not (0 <= top <= h - ch and 0 <= left <= w - cw):
    raise ValueError(f"Crop ({top}, {left}) of size {(ch, cw)} does not fit in {(h, w)}.")
  rows = top + _nearest_index(ch, h)
  cols = left + _nearest_index(cw, w)
  out = dict(example)
  out["image"] = _bilinear(example["image"][top:top + ch, left:left + cw], h, w)
  for key in ("segmentation", "depth", "normal"):
    if key in example:
      out[key] = example[key][rows[:, None], cols[None, :]]
  if "depth" in out:
    factor = scale if inverse_depth else 1.0 / scale
    out["depth"] = (out["depth"] * factor).astype(example["depth"].dtype)
  return out


def hflip(example: Example) -> Example:
  """Mirrors left-right; the normals' x component changes sign."""
  out = {k: (v[:, ::-1].copy() if k in _DENSE_KEYS else v) for k, v in example.items()}
  if "normal" in out:
    out["normal"][..., 0] *= -1
  return out


_DENSE_KEYS = ("image", "segmentation", "depth", "normal")


def random_scale_crop_flip(example: Example, rng: np.random.Generator,
                           scales: Sequence[float] = SCALES,
                           inverse_depth: bool = False) -> Example:
  """Random scale-crop (uniform over ``scales``), then a flip with probability 1/2."""
  h, w = example["image"].shape[:2]
  scale = float(scales[rng.integers(len(scales))])
  ch, cw = int(round(h / scale)), int(round(w / scale))
  top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
  out = scale_crop(example, scale, top, left, inverse_depth=inverse_depth)
  return hflip(out) if rng.random() < 0.5 else out
