r"""STCH: Smooth Tchebycheff scalarization.

.. math::

  \mathcal{L} = \mu \log \sum_{k=1}^{K}
      \exp\!\Big(\frac{\lambda_k (L_k - z_k)}{\mu}\Big)

a smooth upper bound of the Tchebycheff scalarization
:math:`\max_k \lambda_k (L_k - z_k)`, which it approaches as :math:`\mu \to 0`.

Lin, Zhang, Zhang, Liu, Li, Zhang, "Smooth Tchebycheff Scalarization for
Multi-Objective Optimization", ICML 2024, https://arxiv.org/abs/2402.19078.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import _checks
from mtl_jax.weighting import _base

_LOG_EPS = 1e-20  # LibMTL's guard inside log(L + eps) and log(L / n + eps)


def _check_mu(mu: Any, method: str) -> None:
  """Raises a ValueError for a known ``mu`` that is not finite and > 0."""
  _checks.number(
      mu, "mu", method, low=0, low_open=True,
      hint="Small mu tends to the max (Tchebycheff), large mu to a weighted "
      "mean; the paper and LibMTL use 1.")


def _check_vector(name: str, value: jax.Array | None, num_tasks: int,
                  method: str) -> None:
  if value is not None and np.shape(value) != (num_tasks,):
    raise ValueError(
        f"{method}: {name} must have shape ({num_tasks},), one entry per "
        f"task, got shape {np.shape(value)}.")


def _smooth_max(x: jax.Array, mu: Any
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""The parts of :math:`\mu \log \sum_k \exp(x_k / \mu)` over the last axis.

  Returns ``(top, gap, soft)``: ``top`` the max :math:`x_m`, ``gap`` :math:`\mu
  \log(1 + \sum_{k \ne m} \exp((x_k - x_m) / \mu))` (so the smooth max is
  ``top + gap``) and ``soft`` the softmax of :math:`x / \mu`, stop-gradient.

  Shifting by the max before dividing by ``mu`` keeps a tiny ``mu`` or a huge
  ``x`` from overflowing; ``log1p`` of the other terms keeps ``gap`` exact
  when it is small (one task far above the others), where ``log`` of a sum
  near 1 would lose it. ``top`` takes its gradient at one index even on
  ties, which makes the gradient of ``top + gap`` exactly ``soft``.
  """
  index = jnp.argmax(x, axis=-1, keepdims=True)
  top = jnp.take_along_axis(x, index, axis=-1)
  is_top = jnp.arange(x.shape[-1]) == index
  terms = jnp.exp((x - top) / mu)
  rest = jnp.sum(jnp.where(is_top, 0.0, terms), axis=-1, keepdims=True)
  soft = jnp.where(is_top, 1.0, terms) / (1.0 + rest)
  return (jnp.squeeze(top, -1), mu * jnp.squeeze(jnp.log1p(rest), -1),
          jax.lax.stop_gradient(soft))


def _stch(losses, mu, weights, reference):
  """``(total, d total / d losses)`` of the stateless form."""
  dtype = jnp.result_type(losses)
  num_tasks = jnp.shape(losses)[-1]
  lam = (jnp.full((num_tasks,), 1.0 / num_tasks, dtype) if weights is None
         else jnp.asarray(weights).astype(dtype))
  shifted = losses if reference is None else (
      losses - jnp.asarray(reference).astype(dtype))
  top, gap, soft = _smooth_max(lam * shifted, mu)
  return top + gap, lam * soft


