"""A small conv encoder-decoder for 32x32 digit scenes, four task heads.

Shared trunk: a three-level U-Net-like encoder-decoder (conv-BN-ReLU blocks,
2x2 max-pool down, nearest-neighbour 2x up with skip concatenation). Heads:

* ``segmentation``: 1x1 conv to ``num_classes`` logits per pixel (11: the
  background and ten digits);
* ``depth``: 1x1 conv to one channel;
* ``normal``: 1x1 conv to three channels, divided by their L2 norm;
* ``count``: global average pool of the bottleneck, then a linear layer to
  ``num_count_classes`` logits (digits in the scene, 0..num_count_classes-1).

With the default widths (8, 16, 32) (about 15k parameters) a training step
on a batch of 32 takes about 30 ms on two CPU cores once compiled.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import _layers

Dtype = Any


def _upsample_nearest_2x(x: jax.Array) -> jax.Array:
  """Repeats every pixel 2x2."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class DigitSceneNet(nn.Module):
  """Shared conv encoder-decoder with segmentation, depth, normal, count heads.

  Attributes:
    num_classes: segmentation classes (11).
    num_count_classes: count classes (5: zero to four digits).
    widths: channels per level, top (full resolution) to bottom. H and W must
      be divisible by ``2**(len(widths) - 1)``.
    dtype: compute dtype; params and outputs are float32.

  ``__call__(x, train)`` maps (B, H, W, C) images to ``{"segmentation":
  (B, H, W, num_classes), "depth": (B, H, W, 1), "normal": (B, H, W, 3),
  "count": (B, num_count_classes)}``.

  For gradient-space methods: the task-specific parameters are the four
  ``head_*`` layers (:attr:`TASK_PARAMS`); the shared features (the decoder
  output and the pooled bottleneck) are marked for the representation mode.
  """
  TASK_PARAMS: ClassVar[tuple[str, ...]] = ("head_*",)
  num_classes: int = 11
  num_count_classes: int = 5
  widths: Sequence[int] = (8, 16, 32)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    _layers.check_divisible(x, len(self.widths) - 1, "DigitSceneNet")
    x = x.astype(self.dtype)
    skips = []
    for i, w in enumerate(self.widths):
      x = _layers.ConvBNReLU(w, dtype=self.dtype, name=f"enc_{i}")(x, train)
      if i < len(self.widths) - 1:
        skips.append(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    bottleneck = x
    for i in reversed(range(len(self.widths) - 1)):
      x = jnp.concatenate([_upsample_nearest_2x(x), skips[i]], axis=-1)
      x = _layers.ConvBNReLU(self.widths[i], dtype=self.dtype,
                             name=f"dec_{i}")(x, train)

    x = _layers.mark_features(self, "features", x)
    pooled = _layers.mark_features(self, "pooled_features",
                                   jnp.mean(bottleneck, axis=(1, 2)))

    def head(features: int, name: str, inp: jax.Array,
             bias_init=nn.initializers.zeros) -> jax.Array:
      return nn.Dense(features, dtype=self.dtype, param_dtype=jnp.float32,
                      bias_init=bias_init, name=name)(inp).astype(jnp.float32)

    # The normal head starts at (0, 0, 1), facing the camera (the background
    # plane's normal), not at 0: where every feature of a pixel is 0 after
    # the ReLU, a zero bias gives the normalisation 0 / eps, whose gradient
    # (~1/eps^2 through it and the cosine loss) overflowed Adam's second
    # moment of this bias to Inf at the first step and froze it.
    return {
        "segmentation": head(self.num_classes, "head_segmentation", x),
        "depth": head(1, "head_depth", x),
        "normal": _layers.unit_normalize(head(3, "head_normal", x,
                                              _layers.facing_camera)),
        "count": head(self.num_count_classes, "head_count", pooled),
    }
