r"""GradNorm: learn the weights so that every task trains at the same rate.

.. math::

  w = K \operatorname{softmax}(s), \qquad d = J^\top \operatorname{sg}(w),
  \qquad
  \mathcal{L}_{\text{grad}}(s) = \sum_{i=1}^{K} \Big| w_i \lVert g_i \rVert
  - \operatorname{sg}\big(\overline{w \lVert g \rVert}\, r_i^{\alpha}\big)
  \Big|

Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient Normalization for
Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018,
https://arxiv.org/abs/1711.02257.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _checks
from mtl_jax.aggregation import _base
from mtl_jax.weighting._base import check_num_tasks

_INT32_MAX = 2**31 - 1


def gradnorm_weights(logits: jax.Array) -> jax.Array:
  r"""GradNorm's weights from its logits, differentiable in them.

  .. math::

    w = K \operatorname{softmax}(s)

  where :math:`s \in \mathbb{R}^K` are the learnable logits (LibMTL's
  ``loss_scale``, initialised to 1). The weights are positive and sum to
  :math:`K`.

  Args:
    logits: ``(K,)`` logits :math:`s`.

  Returns:
    ``(K,)`` weights summing to :math:`K` (differentiable in ``logits``).
  """
  if jnp.ndim(logits) != 1:
    raise ValueError(f"gradnorm_weights: logits must have shape (num_tasks,), "
                     f"got {jnp.shape(logits)}.")
  return logits.shape[0] * jax.nn.softmax(logits)


def gradnorm_loss(logits: jax.Array, gramian: jax.Array, losses: jax.Array,
                  initial_losses: jax.Array, alpha: float = 1.5) -> jax.Array:
  r"""GradNorm's balancing loss, whose gradient in the logits trains them.

  .. math::

    \mathcal{L}_{\text{grad}}(s) = \sum_{i=1}^{K} \Big| w_i \lVert g_i \rVert
    - \operatorname{sg}\Big(\frac{1}{K}\sum_{j=1}^{K} w_j \lVert g_j \rVert
      \cdot r_i^{\alpha}\Big) \Big|, \qquad
    r_i = \frac{\tilde L_i}{\frac{1}{K}\sum_j \tilde L_j}, \qquad
    \tilde L_i = \frac{L_i}{L_i(0)}

  where :math:`w = K \operatorname{softmax}(s)`, :math:`\lVert g_i \rVert =
  \sqrt{G_{ii}}` is the norm of task :math:`i`'s gradient in the shared
  parameters, :math:`L_i(0)` its reference loss, :math:`r_i` its relative
  inverse training rate and :math:`\alpha` the restoring force. The target
  is constant (``sg``): only :math:`w_i \lVert g_i \rVert` moves, so a task
  that trains slower than the others (:math:`r_i > 1`) gets its gradient
  norm pushed up. A task with :math:`L_i(0) = 0` counts as
  :math:`\tilde L_i = 1`, and :math:`r = 1` when every :math:`\tilde L_i`
  is 0 (guards against division by zero; LibMTL has none).

  Args:
    logits: ``(K,)`` logits :math:`s`.
    gramian: ``(K, K)`` Gramian :math:`G` (no gradient flows into it).
    losses: ``(K,)`` current losses :math:`L` (no gradient flows into them).
    initial_losses: ``(K,)`` reference losses :math:`L(0)`.
    alpha: :math:`\alpha` (paper and LibMTL: 1.5).

  Returns:
    The scalar :math:`\mathcal{L}_{\text{grad}}`, differentiable in
    ``logits`` only.
  """
  gramian = jax.lax.stop_gradient(gramian)
  dtype = jnp.result_type(gramian, logits)
  losses = jax.lax.stop_gradient(jnp.asarray(losses, dtype))
  initial = jax.lax.stop_gradient(jnp.asarray(initial_losses, dtype))
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0)).astype(dtype)
  scaled = gradnorm_weights(logits).astype(dtype) * norms   # w_i ||g_i||
  rate = jnp.where(initial > 0, losses / jnp.where(initial > 0, initial, 1.0),
                   1.0)
  mean_rate = jnp.mean(rate)
  ratio = jnp.where(mean_rate > 0,
                    rate / jnp.where(mean_rate > 0, mean_rate, 1.0), 1.0)
  target = jax.lax.stop_gradient(jnp.mean(scaled) * ratio ** alpha)
  return jnp.sum(jnp.abs(scaled - target))


class GradNormState(NamedTuple):
  initial_losses: jax.Array  # (K,) L(0); zeros until known
  loss_sum: jax.Array        # (K,) sum of epoch 0's losses (steps_per_epoch)
  count: jax.Array           # () int32 calls so far (saturates at 2^31 - 1)


def gradnorm(alpha: float = 1.5,
             steps_per_epoch: int | None = None) -> _base.Aggregator:
  r"""GradNorm as an :class:`~mtl_jax.aggregation.Aggregator` (LibMTL's form).

  The learnable parameters are ``{"logits": (K,)}``, initialised to 1 (LibMTL;
  all weights 1). ``apply(params, state, G, losses=L)`` returns the weights
  :math:`\operatorname{sg}(w)` for the shared parameters, ``head_weights``
  ``None`` (each head gets its own unweighted gradient, as LibMTL's K
  backward passes leave it) and ``aux_loss`` :func:`gradnorm_loss`, whose
  gradient the train step gives the logits so that the model's optimiser
  steps them.

  Two conventions for :math:`L(0)` (:class:`GradNormState`):

  * ``steps_per_epoch=None`` (the paper): :math:`L(0)` is the losses of the
    first call, and the first call already balances (:math:`r = 1` there);
  * ``steps_per_epoch=n`` (LibMTL): the first ``n`` calls (epoch 0) are a
    plain sum (weights 1, ``aux_loss`` 0) and :math:`L(0)` is the mean of
    their losses; balancing starts at call ``n + 1``.

  Args:
    alpha: the restoring force :math:`\alpha \ge 0` (paper and LibMTL: 1.5).
    steps_per_epoch: ``None``, or the number of calls in LibMTL's epoch 0.

  Returns:
    An ``Aggregator`` with parameters ``{"logits"}`` and a
    :class:`GradNormState`.

  Example:
    >>> method = gradnorm(alpha=1.5)
    >>> params, state = method.init(2)
    >>> out = method.apply(params, state, jnp.diag(jnp.array([4., 1.])),
    ...                    losses=jnp.array([1., 2.]))
    >>> out.weights  # all 1 at the start
    Array([1., 1.], dtype=float32)
    >>> out.aux_loss  # gradient norms 2 and 1, mean 1.5: |2 - 1.5| + |1 - 1.5|
    Array(1., dtype=float32)

  References:
    Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss
    Balancing in Deep Multitask Networks", ICML 2018,
    https://arxiv.org/abs/1711.02257.
  """
  _base.check_nonnegative(alpha, "alpha", "gradnorm",
                          "It is the restoring force (paper: 1.5).")
  if steps_per_epoch is not None:
    steps_per_epoch = _checks.integer(steps_per_epoch,
                                               "steps_per_epoch", "gradnorm", low=1)

  def init(num_tasks: int, *, key: jax.Array | None = None):
    del key
    num_tasks = check_num_tasks(num_tasks)
    params = {"logits": jnp.ones((num_tasks,), jnp.float32)}
    zeros = jnp.zeros((num_tasks,))
    return params, GradNormState(zeros, zeros, jnp.zeros((), jnp.int32))

  def apply(params, state, gramian, *, losses=None):
    num_tasks = state.initial_losses.shape[-1]
    _base.check_gramian(gramian, num_tasks, "gradnorm")
    losses = _base.require_losses(losses, num_tasks, "gradnorm")
    gramian = jax.lax.stop_gradient(gramian)
    dtype = _base.float_dtype(gramian)
    state_dtype = state.initial_losses.dtype
    count = state.count
    current = losses.astype(state_dtype)
    if steps_per_epoch is None:
      balancing = jnp.bool_(True)
      loss_sum = state.loss_sum
      initial = jnp.where(count == 0, current, state.initial_losses)
    else:
      balancing = count >= steps_per_epoch
      loss_sum = jnp.where(balancing, state.loss_sum, state.loss_sum + current)
      initial = jnp.where(count == steps_per_epoch - 1,
                          loss_sum / steps_per_epoch, state.initial_losses)
    # In epoch 0 the reference is the current losses (r = 1), so the unused
    # branch stays finite and no NaN leaks into the gradient of the logits.
    reference = jnp.where(balancing, initial, current)
    aux = gradnorm_loss(params["logits"], gramian, losses, reference, alpha)
    aux = jnp.where(balancing, aux, jnp.zeros_like(aux))
    weights = jnp.where(balancing, gradnorm_weights(params["logits"]), 1.0)
    weights = jax.lax.stop_gradient(weights.astype(dtype))
    new_state = GradNormState(
        initial.astype(state_dtype), loss_sum.astype(state_dtype),
        count + (count < _INT32_MAX).astype(count.dtype))
    return _base.GradientWeights(weights, new_state, aux_loss=aux)

  return _base.Aggregator(init, apply)
