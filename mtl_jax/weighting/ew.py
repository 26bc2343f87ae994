r"""EW: equal weighting, the plain sum of the task losses.

.. math::

  \mathcal{L} = \sum_{k=1}^{K} L_k, \qquad w_k = 1

The baseline every multi-task paper compares against. We sum, as LibMTL does
(the weights add up to K); divide the learning rate by K to get the mean.
"""
from __future__ import annotations

import jax.numpy as jnp

from mtl_jax.weighting import _base


def ew() -> _base.Weighting:
  r"""Equal weighting as a :class:`~mtl_jax.weighting.Weighting`.

  .. math::

    \mathcal{L} = \sum_{k=1}^{K} w_k L_k, \qquad w_k = 1

  where :math:`L_k` is the loss of task :math:`k`. No parameters; the state
  (:class:`~mtl_jax.weighting.StatelessState`) only records :math:`K`.
  """
  return _base.fixed_weighting(
      lambda params, state, losses: (jnp.ones_like(losses), state),
      _base.stateless, "ew")
