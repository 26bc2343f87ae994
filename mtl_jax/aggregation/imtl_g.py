r"""IMTL-G: the direction whose projection on every unit task gradient is equal.

.. math::

  v = G^{+} s, \quad s_k = \sqrt{G_{kk}}, \qquad
  w = \frac{v}{\mathbf{1}^\top v}, \qquad d = J^\top w

Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task
Learning", ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.aggregation import _base, _linalg


def imtl_g_weights(gramian: jax.Array) -> jax.Array:
  r"""IMTL-G's weights: equal projections of :math:`d` on the unit gradients.

  .. math::

    w = \frac{G^{+} s}{\mathbf{1}^\top G^{+} s}, \qquad s_k = \sqrt{G_{kk}}
      = \lVert g_k \rVert

  where :math:`G = J J^\top` is the Gramian of the task gradients
  :math:`g_k` and :math:`G^{+}` its pseudo-inverse. For a full-rank
  :math:`J`, :math:`d = J^\top w` satisfies
  :math:`d^\top g_k / \lVert g_k \rVert = 1 / \mathbf{1}^\top G^{-1} s` for
  every task: no task is favoured by the update. The weights sum to 1; when
  :math:`|\mathbf{1}^\top v| < 10^{-12}` they are all 0 (TorchJD's rule; it
  allows a rank-deficient :math:`J`).

  Conventions: TorchJD's form (closed form, any rank). LibMTL's ``IMTL``
  solves the paper's equivalent linear system, which needs a full-rank
  :math:`J` and gives the same weights then; it also applies IMTL-L
  (``mtl_jax.weighting.imtl_l``) to the losses.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.

  Returns:
    ``(K,)`` weights summing to 1 (or all 0), with no gradient.

  Example:
    >>> imtl_g_weights(jnp.array([[18., -22.], [-22., 38.]]))
    Array([0.5923, 0.4077], dtype=float32)

  References:
    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021,
    https://openreview.net/forum?id=IMPnRXEWpvr.
  """
  _base.check_gramian(gramian, None, "imtl_g_weights")
  gramian = jax.lax.stop_gradient(gramian)
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
  v = _linalg.pinv_psd(gramian) @ norms
  total = jnp.sum(v)
  ok = jnp.abs(total) >= 1e-12
  return jnp.where(ok, v / jnp.where(ok, total, 1.0), 0.0)


def imtl_g() -> _base.Aggregator:
  """IMTL-G as an :class:`~mtl_jax.aggregation.Aggregator` (no state)."""
  return _base.gramian_aggregator(
      lambda state, g: (imtl_g_weights(g), state), _base.stateless, "imtl_g")