def stch_loss(losses: jax.Array, mu: float,
              weights: jax.Array | None = None,
              reference: jax.Array | None = None) -> jax.Array:
  r"""The smooth Tchebycheff scalarization of the task losses.

  .. math::

    \mathcal{L} = \mu \log \sum_{k=1}^{K}
        \exp\!\Big(\frac{\lambda_k (L_k - z_k)}{\mu}\Big)

  where :math:`\lambda` are the preference weights (default :math:`1/K`),
  :math:`z` the reference (ideal) point (default 0) and :math:`\mu > 0` the
  smoothing. It lies between :math:`\max_k \lambda_k (L_k - z_k)` and that
  plus :math:`\mu \log K`. Its gradient in :math:`L_k` is :math:`\lambda_k`
  times the softmax of :math:`\lambda (L - z) / \mu`: the weight moves to the
  worst task as :math:`\mu \to 0`. Computed as the max plus a log-sum-exp of
  the gaps, so :math:`\mu = 10^{-10}` on losses near :math:`10^{30}` is exact
  (TorchJD's stateless ``STCH``). This is the form without warm-up; see
  :func:`stch` for LibMTL's normalised one.

  Args:
    losses: ``(..., K)`` per-task losses.
    mu: smoothing :math:`\mu > 0` (required in TorchJD; 1 in LibMTL).
    weights: ``(K,)`` preference weights :math:`\lambda`; ``None``: :math:`1/K`.
    reference: ``(K,)`` reference point :math:`z`; ``None``: 0.

  Returns:
    ``(...)`` the scalarization, differentiable in ``losses``.

  Example:
    >>> stch_loss(jnp.array([0.0, 0.0]), mu=1.0)  # log 2
    Array(0.6931, dtype=float32)

  References:
    Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective
    Optimization", ICML 2024, https://arxiv.org/abs/2402.19078.
  """
  num_tasks = jnp.shape(losses)[-1]
  _check_vector("weights", weights, num_tasks, "stch_loss")
  _check_vector("reference", reference, num_tasks, "stch_loss")
  return _stch(losses, mu, weights, reference)[0]


class STCHState(NamedTuple):
  step: jax.Array      # () int32, steps taken so far
  loss_sum: jax.Array  # (K,) sum of the losses of the nadir epoch (W)


