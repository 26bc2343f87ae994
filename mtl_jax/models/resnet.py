"""ResNet-18 trunk with one linear head per CelebA attribute.

The torchvision ResNet-18 layout (7x7 stride-2 stem, 3x3 stride-2 max-pool,
four stages of two basic blocks with 64, 128, 256, 512 channels, global
average pooling) followed by ``num_attributes`` linear heads, one logit each.

The heads are stored as a single ``Dense(num_attributes)``: column ``k`` of its
kernel and entry ``k`` of its bias are head ``k``'s weights, so this is exactly
40 independent linear heads (no parameter is shared between attributes), in
one matmul. The output is ``{"attributes": (B, 40)}`` float32 logits; the
method sees 40 tasks through
:func:`mtl_jax.losses.celeba_losses`, which returns one BCE per attribute.

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016, https://arxiv.org/abs/1512.03385.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import _layers

Dtype = Any


def _conv(features: int, kernel: int, stride: int, dtype: Dtype,
          name: str | None = None) -> nn.Conv:
  """Bias-free conv with PyTorch's symmetric padding ``kernel // 2``."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=nn.initializers.kaiming_normal(), name=name)


class BasicBlock(nn.Module):
  """``relu(x' + BN(conv(relu(BN(conv(x))))))``, ``x'`` a projected shortcut."""
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = _conv(self.features, 3, self.stride, self.dtype)(x)
    y = nn.relu(_layers.batch_norm(train, self.dtype)(y))
    y = _conv(self.features, 3, 1, self.dtype)(y)
    y = _layers.batch_norm(train, self.dtype)(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.stride, self.dtype,
                name="shortcut_conv")(x)
      x = _layers.batch_norm(train, self.dtype, name="shortcut_bn")(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet-18 shared trunk and ``num_attributes`` linear heads.

  Attributes:
    num_attributes: number of binary attributes (tasks), 40 for CelebA.
    width: channels of the first stage (64 in ResNet-18); stages use
      ``width * (1, 2, 4, 8)``. A small width gives a fast test model.
    stage_sizes: basic blocks per stage, (2, 2, 2, 2) for ResNet-18.
    dtype: compute dtype; params and logits are float32.

  ``__call__(x, train)`` maps (B, H, W, 3) images to
  ``{"attributes": (B, num_attributes)}`` logits.

  For gradient-space methods the ``heads`` layer (one column per attribute,
  so each column gets its own task's gradient) is task-specific
  (:attr:`TASK_PARAMS`); the pooled features are marked as shared.
  """
  TASK_PARAMS: ClassVar[tuple[str, ...]] = ("heads",)
  num_attributes: int = 40
  width: int = 64
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    x = x.astype(self.dtype)
    x = _conv(self.width, 7, 2, self.dtype, name="stem_conv")(x)
    x = nn.relu(_layers.batch_norm(train, self.dtype, name="stem_bn")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        stride = 2 if i > 0 and b == 0 else 1
        x = BasicBlock(self.width * 2**i, stride, dtype=self.dtype,
                       name=f"stage{i}_block{b}")(x, train)
    features = _layers.mark_features(self, "features", jnp.mean(x, axis=(1, 2)))
    logits = nn.Dense(self.num_attributes, dtype=self.dtype,
                      param_dtype=jnp.float32, name="heads")(features)
    return {"attributes": logits.astype(jnp.float32)}
