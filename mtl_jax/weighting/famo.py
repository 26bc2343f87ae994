r"""FAMO: Fast Adaptive Multitask Optimization.

.. math::

  \mathcal{L} = c \sum_{k=1}^{K} z_k \log \tilde L_k, \qquad
  z = \mathrm{softmax}(\xi), \qquad
  c = \mathrm{sg}\Big(1 \Big/ \sum_{k=1}^{K} z_k / \tilde L_k\Big), \qquad
  \tilde L_k = L_k - b_k + 10^{-8}

and, after each model update, one Adam step on the logits :math:`\xi` along
:math:`(\partial z / \partial \xi)^\top (\log \tilde L^{\text{before}} -
\log \tilde L^{\text{after}})`.

Liu, Liang, Stone, Liu, "FAMO: Fast Adaptive Multitask Optimization",
NeurIPS 2023, https://arxiv.org/abs/2306.03792.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax import _checks
from mtl_jax.weighting import _base

_EPS = 1e-8  # added to every shifted loss before the log, as the paper's code


def _shifted(losses: jax.Array, min_losses: jax.Array | None) -> jax.Array:
  """``L - b + 1e-8`` in the dtype of the losses."""
  if min_losses is not None:
    losses = losses - jnp.asarray(min_losses).astype(jnp.result_type(losses))
  return losses + _EPS


def famo_weights(losses: jax.Array, logits: jax.Array,
                 min_losses: jax.Array | None = None) -> jax.Array:
  r"""FAMO's effective task weights, :math:`d\mathcal{L} / dL`.

  .. math::

    w_k = \frac{z_k / \tilde L_k}{\sum_{i=1}^{K} z_i / \tilde L_i}

  where :math:`z = \mathrm{softmax}(\xi)` and :math:`\tilde L_k = L_k - b_k +
  10^{-8}`. The weights lie on the simplex: FAMO's step is a convex
  combination of the task gradients, each divided by its loss.

  Args:
    losses: ``(..., K)`` per-task losses, above ``min_losses``.
    logits: ``(K,)`` (or broadcastable) logits :math:`\xi`.
    min_losses: ``(K,)`` lower bounds :math:`b` of the losses; ``None``: 0.

  Returns:
    ``(..., K)`` weights summing to 1, with no gradient attached.
  """
  dtype = jnp.result_type(losses)
  shifted = jax.lax.stop_gradient(_shifted(losses, min_losses))
  z = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(dtype), axis=-1)
  ratio = z / shifted
  return ratio / jnp.sum(ratio, axis=-1, keepdims=True)


def famo_loss(losses: jax.Array, logits: jax.Array,
              min_losses: jax.Array | None = None) -> jax.Array:
  r"""FAMO's total loss for fixed logits.

  .. math::

    \mathcal{L} = c \sum_{k=1}^{K} z_k \log \tilde L_k, \qquad
    c = \mathrm{sg}\Big(1 \Big/ \sum_{k=1}^{K} z_k / \tilde L_k\Big)

  where :math:`z = \mathrm{softmax}(\xi)` is held constant (the logits get
  no gradient here; :func:`famo`'s ``after_update`` trains them),
  :math:`\tilde L_k = L_k - b_k + 10^{-8}` and :math:`\mathrm{sg}` is the
  stop-gradient. Its gradient in :math:`L_k` is :func:`famo_weights`. A loss
  at or below its bound gives NaN (the log of a non-positive number); it is
  not clamped.

  Args:
    losses: ``(..., K)`` per-task losses, above ``min_losses``.
    logits: ``(K,)`` (or broadcastable) logits :math:`\xi`.
    min_losses: ``(K,)`` lower bounds :math:`b` of the losses; ``None``: 0.

  Returns:
    ``(...)`` the total, differentiable in ``losses``.

  Example:
    >>> famo_loss(jnp.array([1.0, 2.0]), jnp.zeros(2))
    Array(0.4621, dtype=float32)

  References:
    Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023,
    https://arxiv.org/abs/2306.03792.
  """
  dtype = jnp.result_type(losses)
  shifted = _shifted(losses, min_losses)
  z = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(dtype), axis=-1)
  c = jax.lax.stop_gradient(
      1.0 / jnp.sum(z / shifted, axis=-1, keepdims=True))
  return jnp.sum(c * z * jnp.log(shifted), axis=-1)


class FAMOState(NamedTuple):
  logits: jax.Array            # (K,) the logits xi of the task weights
  opt_state: optax.OptState    # the logits' optimiser state (Adam's moments)


def famo(lr: float = 0.025, weight_decay: float = 1e-3, *,
         min_losses: Sequence[float] | None = None) -> _base.Weighting:
  r"""FAMO as a :class:`~mtl_jax.weighting.Weighting` with ``after_update``.

  ``apply`` returns :func:`famo_loss` and :func:`famo_weights` at the current
  logits and leaves the state unchanged. ``after_update(params, state,
  losses_before, losses_after)`` then learns from the step just taken: with

  .. math::

    \delta_k = \log \tilde L_k^{\text{before}} - \log \tilde L_k^{\text{after}}

  (how much task :math:`k` improved, in log space, on the same batch), the
  gradient on the logits is the softmax VJP :math:`(\partial z / \partial
  \xi)^\top \delta`, and one step of Adam with coupled L2 weight decay
  (``optax.add_decayed_weights`` then ``optax.adam``, which is
  ``torch.optim.Adam(lr, weight_decay)``: same ``eps = 1e-8``, added outside
  the square root) descends it. A task that improved more than the others
  loses weight.

  **Cost.** One extra forward pass per step, no backward:
  :func:`mtl_jax.train.make_train_step` recomputes the losses of the same
  batch at the updated parameters whenever ``after_update`` is set.

  **Anchors.** TorchJD's ``FAMO`` (``lr=0.025, weight_decay=1e-3``) and
  LibMTL (``FAMO_w_lr=0.025, FAMO_w_gamma=1e-3``) use the defaults here. The
  official repository varies the decay :math:`\gamma` (0.01 in ``famo.py``,
  1e-5 in ``methods/weight_methods.py``; its ``run.sh`` uses 1e-3 for NYUv2,
  CelebA and QM9, 1e-2 for Cityscapes, 0 for the toy problem) and clips the
  shared gradient to norm 1.0; we do not clip (add ``optax.clip_by_global_norm``
  to the model optimiser for that).

  Args:
    lr: Adam's learning rate for the logits (0.025 in TorchJD and LibMTL).
    weight_decay: coupled L2 decay :math:`\gamma \ge 0` of the logits (1e-3).
    min_losses: ``(K,)`` lower bounds :math:`b` of the losses (``None``: 0).

  Returns:
    A ``Weighting`` with no learnable parameters (the logits are trained by
    ``after_update``, not by the model's optimiser) and a :class:`FAMOState`.

  References:
    Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023,
    https://arxiv.org/abs/2306.03792.
  """
  _checks.number(lr, "lr", "famo", low=0, low_open=True,
                 hint="It is Adam's step size for the logits; the paper's "
                 "code and TorchJD use 0.025.")
  _checks.number(weight_decay, "weight_decay", "famo", low=0,
                 hint="TorchJD and LibMTL use 1e-3.")
  if min_losses is not None:
    _checks.vector(min_losses, "min_losses", "famo",
                   hint="It is the lower bound b_k of each task loss "
                   "(None: 0).")
    min_losses = tuple(float(b) for b in min_losses)
  tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))

  def init(num_tasks: int, *, key: jax.Array | None = None):
    del key
    num_tasks = _base.check_num_tasks(num_tasks)
    if min_losses is not None:
      _checks.vector(min_losses, "min_losses", "famo", num_tasks=num_tasks)
    # The default float dtype, as DWA's state: float32, or float64 with x64.
    logits = jnp.zeros((num_tasks,))
    return {}, FAMOState(logits, tx.init(logits))

  def apply(params, state: FAMOState, losses):
    del params
    _base.check_losses_shape(losses, state.logits.shape[0], "famo")
    total = famo_loss(losses, state.logits, min_losses)
    weights = famo_weights(losses, state.logits, min_losses)
    return _base.WeightedLoss(total, weights, state)

  def after_update(params, state: FAMOState, losses_before, losses_after):
    del params
    num_tasks = state.logits.shape[0]
    _base.check_losses_shape(losses_before, num_tasks, "famo")
    _base.check_losses_shape(losses_after, num_tasks, "famo")
    dtype = state.logits.dtype
    delta = (jnp.log(_shifted(losses_before.astype(dtype), min_losses))
             - jnp.log(_shifted(losses_after.astype(dtype), min_losses)))
    _, softmax_vjp = jax.vjp(jax.nn.softmax, state.logits)
    (grad,) = softmax_vjp(jax.lax.stop_gradient(delta))
    updates, opt_state = tx.update(grad, state.opt_state, state.logits)
    return FAMOState(optax.apply_updates(state.logits, updates), opt_state)

  return _base.Weighting(init, apply, after_update)