def stch(mu: float = 1.0, *, weights: Sequence[float] | None = None,
         reference: Sequence[float] | None = None,
         warmup_epochs: int | None = None,
         steps_per_epoch: int | None = None) -> _base.Weighting:
  r"""STCH as a :class:`~mtl_jax.weighting.Weighting`, in two forms.

  ``warmup_epochs=None`` (TorchJD's stateless ``STCH``): the total is
  :func:`stch_loss` of the raw losses with ``weights`` and ``reference``.

  ``warmup_epochs=W`` (LibMTL's ``STCH``, ``STCH_warmup_epoch=4``): during
  the 0-based epochs :math:`0, \dots, W` the total is
  :math:`\sum_k \log(L_k + 10^{-20})`; epoch :math:`W` also averages the
  (stop-gradient) losses into the nadir vector :math:`n`. From epoch
  :math:`W + 1` on, with :math:`f_k = \log(L_k / n_k + 10^{-20})`,

  .. math::

    \mathcal{L} = K \mu \log \sum_{k=1}^{K}
        \exp\!\Big(\frac{f_k - \mathrm{sg}(\max_i f_i)}{\mu}\Big)

  exactly LibMTL's value: the smooth max of the :math:`f_k` *minus* its
  (constant) max, times :math:`K`. So the value lies in
  :math:`[0, K \mu \log K]` and is not the scalarization itself; the
  gradient, which is all that trains the model, is :math:`K` times that of
  :math:`\mu \log \sum_k \exp(f_k / \mu)`. ``weights`` and ``reference`` do
  not apply to this form (the nadir vector normalises the losses instead).

  In both forms ``weights`` of the returned :class:`WeightedLoss` is
  :math:`d\mathcal{L} / dL`: during warm-up :math:`1 / (L_k + 10^{-20})`,
  after it :math:`K\,\mathrm{softmax}_k(f / \mu) / (L_k + 10^{-20} n_k)`.

  Args:
    mu: smoothing :math:`\mu > 0`; LibMTL uses 1.
    weights: ``(K,)`` preference weights :math:`\lambda` (stateless form
      only); ``None``: :math:`1/K`.
    reference: ``(K,)`` reference point :math:`z` (stateless form only);
      ``None``: 0.
    warmup_epochs: ``None`` for the stateless form, or :math:`W \ge 0` for
      LibMTL's (its default is 4).
    steps_per_epoch: number of ``apply`` calls in one epoch; required with
      ``warmup_epochs``.

  Returns:
    A ``Weighting`` with no learnable parameters and a
    :class:`~mtl_jax.weighting.StatelessState` (stateless form) or an
    :class:`STCHState`.

  References:
    Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective
    Optimization", ICML 2024, https://arxiv.org/abs/2402.19078.
  """
  _check_mu(mu, "stch")
  if weights is not None:
    _checks.vector(weights, "weights", "stch", nonnegative=True,
                   hint="They are the preferences lambda_k of the tasks "
                   "(None: 1/K).")
    weights = tuple(float(w) for w in weights)
  if reference is not None:
    _checks.vector(reference, "reference", "stch",
                   hint="It is the ideal point z_k of each loss (None: 0).")
    reference = tuple(float(r) for r in reference)

  if warmup_epochs is None:
    if steps_per_epoch is not None:
      raise ValueError(
          f"stch: steps_per_epoch={steps_per_epoch!r} is only used with "
          "warmup_epochs (LibMTL's form); pass warmup_epochs=4 for LibMTL's "
          "default, or drop steps_per_epoch for the stateless form.")

    def init(num_tasks: int, *, key: jax.Array | None = None):
      num_tasks = _base.check_num_tasks(num_tasks)
      _check_vector("weights", weights, num_tasks, "stch")
      _check_vector("reference", reference, num_tasks, "stch")
      return {}, _base.stateless(num_tasks, key)

    def apply(params, state, losses):
      del params
      _base.check_losses_shape(
          losses, _base.recorded_num_tasks(state, "stch"), "stch")
      num_tasks = jnp.shape(losses)[-1]
      _check_vector("weights", weights, num_tasks, "stch")
      _check_vector("reference", reference, num_tasks, "stch")
      total, grad = _stch(losses, mu, weights, reference)
      return _base.WeightedLoss(total, jax.lax.stop_gradient(grad), state)

    return _base.Weighting(init, apply)

  if weights is not None or reference is not None:
    raise ValueError(
        "stch: weights and reference apply to the stateless form only "
        f"(warmup_epochs=None), got warmup_epochs={warmup_epochs!r} with "
        f"weights={weights!r}, reference={reference!r}; with warm-up the "
        "nadir vector normalises the losses (LibMTL).")
  if (isinstance(warmup_epochs, bool)
      or not isinstance(warmup_epochs, numbers.Integral) or warmup_epochs < 0):
    raise ValueError(
        "stch: warmup_epochs must be None (stateless form) or an int >= 0 "
        f"(LibMTL uses 4), got {warmup_epochs!r}.")
  if (steps_per_epoch is None or isinstance(steps_per_epoch, bool)
      or not isinstance(steps_per_epoch, numbers.Integral)
      or steps_per_epoch < 1):
    raise ValueError(
        "stch with warmup_epochs needs steps_per_epoch, a positive int (the "
        f"number of train steps in one epoch), got {steps_per_epoch!r}; e.g. "
        "get('stch', warmup_epochs=4, steps_per_epoch=len(train_loader)).")
  warmup_epochs, steps_per_epoch = int(warmup_epochs), int(steps_per_epoch)

  def init_state(num_tasks: int, key) -> STCHState:
    del key
    # The default float dtype, as DWA's: float64 losses keep their precision.
    return STCHState(jnp.zeros((), jnp.int32), jnp.zeros((num_tasks,)))

  def init(num_tasks: int, *, key: jax.Array | None = None):
    return {}, init_state(_base.check_num_tasks(num_tasks), key)

  def apply(params, state: STCHState, losses):
    del params
    _base.check_losses_shape(losses, state.loss_sum.shape[0], "stch")
    dtype = jnp.result_type(losses)
    num_tasks = losses.shape[-1]
    epoch = state.step // steps_per_epoch
    warm = epoch <= warmup_epochs
    # Warm-up: sum_k log(L_k + eps), gradient 1 / (L_k + eps).
    warm_total = jnp.sum(jnp.log(losses + _LOG_EPS), axis=-1)
    warm_weights = 1.0 / (losses + _LOG_EPS)
    # After: the nadir is the mean loss of epoch W (1 before it exists, so
    # that the unused branch stays finite and its zero gradient is not NaN).
    nadir = jnp.where(warm, 1.0, state.loss_sum / steps_per_epoch).astype(dtype)
    f = jnp.log(losses / nadir + _LOG_EPS)
    top, gap, soft = _smooth_max(f, mu)
    # LibMTL's value K (smooth max - sg(max)): top - sg(top) is exactly 0 but
    # carries the gradient of the max, so the gradient is K d smooth_max / dL.
    stch_total = num_tasks * (gap + (top - jax.lax.stop_gradient(top)))
    stch_weights = num_tasks * soft / (losses + _LOG_EPS * nadir)
    total = jnp.where(warm, warm_total, stch_total)
    weights = jax.lax.stop_gradient(jnp.where(warm, warm_weights, stch_weights))
    in_nadir_epoch = epoch == warmup_epochs
    loss_sum = state.loss_sum + jnp.where(
        in_nadir_epoch, jax.lax.stop_gradient(losses), 0.0).astype(
            state.loss_sum.dtype)
    return _base.WeightedLoss(total, weights,
                              STCHState(state.step + 1, loss_sum))

  return _base.Weighting(init, apply)
