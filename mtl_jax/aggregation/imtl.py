r"""IMTL: IMTL-G on the gradients of the IMTL-L scaled losses (LibMTL's hybrid).

.. math::

  L'_k = e^{s_k} L_k - s_k, \qquad G' = D G D, \quad D = \mathrm{diag}(e^{s}),
  \qquad w = e^{s} \odot \mathrm{IMTL\text{-}G}(G'), \qquad d = J^\top w

Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task
Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.aggregation import _base
from mtl_jax.aggregation.imtl_g import imtl_g_weights
from mtl_jax.weighting._base import check_num_tasks
from mtl_jax.weighting.imtl_l import imtl_l_loss


def imtl_weights(gramian: jax.Array, log_scales: jax.Array) -> jax.Array:
  r"""IMTL's weights on the raw gradients, for given loss scales.

  .. math::

    \alpha = \mathrm{IMTL\text{-}G}(D G D), \qquad
    w = e^{s} \odot \alpha, \qquad D = \mathrm{diag}(e^{s})

  where :math:`G = J J^\top` is the Gramian of the raw task gradients
  :math:`g_k`, :math:`s` the IMTL-L log-scales and
  :math:`\mathrm{IMTL\text{-}G}` :func:`~mtl_jax.aggregation.imtl_g_weights`.
  The gradient of the scaled loss :math:`L'_k = e^{s_k} L_k - s_k` in the
  shared parameters is :math:`e^{s_k} g_k`, whose Gramian is :math:`D G D`;
  :math:`\alpha` weights those scaled gradients (it sums to 1), so the raw
  rows get :math:`w = e^{s} \odot \alpha`. The direction is parallel to
  IMTL-G's on :math:`G` (the equal-projection condition does not depend on
  the gradients' lengths); only its length depends on :math:`s`, and
  :math:`s = 0` gives IMTL-G exactly.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    log_scales: ``(K,)`` log-scales :math:`s`.

  Returns:
    ``(K,)`` weights, in the Gramian's dtype, with no gradient.

  Example:
    >>> g = jnp.array([[18., -22.], [-22., 38.]])
    >>> imtl_weights(g, jnp.zeros(2))
    Array([0.5923, 0.4077], dtype=float32)

  References:
    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021,
    https://openreview.net/forum?id=IMPnRXEWpvr.
  """
  _base.check_gramian(gramian, None, "imtl_weights")
  if jnp.shape(log_scales) != (gramian.shape[0],):
    raise ValueError(
        f"imtl_weights: log_scales must have shape ({gramian.shape[0]},), one "
        f"per task, got shape {jnp.shape(log_scales)}.")
  dtype = _base.float_dtype(gramian)
  gramian = jax.lax.stop_gradient(gramian)
  scales = jnp.exp(jax.lax.stop_gradient(log_scales).astype(dtype))
  alpha = imtl_g_weights(scales[:, None] * gramian * scales[None, :])
  return jax.lax.stop_gradient(scales * alpha)


def imtl() -> _base.Aggregator:
  r"""IMTL as an :class:`~mtl_jax.aggregation.Aggregator` (LibMTL's ``IMTL``).

  The learnable parameters are ``{"log_scales": (K,)}``, initialised to 0
  (LibMTL). ``apply(params, state, G, losses=L)`` returns:

  * ``weights`` :math:`\operatorname{sg}(e^{s} \odot \alpha)`
    (:func:`imtl_weights`) for the shared parameters;
  * ``head_weights`` :math:`\operatorname{sg}(e^{s})`: LibMTL backpropagates
    each scaled loss :math:`L'_k` into its own head;
  * ``aux_loss`` :math:`\sum_k e^{s_k} \operatorname{sg}(L_k) - s_k`
    (:func:`mtl_jax.weighting.imtl_l_loss` on the stopped losses), whose
    gradient :math:`e^{s} \odot L - 1` in :math:`s` is what LibMTL's K
    backward passes leave in :math:`s`. The model's optimiser steps
    :math:`s` with it.

  Conventions: LibMTL combines IMTL-L and IMTL-G this way and solves IMTL-G
  as the paper's linear system (full-rank :math:`J`); this uses TorchJD's
  closed form, equal for a full-rank :math:`J` and defined for any rank.
  IMTL-G alone is :func:`~mtl_jax.aggregation.imtl_g`, IMTL-L alone
  :func:`mtl_jax.weighting.imtl_l`.

  Returns:
    An ``Aggregator`` with parameters ``{"log_scales"}`` and no state (a
    :class:`~mtl_jax.aggregation.StatelessState`).

  References:
    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021,
    https://openreview.net/forum?id=IMPnRXEWpvr.
  """

  def init(num_tasks: int, *, key: jax.Array | None = None):
    num_tasks = check_num_tasks(num_tasks)
    params = {"log_scales": jnp.zeros((num_tasks,), jnp.float32)}
    return params, _base.stateless(num_tasks, key)

  def apply(params, state, gramian, *, losses=None):
    num_tasks = state.tasks.shape[-1]
    _base.check_gramian(gramian, num_tasks, "imtl")
    losses = _base.require_losses(losses, num_tasks, "imtl")
    dtype = _base.float_dtype(gramian)
    log_scales = params["log_scales"]
    weights = imtl_weights(gramian, log_scales)
    head_weights = jax.lax.stop_gradient(jnp.exp(log_scales).astype(dtype))
    aux, _ = imtl_l_loss(losses.astype(log_scales.dtype), log_scales)
    return _base.GradientWeights(weights, state, head_weights=head_weights,
                                 aux_loss=aux)

  return _base.Aggregator(init, apply)
