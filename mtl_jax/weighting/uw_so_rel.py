r"""UW-SO with a relative temperature: no temperature to tune, no collapse.

.. math::

  w = \mathrm{softmax}\left(\frac{u}{\tau\,\bar u}\right), \qquad
  u_k = \frac{1}{\mathrm{sg}(L_k) + \epsilon}, \qquad
  \bar u = \frac{1}{K} \sum_{k=1}^{K} u_k, \qquad
  \mathcal{L} = \sum_{k=1}^{K} w_k L_k

UW-SO (Kirchdorfer, Elich, Kutsche, Stuckenschmidt, Schott, Köhler,
"Analytical Uncertainty-Based Loss Weighting in Multi-Task Learning", GCPR
2024, https://arxiv.org/abs/2408.07985) with its temperature set every step
to :math:`T = \tau \bar u`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _checks
from mtl_jax.weighting import _base

# None: tau = K / 2, chosen once on the four offline benchmarks (the figures
# are in uw_so_rel_weights' docstring); not tuned per benchmark.
DEFAULT_TAU = None


def resolve_tau(tau: float | None, losses: jax.Array) -> float:
  """``tau``, or its default :math:`K / 2` for ``(..., K)`` losses."""
  return jnp.shape(losses)[-1] / 2.0 if tau is None else tau


def check_tau(tau, method: str) -> None:
  if tau is None:  # the default, K / 2
    return
  _checks.number(
      tau, "tau", method, low=0, low_open=True, allow_inf=True,
      hint="T = tau * mean_k 1/(L_k + eps): the weights of two tasks differ "
      "by at most a factor e^(K / tau); None (the default) is K / 2, inf "
      "gives equal weights.")


def check_ema(ema, method: str) -> None:
  _checks.number(
      ema, "ema", method, low=0, high=1, high_open=True,
      hint="It is the decay of the moving average of the losses that the "
      "weights are computed from; 0 (the default) uses the current losses, "
      "0.9 averages over about 10 steps.")


def relative_logits(losses: jax.Array, tau: float | None,
                    eps: float = 1e-8) -> jax.Array:
  r"""The logits :math:`u_k / (\tau \bar u) = (K / \tau)\, p_k`, stop-gradient.

  :math:`p_k = u_k / \sum_i u_i` are the inverse losses normalised to the
  simplex (UW-O's weights divided by their sum). They are computed as
  :math:`r_k / \sum_i r_i` with :math:`r_k = (\min_i L_i + \epsilon) / (L_k +
  \epsilon) \in (0, 1]`, which cannot overflow even with ``eps = 0`` and
  tiny losses.
  """
  tau = resolve_tau(tau, losses)
  shifted = jax.lax.stop_gradient(losses) + eps
  ratio = jnp.min(shifted, axis=-1, keepdims=True) / shifted
  shares = ratio / jnp.sum(ratio, axis=-1, keepdims=True)
  return (jnp.shape(losses)[-1] / tau) * shares


def uw_so_rel_weights(losses: jax.Array, tau: float | None = DEFAULT_TAU,
                      eps: float = 1e-8) -> jax.Array:
  r"""UW-SO's softmax of the inverse losses at the temperature :math:`\tau \bar u`.

  .. math::

    w_k = \mathrm{softmax}_k\!\left(\frac{u}{\tau \bar u}\right)
        = \mathrm{softmax}_k\!\left(\frac{K}{\tau}\, p\right), \qquad
    p_k = \frac{u_k}{\sum_{i=1}^{K} u_i}

  where :math:`u_k = 1 / (\mathrm{sg}(L_k) + \epsilon)` is the inverse loss
  of task :math:`k` (UW-O's weight), :math:`\bar u` its mean over the
  :math:`K` tasks, :math:`\tau > 0` the relative temperature and
  :math:`\mathrm{sg}` the stop-gradient. The weights lie on the simplex.

  **Why.** UW-SO's logits are :math:`u_k / T`. Losses shrink as training
  goes on, :math:`u` grows, and a T that suited the first steps sharpens the
  softmax until one task takes all the weight; the right T also differs by
  dataset (2 on NYUv2, 20 to 48 on Cityscapes). Setting :math:`T = \tau
  \bar u` measures the gaps between the :math:`u_k` in units of their mean:
  multiplying every loss by the same :math:`c > 0` leaves the weights
  unchanged (up to :math:`\epsilon`), so they do not sharpen just because
  all losses fall, and one :math:`\tau` fits any loss scale. What still moves
  them is how the losses compare with each other.

  **What tau means, and the bound on the largest weight.** The logits
  :math:`(K/\tau) p_k` are :math:`\ge 0` and sum to :math:`K/\tau`. With
  :math:`\tau = 1` a task whose inverse loss equals the mean has logit 1, and
  the logits of two tasks differ by :math:`(u_j - u_k) / \bar u`. So

  * any two weights differ by a factor less than :math:`e^{K/\tau}`;
  * the largest weight is below
    :math:`w_{\max}(K, \tau) = e^{K/\tau} / (e^{K/\tau} + K - 1)`,
    approached when one loss tends to 0 while the others stay put. With
    :math:`\tau = 1`: 0.881 (K = 2), 0.909 (K = 3), 0.948 (K = 4), 0.974
    (K = 5), 0.99959 (K = 10).

  A fixed :math:`\tau` loosens the bound as :math:`K` grows (the logits sum
  to :math:`K / \tau`), so the default scales :math:`\tau` with :math:`K`.
  :math:`\tau \to \infty` gives equal weights :math:`1/K`; :math:`\tau \to
  0` all weight to the smallest loss (UW-SO's collapse).

  **Default.** :math:`\tau = K/2`: the logits are :math:`2 p_k`, two weights
  differ by less than :math:`e^2`, and the largest is below
  :math:`e^2 / (e^2 + K - 1)`: 0.881 (K = 2), 0.711 (K = 4), 0.451
  (K = 10). Chosen once, not per benchmark, from :math:`\tau` = 1,
  :math:`K/2` and :math:`K` on the four offline benchmarks; the comparison
  with UW-SO at a tuned T, and why the earlier :math:`\tau = 1` was
  dropped, are in ``docs/results/uw_so_auto.md``. A weighting of the current
  losses cannot tell a task with small units from a solved task, which
  :func:`~mtl_jax.weighting.uw_so_norm_weights` does.

  Losses must be positive, as for UW-SO: a zero loss gets logit
  :math:`K/\tau` (all the others 0), a negative one makes the logits
  meaningless, a NaN makes every weight NaN.

  Args:
    losses: ``(..., K)`` per-task losses, positive.
    tau: relative temperature :math:`\tau > 0` (``inf``: equal weights);
      ``None`` (default): :math:`K / 2`.
    eps: added to each loss before inversion; the UW-SO authors use ``1e-8``.

  Returns:
    ``(..., K)`` weights on the simplex, with no gradient attached.

  Example:
    >>> uw_so_rel_weights(jnp.array([0.5, 2.0]))  # K = 2: tau = 1
    Array([0.7685, 0.2315], dtype=float32)
    >>> uw_so_rel_weights(jnp.array([0.5, 1.0, 2.0]))  # K = 3: tau = 1.5
    Array([0.5027, 0.2839, 0.2134], dtype=float32)

  References:
    Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning", GCPR 2024, https://arxiv.org/abs/2408.07985.
  """
  return jax.nn.softmax(relative_logits(losses, tau, eps), axis=-1)


class LossEMAState(NamedTuple):
  """State of the UW-SO variants with ``ema > 0``: the losses' moving average.

  It starts at zero and needs no bias correction: after :math:`t` steps it is
  ``1 - ema ** t`` times a weighted mean of the losses, a factor
  common to every task, and the weights of these variants do not change when
  all losses are multiplied by the same constant.
  """
  mean: jax.Array  # (K,) ema * mean + (1 - ema) * sg(L), from zeros


def auto_weighting(weights_fn: Callable[[jax.Array], jax.Array], ema: float,
                   check_losses: bool, method: str) -> _base.Weighting:
  """A :class:`Weighting` of ``weights_fn`` applied to the (smoothed) losses.

  ``ema = 0``: the current losses and a :class:`StatelessState`; ``ema > 0``:
  a :class:`LossEMAState` and the moving average, this step's losses
  included. The total is ``sum_k w_k L_k`` of the current losses either way.
  """
  check = ((lambda l: _base.check_positive_losses(l, method))
           if check_losses else None)
  if ema == 0:
    return _base.fixed_weighting(
        lambda params, state, losses: (weights_fn(losses), state),
        _base.stateless, method, check=check)

  def init_state(num_tasks: int, key) -> LossEMAState:
    del key
    # The default float dtype, as DWA's: float64 under jax_enable_x64.
    return LossEMAState(jnp.zeros((num_tasks,)))

  def step(params, state: LossEMAState, losses):
    del params
    losses = jax.lax.stop_gradient(losses).astype(state.mean.dtype)
    mean = ema * state.mean + (1.0 - ema) * losses
    return weights_fn(mean), LossEMAState(mean)

  return _base.fixed_weighting(
      step, init_state, method, check=check,
      num_tasks_of=lambda state: jnp.shape(state.mean)[-1])


def uw_so_rel(tau: float | None = DEFAULT_TAU, eps: float = 1e-8, ema: float = 0.0,
              *, check_losses: bool = False) -> _base.Weighting:
  """UW-SO with a relative temperature as a :class:`~mtl_jax.weighting.Weighting`.

  Args:
    tau: relative temperature, see :func:`uw_so_rel_weights`; ``None``
      (default): :math:`K / 2`.
    eps: see :func:`uw_so_rel_weights`.
    ema: decay in ``[0, 1)`` of a moving average of the losses that the
      weights are computed from; 0 (default) uses the current losses, as
      UW-SO does.
    check_losses: raise when a loss is zero, negative or non-finite (a host
      round trip per step; for debugging).

  Returns:
    A ``Weighting`` with no learnable parameters and a
    :class:`~mtl_jax.weighting.StatelessState` (``ema = 0``) or a
    :class:`LossEMAState`.
  """
  check_tau(tau, "uw_so_rel")
  _base.check_eps(eps, "uw_so_rel")
  check_ema(ema, "uw_so_rel")
  check_losses = _checks.flag(check_losses, "check_losses", "uw_so_rel")
  return auto_weighting(lambda losses: uw_so_rel_weights(losses, tau, eps),
                        float(ema), check_losses, "uw_so_rel")
