r"""UW-O: the analytically optimal Uncertainty Weighting.

.. math::

  w_k = \frac{1}{\mathrm{sg}(L_k) + \epsilon}, \qquad
  \mathcal{L} = \sum_{k=1}^{K} w_k L_k

Kirchdorfer, Elich, Kutsche, Stuckenschmidt, Schott, Köhler, "Analytical
Uncertainty-Based Loss Weighting in Multi-Task Learning", GCPR 2024,
https://arxiv.org/abs/2408.07985.
"""
from __future__ import annotations

import jax

from mtl_jax import _checks
from mtl_jax.weighting import _base


def uw_o_weights(losses: jax.Array, eps: float = 1e-8) -> jax.Array:
  r"""Inverse-loss weights of UW-O.

  .. math::

    w_k = 1 / (\mathrm{sg}(L_k) + \epsilon)

  where :math:`L_k` is the current loss of task :math:`k`, :math:`\mathrm{sg}`
  is ``jax.lax.stop_gradient`` and :math:`\epsilon` guards against division by
  zero. Minimising Kendall et al.'s uncertainty objective over each task's
  noise parameter in closed form gives a weight proportional to
  :math:`1 / L_k` (exactly :math:`1/L_k` in the Laplace form), so UW-O needs
  no learnable parameter and has no inertia. Every weighted term
  :math:`w_k L_k` is then (about) 1, the gradient of the total equals that of
  :math:`\sum_k \log L_k`, and rescaling a task's loss by a constant does not
  change the gradient.

  Losses must be positive: a zero loss gets weight :math:`1/\epsilon = 10^8`,
  a negative one a negative weight (gradient ascent on that task), and a NaN
  or Inf gives a NaN or zero weight. Nothing is clipped, so a bad loss shows
  up in the logged weights; ``uw_o(check_losses=True)`` raises instead.

  Args:
    losses: ``(..., K)`` per-task losses, positive.
    eps: added to each loss before inversion; the authors use ``1e-8``.

  Returns:
    ``(..., K)`` weights with no gradient attached.

  Example:
    >>> losses = jnp.array([0.5, 2.0])
    >>> uw_o_weights(losses)
    Array([2. , 0.5], dtype=float32)

  References:
    Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning", GCPR 2024, https://arxiv.org/abs/2408.07985.
  """
  return 1.0 / (jax.lax.stop_gradient(losses) + eps)


def uw_o(eps: float = 1e-8, *, check_losses: bool = False) -> _base.Weighting:
  """UW-O as a :class:`~mtl_jax.weighting.Weighting`: total ``sum_k w_k L_k``.

  Args:
    eps: see :func:`uw_o_weights`.
    check_losses: raise (eagerly, or through ``jax.debug.callback`` under jit)
      when a loss is zero, negative or non-finite. Costs a host round trip per
      step; meant for debugging.

  Returns:
    A ``Weighting`` with no learnable parameters and a
    :class:`~mtl_jax.weighting.StatelessState`.
  """
  _base.check_eps(eps, "uw_o")
  check_losses = _checks.flag(check_losses, "check_losses", "uw_o")
  check = ((lambda l: _base.check_positive_losses(l, "uw_o"))
           if check_losses else None)
  return _base.fixed_weighting(
      lambda params, state, losses: (uw_o_weights(losses, eps), state),
      _base.stateless, "uw_o", check=check)
