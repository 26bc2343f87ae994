r"""UW-SO with an entropy floor: the weights never fall below a set spread.

.. math::

  w = \mathrm{softmax}\left(\frac{u}{T}\right), \qquad
  T = \max\!\big(\tau \bar u,\; T_\rho\big), \qquad
  H\big(\mathrm{softmax}(u / T_\rho)\big) = \rho \log K, \qquad
  \mathcal{L} = \sum_{k=1}^{K} w_k L_k

with :math:`u_k = 1 / (\mathrm{sg}(L_k) + \epsilon)`: the relative temperature
of :func:`~mtl_jax.weighting.uw_so_rel_weights`, raised each step (inside
``jit``) until the entropy of the weights is at least :math:`\rho \log K`.
UW-SO is from Kirchdorfer, Elich, Kutsche, Stuckenschmidt, Schott, Köhler,
"Analytical Uncertainty-Based Loss Weighting in Multi-Task Learning", GCPR
2024, https://arxiv.org/abs/2408.07985.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mtl_jax import _checks
from mtl_jax.weighting import _base
from mtl_jax.weighting import uw_so_rel as _rel

# Chosen once on the four offline benchmarks (the figures are in
# uw_so_entropy_weights' docstring); not tuned per benchmark. The floor
# starts from uw_so_rel's temperature at tau = 1 (not uw_so_rel's default
# K / 2, which rarely lets the floor act).
DEFAULT_TARGET = 0.9
DEFAULT_TAU = 1.0
# Halvings of [0, 1] in the bisection: 2^-50 < 1e-15, float64's resolution.
BISECTION_STEPS = 50


def _check_target(target, method: str) -> None:
  _checks.number(
      target, "target", method, low=0, high=1,
      hint="It is the least entropy of the weights as a share of log K: 0 "
      "never raises the temperature (uw_so_rel), 1 gives equal weights; 0.9 "
      "is the default.")


def _entropy(logits: jax.Array) -> jax.Array:
  """Entropy of ``softmax(logits)`` over the last axis, NaN-free at 0."""
  log_w = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(log_w) * log_w, axis=-1)


def entropy_floor_scale(logits: jax.Array, min_entropy: float,
                        steps: int = BISECTION_STEPS) -> jax.Array:
  r"""The largest :math:`\beta \in [0, 1]` with :math:`H(\mathrm{softmax}(\beta
  z)) \ge H_{\min}`, by a fixed number of bisection steps.

  :math:`H(\mathrm{softmax}(\beta z))` decreases in :math:`\beta`
  (:math:`dH / d\beta = -\beta\,\mathrm{Var}_w(z) \le 0`) from :math:`\log K`
  at :math:`\beta = 0`, so the bracket :math:`[0, 1]` always holds the answer
  when :math:`H(z) < H_{\min}`; otherwise :math:`\beta = 1`. The lower end of
  the final bracket is returned, on whose side the entropy is at least
  :math:`H_{\min}`. A ``lax.fori_loop`` with ``steps`` iterations: no host
  round trip, no data-dependent trip count, so it jits, vmaps and pmaps.

  Args:
    logits: ``(..., K)`` logits :math:`z`.
    min_entropy: :math:`H_{\min} \le \log K`.
    steps: bisection steps; the bracket shrinks to :math:`2^{-\mathrm{steps}}`.

  Returns:
    ``(...)`` the scale :math:`\beta`, in the dtype of ``logits``.
  """
  shape = jnp.shape(logits)[:-1]

  def halve(_, bracket):
    low, high = bracket
    mid = 0.5 * (low + high)
    keeps = _entropy(mid[..., None] * logits) >= min_entropy
    return jnp.where(keeps, mid, low), jnp.where(keeps, high, mid)

  low = jnp.zeros(shape, logits.dtype)
  low, _ = jax.lax.fori_loop(0, steps, halve,
                             (low, jnp.ones(shape, logits.dtype)))
  return jnp.where(_entropy(logits) >= min_entropy, 1.0, low)


def uw_so_entropy_weights(losses: jax.Array, target: float = DEFAULT_TARGET,
                          tau: float = DEFAULT_TAU,
                          eps: float = 1e-8) -> jax.Array:
  r"""UW-SO's weights at the relative temperature, kept above an entropy floor.

  .. math::

    w = \mathrm{softmax}\left(\beta \, \frac{u}{\tau \bar u}\right), \qquad
    \beta = \max\Big\{\beta' \in [0, 1] :
        H\big(\mathrm{softmax}(\beta' u / (\tau \bar u))\big) \ge \rho \log K
    \Big\}

  where :math:`u_k = 1 / (\mathrm{sg}(L_k) + \epsilon)`, :math:`\bar u` its
  mean over the :math:`K` tasks, :math:`\tau` the relative temperature of
  :func:`~mtl_jax.weighting.uw_so_rel_weights`, :math:`H(w) = -\sum_k w_k
  \log w_k` the entropy and :math:`\rho \in [0, 1]` the ``target``. The
  effective UW-SO temperature is :math:`T = \tau \bar u / \beta`, found every
  step by bisection inside the computation
  (:func:`entropy_floor_scale`). Like :func:`uw_so_rel_weights` the weights
  do not change when every loss is multiplied by the same constant.

  **The bound on the largest weight.** Whatever the losses and :math:`K`,
  :math:`H(w) \ge \rho \log K`, so the largest weight is at most the
  :math:`a \ge 1/K` that solves :math:`-a \log a - (1 - a) \log (1 - a) +
  (1 - a) \log (K - 1) = \rho \log K` (reached when the other weights are
  equal), and at most the bound :math:`e^{K/\tau} / (e^{K/\tau} + K - 1)` of
  :func:`uw_so_rel_weights`. Unlike the latter, :math:`a` does not loosen as
  :math:`K` grows. For the default :math:`\rho = 0.9`: 0.684 (K = 2), 0.562
  (K = 3), 0.495 (K = 4), 0.452 (K = 5), 0.352 (K = 10). For
  :math:`\rho = 0.5`: 0.890 (K = 2, where the relative bound 0.881 of
  :math:`\tau = 1` is lower and the floor never acts), 0.841, 0.811, 0.790,
  0.738.

  **A floor, not an equality.** Solving for :math:`H(w) = \rho \log K`
  exactly, at every step, fixes the spread of the weights whatever the
  losses: with :math:`K = 2` the weights would be :math:`(a, 1 - a)` by the
  rank of the losses alone, and (for :math:`\rho = 0.9`) losses 1 and
  :math:`1 + 10^{-6}` would get the same 0.684 / 0.316 as losses 1 and 100,
  while exactly equal losses get 1/2 each (any T works there). Taking the larger of the relative temperature
  and :math:`T_\rho` keeps the weights a continuous function of the losses:
  close losses get close weights, equal losses equal ones, and the floor
  only acts when the relative temperature alone would concentrate the weight.
  ``target = 0`` is :func:`uw_so_rel_weights`; ``target = 1`` gives equal
  weights. Near 1 the entropy is flat (its deficit from :math:`\log K` is
  quadratic in :math:`\beta`): in float32 the weights for targets up to
  0.9999 agree with float64 to :math:`4 \cdot 10^{-6}`, for a target within
  :math:`10^{-6}` of 1 only to :math:`10^{-4}`.

  **Default.** :math:`\rho = 0.9` from :math:`\tau = 1` (largest weight at
  most 0.495 for K = 4, 0.352 for K = 10), chosen once, not per benchmark,
  from :math:`\rho` = 0.5 and 0.9 on the four offline benchmarks; the
  comparison with UW-SO at a tuned T is in ``docs/results/uw_so_auto.md``.
  Task losses that differ by their units need
  :func:`~mtl_jax.weighting.uw_so_norm_weights`, which removes them.

  Losses must be positive, as for UW-SO.

  Args:
    losses: ``(..., K)`` per-task losses, positive.
    target: :math:`\rho \in [0, 1]`, the least entropy of the weights as a
      share of :math:`\log K`; default 0.9.
    tau: relative temperature the floor starts from, see
      :func:`uw_so_rel_weights`; default 1.
    eps: added to each loss before inversion; the UW-SO authors use ``1e-8``.

  Returns:
    ``(..., K)`` weights on the simplex, with no gradient attached.

  Example:
    >>> jax.jit(uw_so_entropy_weights)(jnp.array([0.01, 1.0, 1.0]))
    Array([0.5623, 0.2188, 0.2188], dtype=float32)
    >>> jax.jit(uw_so_entropy_weights)(jnp.array([0.01, 1.0, 1.0]), 0.5)
    Array([0.8405, 0.0797, 0.0797], dtype=float32)

  References:
    Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning", GCPR 2024, https://arxiv.org/abs/2408.07985.
  """
  logits = _rel.relative_logits(losses, tau, eps)
  min_entropy = target * math.log(jnp.shape(losses)[-1])
  scale = entropy_floor_scale(logits, min_entropy)
  # target = 1 is met by beta = 0 only; in float32 the entropy near log K is
  # flat to rounding, and the bisection would stop near beta = 1e-3.
  scale = jnp.where(target >= 1.0, 0.0, scale)
  return jax.nn.softmax(scale[..., None] * logits, axis=-1)


def uw_so_entropy(target: float = DEFAULT_TARGET,
                  tau: float = DEFAULT_TAU, eps: float = 1e-8,
                  ema: float = 0.0, *,
                  check_losses: bool = False) -> _base.Weighting:
  """UW-SO with an entropy floor as a :class:`~mtl_jax.weighting.Weighting`.

  Args:
    target: least entropy of the weights as a share of ``log K``, see
      :func:`uw_so_entropy_weights`; default 0.9.
    tau: relative temperature the floor starts from, see
      :func:`uw_so_rel_weights`; default 1.
    eps: see :func:`uw_so_entropy_weights`.
    ema: decay in ``[0, 1)`` of a moving average of the losses that the
      weights are computed from; 0 (default) uses the current losses, as
      UW-SO does.
    check_losses: raise when a loss is zero, negative or non-finite (a host
      round trip per step; for debugging).

  Returns:
    A ``Weighting`` with no learnable parameters and a
    :class:`~mtl_jax.weighting.StatelessState` (``ema = 0``) or a
    :class:`~mtl_jax.weighting.LossEMAState`.
  """
  _check_target(target, "uw_so_entropy")
  _rel.check_tau(tau, "uw_so_entropy")
  _base.check_eps(eps, "uw_so_entropy")
  _rel.check_ema(ema, "uw_so_entropy")
  check_losses = _checks.flag(check_losses, "check_losses", "uw_so_entropy")
  return _rel.auto_weighting(
      lambda losses: uw_so_entropy_weights(losses, target, tau, eps),
      float(ema), check_losses, "uw_so_entropy")
