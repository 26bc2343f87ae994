r"""GLS: the geometric loss strategy.

.. math::

  \mathcal{L} = \Big(\prod_{k=1}^{K} L_k\Big)^{1/K}

Chennupati, Sistu, Yogamani, Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR
Workshops 2019, https://arxiv.org/abs/1904.08492.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _checks
from mtl_jax.weighting import _base


def gls_loss(losses: jax.Array) -> jax.Array:
  r"""Geometric mean of the task losses.

  .. math::

    \mathcal{L} = \Big(\prod_{k=1}^{K} L_k\Big)^{1/K}
                = \exp\Big(\frac{1}{K}\sum_{k=1}^{K} \log L_k\Big)

  where :math:`L_k > 0` is the loss of task :math:`k`. Computed in log space
  so that many small or large losses do not under- or overflow. Its gradient
  in :math:`L_k` is :math:`\mathcal{L} / (K L_k)`, an implicit inverse-loss
  weighting like UW-O's, scaled by the geometric mean. Zero or negative
  losses give 0 or NaN.

  Args:
    losses: ``(..., K)`` positive per-task losses.

  Returns:
    ``(...)`` the geometric mean, differentiable.

  References:
    Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation and
    Geometric Loss Strategy for Multi-Task Learning", CVPRW 2019,
    https://arxiv.org/abs/1904.08492.
  """
  return jnp.exp(jnp.mean(jnp.log(losses), axis=-1))


def gls(*, check_losses: bool = False) -> _base.Weighting:
  """GLS as a :class:`~mtl_jax.weighting.Weighting`.

  ``total`` is :func:`gls_loss`; ``weights`` are its gradient in the losses,
  :math:`\\mathcal{L} / (K L_k)`, with no gradient attached.

  Args:
    check_losses: raise when a loss is zero, negative or non-finite.

  Returns:
    A ``Weighting`` with no learnable parameters and a
    :class:`~mtl_jax.weighting.StatelessState`.
  """
  check_losses = _checks.flag(check_losses, "check_losses", "gls")

  def init(num_tasks, *, key=None):
    return {}, _base.stateless(_base.check_num_tasks(num_tasks), key)

  def apply(params, state, losses):
    del params
    _base.check_losses_shape(losses, _base.recorded_num_tasks(state, "gls"),
                             "gls")
    if check_losses:
      _base.check_positive_losses(losses, "gls")
    total = gls_loss(losses)
    weights = jax.lax.stop_gradient(total / (losses.shape[-1] * losses))
    return _base.WeightedLoss(total, weights, state)

  return _base.Weighting(init, apply)
