"""MTAN: SegNet with task-specific soft-attention modules over shared features.

Each task ``t`` owns one attention module per encoder and decoder level. At
encoder level ``j`` it computes a mask from the shared block's first conv
output (concatenated with its own previous level's features)

.. math::
  a^t_j = \\sigma(\\mathrm{BN}(W_2 * \\mathrm{ReLU}(\\mathrm{BN}(W_1 *
          [u_j; \\hat a^t_{j-1}]))))

and gates the shared block's last conv output, :math:`\\hat a^t_j =
\\mathrm{pool}(f_j(a^t_j \\odot p_j))`, where

* :math:`u_j, p_j` are the shared first and last conv outputs of level ``j``,
* :math:`W_1, W_2` are the task's 1x1 convs, :math:`\\sigma` the sigmoid,
* :math:`f_j` is a 3x3 conv-BN-ReLU shared by all tasks (MTAN's
  ``encoder_block_att``), pool a 2x2 max-pool.

The decoder mirrors this: bilinear 2x upsampling (``align_corners=True``), a
shared conv, concatenation with the shared unpooled input, the task's
attention mask, and gating of the shared decoder output. Each task's head
(3x3 conv, 1x1 conv) reads its own gated full-resolution features.

Reference: S. Liu, E. Johns, A. J. Davison, "End-to-End Multi-Task Learning
with Attention", CVPR 2019, https://arxiv.org/abs/1803.10704.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import _layers
from mtl_jax.models.segnet import NYUV2_HEADS, SEGNET_FILTERS, SegNetBackbone

Dtype = Any


class AttentionMask(nn.Module):
  """``sigmoid(BN(conv1x1(ReLU(BN(conv1x1(x))))))`` with ``features`` channels."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = _layers.ConvBNReLU(self.features, kernel_size=1, dtype=self.dtype)(
        x, train)
    x = nn.Conv(self.features, (1, 1), dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=nn.initializers.xavier_normal())(x)
    return nn.sigmoid(_layers.batch_norm(train, self.dtype)(x))


class MTAN(nn.Module):
  """Multi-Task Attention Network over a shared SegNet.

  Attributes:
    heads: ``((task, channels), ...)``, as for :class:`SegNet`.
    filters: channels per level, as for :class:`SegNet`.
    unit_norm_tasks: tasks whose output is divided by its L2 norm; their
      head's last bias starts at (0, ..., 0, 1), not 0 (see
      ``facing_camera`` in ``mtl_jax/models/_layers.py``).
    dtype: compute dtype; params and outputs are float32.

  ``__call__(x, train)`` returns ``{task: (B, H, W, c)}`` like SegNet.

  For gradient-space methods each task's attention modules and head are
  task-specific (:attr:`TASK_PARAMS`); the backbone's features that the
  attention branches read are marked as the shared features.
  """
  TASK_PARAMS: ClassVar[tuple[str, ...]] = (
      "head_*", "*_encoder_att_*", "*_decoder_att_*")
  heads: Sequence[tuple[str, int]] = NYUV2_HEADS
  filters: Sequence[int] = SEGNET_FILTERS
  unit_norm_tasks: Sequence[str] = ("normal",)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    f = list(self.filters)
    levels = len(f)
    feats = SegNetBackbone(self.filters, dtype=self.dtype,
                           name="backbone")(x, train)
    feats = type(feats)(*[
        [_layers.mark_features(self, f"{field}_{i}", v)
         for i, v in enumerate(values)]
        for field, values in zip(feats._fields, feats)])
    # Shared convs of the attention branches (MTAN's *_block_att).
    enc_att_conv = [
        _layers.ConvBNReLU(f[min(j + 1, levels - 1)], dtype=self.dtype,
                           name=f"encoder_block_att_{j}")
        for j in range(levels)]
    dec_att_conv = [
        _layers.ConvBNReLU(f[levels - 1] if k == levels - 1
                           else f[max(k - 1, 0)], dtype=self.dtype,
                           name=f"decoder_block_att_{k}")
        for k in range(levels)]
    outputs = {}
    for task, channels in self.heads:
      a = None
      for j in range(levels):
        u = feats.enc_first[j]
        inp = u if a is None else jnp.concatenate([u, a], axis=-1)
        mask = AttentionMask(f[j], dtype=self.dtype,
                             name=f"{task}_encoder_att_{j}")(inp, train)
        a = enc_att_conv[j](mask * feats.enc_last[j], train)
        a = nn.max_pool(a, (2, 2), strides=(2, 2))
      for j in range(levels):
        k = levels - 1 - j
        a = dec_att_conv[k](_layers.upsample_bilinear_2x(a), train)
        inp = jnp.concatenate([feats.dec_input[j], a], axis=-1)
        mask = AttentionMask(f[max(k - 1, 0)], dtype=self.dtype,
                             name=f"{task}_decoder_att_{k}")(inp, train)
        a = mask * feats.dec_last[j]
      outputs[task] = _layers.DenseHead(
          channels, unit_norm=task in self.unit_norm_tasks, dtype=self.dtype,
          name=f"head_{task}")(a)
    return outputs
