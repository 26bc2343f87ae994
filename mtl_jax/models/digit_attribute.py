"""A small MLP for strips of three digits, one head per task.

Shared trunk: optional conv blocks (a 3x3 convolution, ReLU and 2x2 max-pool
each, ``widths``; none by default), the image flattened, then one Dense + ReLU
layer per entry of ``hidden``; the last one's output is the shared feature
vector :math:`h`. Heads: one ``Dense(n_k)`` per task, named ``head_<task>``
(n_k = 1 for a binary logit or a real number, 10 for a digit's class):

.. math::
  h = \\mathrm{ReLU}(W_2 \\, \\mathrm{ReLU}(W_1 x + b_1) + b_2), \\qquad
  z_k = v_k^\\top h + c_k,

where :math:`x \\in \\mathbb{R}^{192}` is the flattened 8x24 strip and
:math:`z_k` is task k's output (logits, or a regression's prediction; its
bias :math:`c_k` starts at ``output_offsets[k]``).

No BatchNorm: nothing depends on the batch, and ``train`` is unused (kept for
the models' common signature). With the defaults (hidden (128, 128), about
42k parameters) a training step of batch 64 takes under a millisecond on two
CPU cores once compiled; conv blocks make it several times slower on CPU.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import _layers

Dtype = Any


class DigitAttributeNet(nn.Module):
  """Shared MLP trunk (optionally after conv blocks) and one logit head per task.

  Attributes:
    tasks: task names; head ``head_<task>`` gives output ``<task>``.
    output_sizes: each task's output width, in ``tasks`` order (default all
      1): width 1 gives a (B,) output (a logit or a real number), width n > 1
      gives (B, n) logits (e.g. 10 for a digit's class).
    output_offsets: each head's initial bias, in ``tasks`` order (default all
      0); a regression head starting at its target's mean (e.g. 13.5 for a
      sum of three digits) need not spend steps moving there.
    hidden: widths of the shared Dense + ReLU layers.
    widths: channels of optional conv blocks before them (none by default);
      H and W must then be divisible by ``2**len(widths)``.
    dtype: compute dtype; params and outputs are float32.

  ``__call__(x, train)`` maps (B, H, W, C) images to ``{task: (B,) or
  (B, n) outputs}``.
  For gradient-space methods the ``head_*`` layers are task-specific
  (:attr:`TASK_PARAMS`); the last shared layer's output is marked as the
  shared features.
  """
  TASK_PARAMS: ClassVar[tuple[str, ...]] = ("head_*",)
  tasks: Sequence[str]
  output_sizes: Sequence[int] = ()
  output_offsets: Sequence[float] = ()
  hidden: Sequence[int] = (128, 128)
  widths: Sequence[int] = ()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    del train
    if not self.tasks or not self.hidden:
      raise ValueError("DigitAttributeNet needs at least one task and one hidden layer, "
                       f"got tasks={tuple(self.tasks)}, hidden={tuple(self.hidden)}.")
    tasks = tuple(self.tasks)
    sizes = tuple(self.output_sizes) or (1,) * len(tasks)
    offsets = tuple(self.output_offsets) or (0.0,) * len(tasks)
    if len(sizes) != len(tasks) or len(offsets) != len(tasks) or min(sizes) < 1:
      raise ValueError("DigitAttributeNet needs one output size >= 1 and one offset per "
                       f"task (or none), got tasks={tasks}, output_sizes={tuple(self.output_sizes)}, "
                       f"output_offsets={tuple(self.output_offsets)}.")
    x = x.astype(self.dtype)
    if self.widths:
      _layers.check_divisible(x, len(self.widths), "DigitAttributeNet")
    for i, w in enumerate(self.widths):
      x = nn.Conv(w, (3, 3), padding="SAME", dtype=self.dtype, param_dtype=jnp.float32,
                  name=f"conv_{i}")(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    for i, h in enumerate(self.hidden):
      x = nn.relu(nn.Dense(h, dtype=self.dtype, param_dtype=jnp.float32,
                           name=f"trunk_{i}")(x))
    x = _layers.mark_features(self, "features", x)
    out = {}
    for t, n, b in zip(tasks, sizes, offsets):
      z = nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32,
                   bias_init=nn.initializers.constant(b), name=f"head_{t}")(x)
      out[t] = (z[:, 0] if n == 1 else z).astype(jnp.float32)
    return out
