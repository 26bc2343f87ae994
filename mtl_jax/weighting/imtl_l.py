r"""IMTL-L: the loss-balancing half of Impartial Multi-Task Learning.

.. math::

  \mathcal{L} = \sum_{k=1}^{K} e^{s_k} L_k - s_k

Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task
Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax import _checks
from mtl_jax.weighting import _base


def imtl_l_loss(losses: jax.Array, log_scales: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  r"""IMTL-L's total loss with learnable log-scales.

  .. math::

    \mathcal{L} = \sum_{k=1}^{K} e^{s_k} L_k - s_k

  where :math:`s_k` is the learnable log-scale of task :math:`k`. Its optimum
  for a fixed loss is :math:`e^{s_k} L_k = 1`, so, like UW-O, every scaled
  loss is driven towards 1; unlike UW-O the scales are learned by gradient
  descent and lag behind the losses. The effective weight is
  :math:`w_k = e^{s_k}`.

  Args:
    losses: ``(K,)`` per-task losses.
    log_scales: ``(K,)`` learnable :math:`s_k`, initialised to 0.

  Returns:
    ``(total, weights)`` with ``weights = exp(s)`` carrying no gradient.

  References:
    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021,
    https://openreview.net/forum?id=IMPnRXEWpvr.
  """
  if jnp.shape(log_scales) != jnp.shape(losses) or jnp.ndim(losses) != 1:
    raise ValueError(
        f"imtl_l_loss: losses {jnp.shape(losses)} and log_scales "
        f"{jnp.shape(log_scales)} must both have shape (num_tasks,).")
  dtype = jnp.result_type(losses, log_scales)
  scales = jnp.exp(log_scales.astype(dtype))
  total = jnp.sum(scales * losses - log_scales)
  return total, jax.lax.stop_gradient(scales)


def imtl_l(init_log_scale: float = 0.0) -> _base.Weighting:
  """IMTL-L as a :class:`~mtl_jax.weighting.Weighting`.

  The learnable parameters are ``{"log_scales": (K,)}``.

  Args:
    init_log_scale: initial value of every :math:`s_k` (0: all weights 1).
  """
  _checks.number(init_log_scale, "init_log_scale", "imtl_l",
                 hint="It is the initial log-scale s_k (0: all weights 1).")
  init_log_scale = float(init_log_scale)

  def init(num_tasks, *, key=None):
    num_tasks = _base.check_num_tasks(num_tasks)
    return ({"log_scales": jnp.full((num_tasks,), init_log_scale, jnp.float32)},
            _base.stateless(num_tasks, key))

  def apply(params, state, losses):
    _base.check_losses_shape(
        losses, _base.recorded_num_tasks(state, "imtl_l"), "imtl_l")
    total, weights = imtl_l_loss(losses, params["log_scales"])
    return _base.WeightedLoss(total, weights, state)

  return _base.Weighting(init, apply)
