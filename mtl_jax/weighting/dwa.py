r"""DWA: Dynamic Weight Average.

.. math::

  w_k(t) = K\,\frac{\exp(r_k(t-1) / T)}{\sum_{i=1}^{K} \exp(r_i(t-1) / T)},
  \qquad r_k(t-1) = \frac{\bar L_k(t-1)}{\bar L_k(t-2)}

Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019, https://arxiv.org/abs/1803.10704.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting import _base


def dwa_weights(prev_losses: jax.Array, prev_prev_losses: jax.Array,
                temperature: float = 2.0) -> jax.Array:
  r"""DWA's weights from the average losses of the last two epochs.

  .. math::

    w_k = K \, \mathrm{softmax}_k\!\left(
        \frac{\bar L_k(t-1)}{T\,\bar L_k(t-2)}\right)

  where :math:`\bar L_k(t)` is the mean training loss of task :math:`k` over
  epoch :math:`t`, :math:`K` the number of tasks and :math:`T` the
  temperature. A task whose loss fell slowly gets more weight. The weights
  sum to :math:`K`.

  Args:
    prev_losses: ``(..., K)`` mean losses of epoch :math:`t-1`.
    prev_prev_losses: ``(..., K)`` mean losses of epoch :math:`t-2`.
    temperature: :math:`T > 0`; the paper uses 2.

  Returns:
    ``(..., K)`` weights with no gradient attached.

  References:
    Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019, https://arxiv.org/abs/1803.10704.
  """
  ratio = jax.lax.stop_gradient(prev_losses / prev_prev_losses)
  num_tasks = jnp.shape(ratio)[-1]
  return num_tasks * jax.nn.softmax(ratio / temperature, axis=-1)


class DWAState(NamedTuple):
  step: jax.Array       # () int32, steps taken so far
  loss_sum: jax.Array   # (K,) sum of the losses seen in the current epoch
  prev: jax.Array       # (K,) mean losses of the last finished epoch
  prev_prev: jax.Array  # (K,) mean losses of the epoch before that


def dwa(temperature: float = 2.0, *,
        steps_per_epoch: int | None = None) -> _base.Weighting:
  """DWA as a :class:`~mtl_jax.weighting.Weighting`, tracking epochs itself.

  The state counts steps and sums the (stop-gradient) losses of the current
  epoch. At the first step of each epoch the sum becomes the epoch mean; for
  the first two epochs every weight is 1 (as in the paper), then
  :func:`dwa_weights` of the last two epoch means. All of it runs on device
  with no host control flow, so the method can be jitted and pmapped. In a
  data-parallel step pass the globally averaged losses (as
  :func:`mtl_jax.train.make_train_step` does) so every device keeps the same
  state.

  Args:
    temperature: :math:`T > 0`; the paper uses 2.
    steps_per_epoch: number of ``apply`` calls in one epoch (required).
  """
  _base.check_temperature(temperature, "dwa")
  if (steps_per_epoch is None or isinstance(steps_per_epoch, bool)
      or not isinstance(steps_per_epoch, numbers.Integral)
      or steps_per_epoch < 1):
    raise ValueError(
        "dwa needs steps_per_epoch, a positive int (the number of train steps "
        f"in one epoch), got {steps_per_epoch!r}; e.g. "
        "get('dwa', steps_per_epoch=len(train_loader)).")
  steps_per_epoch = int(steps_per_epoch)

  def init_state(num_tasks: int, key) -> DWAState:
    del key
    # The default float dtype: float32, or float64 under jax_enable_x64, so
    # that float64 losses keep float64 precision through the epoch means.
    # Three distinct buffers, so that a jitted step may donate the state.
    zeros = lambda: jnp.zeros((num_tasks,))
    return DWAState(jnp.zeros((), jnp.int32), zeros(), zeros(), zeros())

  def weights_fn(params, state: DWAState, losses):
    del params
    _base.check_losses_shape(losses, state.loss_sum.shape[0], "dwa")
    boundary = (state.step > 0) & (state.step % steps_per_epoch == 0)
    prev_prev = jnp.where(boundary, state.prev, state.prev_prev)
    prev = jnp.where(boundary, state.loss_sum / steps_per_epoch, state.prev)
    loss_sum = jnp.where(boundary, 0.0, state.loss_sum)
    epoch = state.step // steps_per_epoch
    # Before epoch 2 the denominator is still 0: guard it, the value is unused.
    safe_prev_prev = jnp.where(epoch >= 2, prev_prev, 1.0)
    weights = jnp.where(epoch >= 2,
                        dwa_weights(prev, safe_prev_prev, temperature),
                        jnp.ones_like(prev))
    loss_sum = loss_sum + jax.lax.stop_gradient(losses).astype(loss_sum.dtype)
    return weights, DWAState(state.step + 1, loss_sum, prev, prev_prev)

  return _base.fixed_weighting(
      weights_fn, init_state, "dwa",
      num_tasks_of=lambda state: state.loss_sum.shape[-1])
