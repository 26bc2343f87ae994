r"""UW-SO: soft optimal Uncertainty Weighting.

.. math::

  w = \mathrm{softmax}\left(\frac{1}{T\,(\mathrm{sg}(L) + \epsilon)}\right),
  \qquad \mathcal{L} = \sum_{k=1}^{K} w_k L_k

Kirchdorfer, Elich, Kutsche, Stuckenschmidt, Schott, Köhler, "Analytical
Uncertainty-Based Loss Weighting in Multi-Task Learning", GCPR 2024,
https://arxiv.org/abs/2408.07985.
"""
from __future__ import annotations

import jax

from mtl_jax import _checks
from mtl_jax.weighting import _base


def uw_so_weights(losses: jax.Array, temperature: float,
                  eps: float = 1e-8) -> jax.Array:
  r"""Softmax of the inverse losses: the weights of UW-SO.

  .. math::

    w_k = \frac{\exp\big(1 / (T (\mathrm{sg}(L_k) + \epsilon))\big)}
               {\sum_{i=1}^{K} \exp\big(1 / (T (\mathrm{sg}(L_i) + \epsilon))\big)}

  where :math:`L_k` is the current loss of task :math:`k`, :math:`T > 0` the
  temperature, :math:`\mathrm{sg}` the stop-gradient and :math:`\epsilon` a
  guard against division by zero. The weights sum to 1 (no factor :math:`K`).
  As :math:`T \to \infty` they tend to :math:`1/K` (equal weighting, averaged);
  as :math:`T \to 0` all weight goes to the task with the smallest loss.

  **Choosing T.** What matters is the gap between the :math:`1/L_k` compared
  with :math:`T`. Losses 0.05 and 0.5 give :math:`1/L` = 20 and 2; with
  :math:`T = 1` the weights are about ``[1, 1.5e-8]`` and the second task stops
  training. Losses shrink during training, so a T that was fine at the start
  can collapse the weighting later. Pick T on the scale of the spread of
  :math:`1/L` (the paper reports T = 2 to 3 on NYUv2 and T = 20 to 48 on
  Cityscapes, whose depth losses are near 0.01), and watch the logged weights.

  Losses must be positive: a zero loss gives :math:`1/\epsilon` and takes all
  the weight; a negative loss gets (almost) none; a NaN makes every weight
  NaN. ``uw_so(..., check_losses=True)`` raises instead.

  Args:
    losses: ``(..., K)`` per-task losses, positive.
    temperature: ``T > 0``; the paper's best values are 2 to 3 (NYUv2) and
      20 to 48 (Cityscapes).
    eps: added to each loss before inversion; the authors use ``1e-8``.

  Returns:
    ``(..., K)`` weights on the simplex, with no gradient attached.

  Example:
    >>> uw_so_weights(jnp.array([0.5, 2.0]), temperature=2.0)
    Array([0.6792, 0.3208], dtype=float32)

  References:
    Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning", GCPR 2024, https://arxiv.org/abs/2408.07985.
  """
  inverse = 1.0 / (jax.lax.stop_gradient(losses) + eps)
  return jax.nn.softmax(inverse / temperature, axis=-1)


def uw_so(temperature: float, eps: float = 1e-8, *,
          check_losses: bool = False) -> _base.Weighting:
  """UW-SO as a :class:`~mtl_jax.weighting.Weighting`.

  Args:
    temperature: ``T > 0``, see :func:`uw_so_weights`.
    eps: see :func:`uw_so_weights`.
    check_losses: raise when a loss is zero, negative or non-finite (a host
      round trip per step; for debugging).

  Returns:
    A ``Weighting`` with no learnable parameters and a
    :class:`~mtl_jax.weighting.StatelessState`.

  Example:
    >>> method = uw_so(temperature=2.0)
    >>> params, state = method.init(num_tasks=2)
    >>> out = method.apply(params, state, jnp.array([0.5, 2.0]))
    >>> out.weights  # uw_so_weights: the smaller loss weighs more
    Array([0.6792, 0.3208], dtype=float32)
    >>> out.total  # sum_k w_k L_k
    Array(0.9812, dtype=float32)
  """
  _base.check_temperature(temperature, "uw_so")
  _base.check_eps(eps, "uw_so")
  check_losses = _checks.flag(check_losses, "check_losses", "uw_so")
  check = ((lambda l: _base.check_positive_losses(l, "uw_so"))
           if check_losses else None)
  return _base.fixed_weighting(
      lambda params, state, losses: (
          uw_so_weights(losses, temperature, eps), state),
      _base.stateless, "uw_so", check=check)
