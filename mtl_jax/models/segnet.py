"""SegNet with hard parameter sharing: one shared encoder-decoder, one head per task.

The multi-task SegNet of MTAN (Liu et al., CVPR 2019, "split, standard") and
LibMTL: a VGG-16-style encoder (conv-BN-ReLU blocks of 2, 2, 3, 3, 3 layers
with channels 64, 128, 256, 512, 512, each followed by a 2x2 max-pool that
keeps its indices) and a mirrored decoder that max-unpools with those indices.
Each task gets MTAN's prediction layer (3x3 conv, then 1x1 conv) on the
64-channel full-resolution features.

Max-pooling with indices and unpooling are exact (see ``_layers``), not an
approximation. The conv kernels use Xavier-normal init, as MTAN does.

Reference: S. Liu, E. Johns, A. J. Davison, "End-to-End Multi-Task Learning
with Attention", CVPR 2019, https://arxiv.org/abs/1803.10704;
V. Badrinarayanan, A. Kendall, R. Cipolla, "SegNet", TPAMI 2017,
https://arxiv.org/abs/1511.00561.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import _layers

Dtype = Any

# (task name, output channels); "normal" outputs are unit-normalised.
NYUV2_HEADS = (("segmentation", 13), ("depth", 1), ("normal", 3))
CITYSCAPES_HEADS = (("segmentation", 7), ("depth", 1))
SEGNET_FILTERS = (64, 128, 256, 512, 512)


class SegNetFeatures(NamedTuple):
  """Intermediate features of :class:`SegNetBackbone`, used by MTAN.

  Level ``i`` runs at resolution H / 2**i; decoder step ``j`` works at level
  ``L - 1 - j``.
  """
  enc_first: list[jax.Array]  # per level: output of its first conv layer
  enc_last: list[jax.Array]   # per level: output of its last conv layer
  dec_input: list[jax.Array]  # per decoder step: the unpooled input
  dec_last: list[jax.Array]   # per decoder step: output of its last conv


def _enc_block_sizes(filters: Sequence[int]) -> list[tuple[int, ...]]:
  """Conv widths after the first conv of each encoder level (VGG-16 layout)."""
  return [(f,) if i < 2 else (f, f) for i, f in enumerate(filters)]


def _dec_block_sizes(filters: Sequence[int]) -> list[tuple[int, ...]]:
  """(first conv, rest) widths of each decoder level, mirroring the encoder."""
  out = []
  for i in range(len(filters)):
    f_out = filters[max(i - 1, 0)]
    out.append((f_out, (f_out,) if i < 2 else (f_out, f_out)))
  return out


class SegNetBackbone(nn.Module):
  """The shared SegNet encoder-decoder; returns all intermediate features."""
  filters: Sequence[int] = SEGNET_FILTERS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> SegNetFeatures:
    levels = len(self.filters)
    _layers.check_divisible(x, levels, "SegNet")
    x = x.astype(self.dtype)
    enc_first, enc_last, indices = [], [], []
    for i, (f, rest) in enumerate(zip(self.filters,
                                      _enc_block_sizes(self.filters))):
      g0 = _layers.ConvBNReLU(f, dtype=self.dtype,
                              name=f"encoder_block_{i}")(x, train)
      g1 = _layers.ConvStack(rest, dtype=self.dtype,
                             name=f"conv_block_enc_{i}")(g0, train)
      x, idx = _layers.max_pool_with_indices(g1)
      enc_first.append(g0)
      enc_last.append(g1)
      indices.append(idx)
    dec_input, dec_last = [], []
    dec_sizes = _dec_block_sizes(self.filters)
    for j in range(levels):
      k = levels - 1 - j
      up = _layers.max_unpool(x, indices[k])
      first, rest = dec_sizes[k]
      d0 = _layers.ConvBNReLU(first, dtype=self.dtype,
                              name=f"decoder_block_{k}")(up, train)
      x = _layers.ConvStack(rest, dtype=self.dtype,
                            name=f"conv_block_dec_{k}")(d0, train)
      dec_input.append(up)
      dec_last.append(x)
    return SegNetFeatures(enc_first, enc_last, dec_input, dec_last)


class SegNet(nn.Module):
  """Multi-task SegNet: shared :class:`SegNetBackbone`, one head per task.

  Attributes:
    heads: ``((task, channels), ...)``; defaults to NYUv2 (segmentation 13
      classes, depth 1, normal 3). Use :data:`CITYSCAPES_HEADS` for Cityscapes.
    filters: channels per level (default VGG-16's 64..512). Its length is the
      number of pooling levels, so H and W must be divisible by
      ``2**len(filters)``; ``(8, 16, 16)`` makes a tiny model for tests.
    unit_norm_tasks: tasks whose output is divided by its L2 norm; their
      head's last bias starts at (0, ..., 0, 1), not 0 (see
      ``facing_camera`` in ``mtl_jax/models/_layers.py``).
    dtype: compute dtype (e.g. ``jnp.bfloat16``); params stay float32 and
      outputs are float32.

  ``__call__(x, train)`` maps images (B, H, W, 3) to ``{task: (B, H, W, c)}``:
  logits for segmentation, raw values for depth, unit vectors for normals.
  The model has BatchNorm: initialise and apply with ``batch_stats``.
  For gradient-space methods the ``head_*`` layers are task-specific
  (:attr:`TASK_PARAMS`) and the backbone's output is marked as the shared
  features.
  """
  TASK_PARAMS: ClassVar[tuple[str, ...]] = ("head_*",)
  heads: Sequence[tuple[str, int]] = NYUV2_HEADS
  filters: Sequence[int] = SEGNET_FILTERS
  unit_norm_tasks: Sequence[str] = ("normal",)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    feats = SegNetBackbone(self.filters, dtype=self.dtype,
                           name="backbone")(x, train)
    shared = _layers.mark_features(self, "features", feats.dec_last[-1])
    return {
        task: _layers.DenseHead(c, unit_norm=task in self.unit_norm_tasks,
                                dtype=self.dtype, name=f"head_{task}")(shared)
        for task, c in self.heads
    }
