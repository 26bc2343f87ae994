"""Layers shared by the models: conv blocks, max-pool with indices, unpooling.

SegNet's decoder places each value back where the encoder's max-pool found it
(``max_unpool2d`` of PyTorch). JAX has no pooling-with-indices primitive, but
for the 2x2, stride-2 windows SegNet uses both are a reshape away, so the
implementation below is exact rather than approximate:

* :func:`max_pool_with_indices` views each 2x2 window as a length-4 axis and
  takes its ``argmax`` (the first maximum in row-major order, as PyTorch does)
  and the value there; gradients flow to that one position only, as in
  PyTorch, not split between ties (``jnp.max`` would split them).
* :func:`max_unpool` writes each value into a zero 2x2 window at its index.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# PyTorch's BatchNorm2d defaults: momentum 0.1 on the new value, eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def mark_features(module: nn.Module, name: str, x: jax.Array) -> jax.Array:
  """Marks ``x`` as shared features for the Jacobian's representation mode.

  ``module.perturb(name, x)`` adds a zero "perturbation" whose gradient is
  the gradient of ``x``, when the ``perturbations`` collection is given (the
  train step's ``JacobianOptions(mode="features")`` gives it); otherwise it is the
  identity. It is skipped during ``init``, so the model's variables keep
  only ``params`` (and ``batch_stats``), whatever the batch size.
  """
  if module.is_initializing():
    return x
  return module.perturb(name, x)


def batch_norm(train: bool, dtype: Dtype, name: str | None = None,
               scale_init=nn.initializers.ones) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults, float32 params and statistics."""
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPSILON, dtype=dtype,
                      param_dtype=jnp.float32, scale_init=scale_init,
                      name=name)


class ConvBNReLU(nn.Module):
  """``relu(batch_norm(conv(x)))``, the conv layer of SegNet and MTAN."""
  features: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    pad = self.kernel_size // 2
    x = nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                padding=((pad, pad), (pad, pad)), dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=nn.initializers.xavier_normal())(x)
    x = batch_norm(train, self.dtype)(x)
    return nn.relu(x)


class ConvStack(nn.Module):
  """``len(features)`` :class:`ConvBNReLU` layers in sequence."""
  features: Sequence[int]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for f in self.features:
      x = ConvBNReLU(f, dtype=self.dtype)(x, train)
    return x


def facing_camera(key: jax.Array, shape: Sequence[int],
                  dtype: Dtype = jnp.float32) -> jax.Array:
  """Bias init of a unit-normalised head: ``(0, ..., 0, 1)``, for normals
  (0, 0, 1), facing the camera.

  Not 0: where every input of the head is 0 (after a ReLU; a black image
  gives many such pixels), a zero bias makes the output 0, whose
  normalisation 0 / eps sends ~1/eps^2 = 1e24 back through it and the cosine
  loss, and Adam's second moment of this bias overflows to Inf at the first
  step (issue 14; the bias never moves again).
  """
  del key
  return jnp.zeros(shape, dtype).at[-1].set(1)


class DenseHead(nn.Module):
  """MTAN's prediction layer: 3x3 conv, then 1x1 conv to ``features``.

  The output is cast to float32; if ``unit_norm`` it is then divided by its
  L2 norm over channels (surface normals), and the 1x1 conv's bias starts
  at :func:`facing_camera` instead of 0.
  """
  features: int
  unit_norm: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.xavier_normal()
    bias_init = facing_camera if self.unit_norm else nn.initializers.zeros
    x = nn.Conv(x.shape[-1], (3, 3), padding=((1, 1), (1, 1)),
                dtype=self.dtype, param_dtype=jnp.float32, kernel_init=init)(x)
    x = nn.Conv(self.features, (1, 1), dtype=self.dtype,
                param_dtype=jnp.float32, kernel_init=init,
                bias_init=bias_init)(x)
    x = x.astype(jnp.float32)
    return unit_normalize(x) if self.unit_norm else x


def unit_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """``x / max(||x||_2, eps)`` over the last axis, with a finite gradient at 0."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def check_divisible(x: jax.Array, levels: int, model: str) -> None:
  """Raises a ValueError unless H and W are divisible by ``2**levels``."""
  h, w = x.shape[-3], x.shape[-2]
  if h % 2**levels or w % 2**levels:
    raise ValueError(
        f"{model} with {levels} pooling levels needs H and W divisible by "
        f"{2**levels}, got input shape {x.shape}.")


def _windows(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, H/2, W/2, C, 4), each 2x2 window in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, c, 4)


def max_pool_with_indices(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """2x2, stride-2 max-pool returning the values and their in-window indices.

  Args:
    x: (B, H, W, C) with H and W even.

  Returns:
    ``(pooled, indices)``, both (B, H/2, W/2, C); ``indices`` in {0, 1, 2, 3}
    is the row-major position of the maximum inside its window.
  """
  win = _windows(x)
  idx = jnp.argmax(win, axis=-1)
  pooled = jnp.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
  return pooled, idx


def max_unpool(x: jax.Array, indices: jax.Array) -> jax.Array:
  """Inverse of :func:`max_pool_with_indices`: zeros except at the indices.

  Args:
    x: (B, h, w, C) values.
    indices: (B, h, w, C) in {0, 1, 2, 3}, from :func:`max_pool_with_indices`.

  Returns:
    (B, 2h, 2w, C).
  """
  b, h, w, c = x.shape
  out = jax.nn.one_hot(indices, 4, dtype=x.dtype) * x[..., None]
  out = out.reshape(b, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
  return out.reshape(b, 2 * h, 2 * w, c)


def _align_corners_matrix(n: int) -> np.ndarray:
  """(2n, n) linear interpolation matrix, ``align_corners=True``."""
  m = np.zeros((2 * n, n), np.float32)
  if n == 1:
    m[:, 0] = 1.0
    return m
  src = np.arange(2 * n) * (n - 1) / (2 * n - 1)
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, n - 1)
  frac = (src - lo).astype(np.float32)
  m[np.arange(2 * n), lo] += 1.0 - frac
  m[np.arange(2 * n), hi] += frac
  return m


def upsample_bilinear_2x(x: jax.Array) -> jax.Array:
  """Doubles H and W by bilinear interpolation with ``align_corners=True``.

  Matches PyTorch's ``F.interpolate(x, scale_factor=2, mode='bilinear',
  align_corners=True)`` used by MTAN (``jax.image.resize`` uses half-pixel
  centres, i.e. ``align_corners=False``, which differs at the borders).
  """
  mh = jnp.asarray(_align_corners_matrix(x.shape[1]), x.dtype)
  mw = jnp.asarray(_align_corners_matrix(x.shape[2]), x.dtype)
  x = jnp.einsum("oh,bhwc->bowc", mh, x)
  return jnp.einsum("pw,bowc->bopc", mw, x)
