"""MLP trunk for the GradNorm synthetic regression benchmark.

A ``depth``-layer ReLU trunk of width ``width`` shared by all tasks, then one
linear head per task:

.. math::
  h = \\mathrm{ReLU}(W_4 \\cdots \\mathrm{ReLU}(W_1 x + b_1) \\cdots + b_4),
  \\qquad \\hat y_k = V_k h + c_k,

where :math:`x \\in \\mathbb{R}^{250}`, :math:`h \\in \\mathbb{R}^{100}` and
:math:`\\hat y_k \\in \\mathbb{R}^{100}` for tasks :math:`k = 1..K`.

The K heads are one ``DenseGeneral`` with kernel (width, K, out): slice ``k``
is head ``k``'s own weights (nothing shared between heads). The output is
``{"y": (B, K, out)}``, matching the synthetic batch's ``"y"``.

Reference: Z. Chen, V. Badrinarayanan, C.-Y. Lee, A. Rabinovich, "GradNorm:
Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
Networks", ICML 2018, https://arxiv.org/abs/1711.02257.
"""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import _layers

Dtype = Any


class MLPTrunk(nn.Module):
  """Shared ReLU MLP trunk, one linear head per task.

  Attributes:
    num_tasks: number of tasks K.
    width: trunk width (100).
    depth: trunk layers, each Dense then ReLU (4).
    out_dim: outputs per task (100).
    dtype: compute dtype; params and outputs are float32.

  ``__call__(x, train)`` maps (B, 250) inputs to ``{"y": (B, K, out_dim)}``;
  ``train`` is unused (no dropout or BatchNorm) and kept for a uniform API.
  For gradient-space methods the ``heads`` layer is task-specific
  (:attr:`TASK_PARAMS`); the trunk's output is marked as the shared features.
  """
  TASK_PARAMS: ClassVar[tuple[str, ...]] = ("heads",)
  num_tasks: int
  width: int = 100
  depth: int = 4
  out_dim: int = 100
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False
               ) -> dict[str, jax.Array]:
    del train
    x = x.astype(self.dtype)
    for i in range(self.depth):
      x = nn.relu(nn.Dense(self.width, dtype=self.dtype,
                           param_dtype=jnp.float32, name=f"trunk_{i}")(x))
    x = _layers.mark_features(self, "features", x)
    y = nn.DenseGeneral((self.num_tasks, self.out_dim), dtype=self.dtype,
                        param_dtype=jnp.float32, name="heads")(x)
    return {"y": y.astype(jnp.float32)}
