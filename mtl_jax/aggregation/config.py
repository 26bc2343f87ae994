r"""ConFIG: the conflict-free direction of equal cosine with every gradient.

.. math::

  \hat u = \frac{U^{+} p}{\lVert U^{+} p \rVert}, \quad
  u_k = \frac{g_k}{\lVert g_k \rVert}, \qquad
  d = \Big(\sum_{k=1}^{K} g_k^\top \hat u\Big)\, \hat u

Liu, Chen, Thuerey, "ConFIG: Towards Conflict-free Training of Physics
Informed Neural Networks", ICLR 2025, https://arxiv.org/abs/2408.11104.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mtl_jax.aggregation import _base, _linalg


def config_weights(gramian: jax.Array,
                   pref_vector: Any | None = None) -> jax.Array:
  r"""ConFIG's weights, computed from the Gramian alone.

  .. math::

    \beta = D^{+} (D^{+} G D^{+})^{+} p, \qquad
    w = \frac{\mathbf{1}^\top G \beta}{\beta^\top G \beta}\, \beta

  where :math:`G = J J^\top`, :math:`D = \mathrm{diag}(\lVert g_k \rVert)`
  (so :math:`D^{+} G D^{+} = U U^\top` is the Gramian of the unit gradients
  :math:`u_k`, a zero gradient giving a zero row) and :math:`p` the
  preference vector (default: ones). Derivation: :math:`U^{+} p = U^\top
  (U U^\top)^{+} p = J^\top \beta`, so :math:`\hat u = J^\top \beta /
  \sqrt{\beta^\top G \beta}` and :math:`d = (\mathbf{1}^\top J \hat u)\hat u
  = J^\top w`. The direction has the same cosine with every unit gradient it
  can reach (the minimum-norm solution of :math:`U x = p`), and its length is
  the sum of the gradients' projections on it. When
  :math:`\beta^\top G \beta = 0` the weights are 0.

  Conventions: TorchJD's (:math:`p` = ones by default) computes
  :math:`\mathrm{pinv}(U)` on the Jacobian; this Gramian form gives the same
  direction without materialising :math:`U`. Not in LibMTL.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    pref_vector: ``(K,)`` non-negative preferences; ``None`` for ones.

  Returns:
    ``(K,)`` weights, with no gradient.

  References:
    Liu, Chen, Thuerey, "ConFIG: Towards Conflict-free Training of Physics
    Informed Neural Networks", ICLR 2025, https://arxiv.org/abs/2408.11104.
  """
  _base.check_gramian(gramian, None, "config_weights")
  num_tasks = gramian.shape[0]
  _base.check_pref_vector(pref_vector, num_tasks, "config_weights")
  gramian = jax.lax.stop_gradient(gramian)
  dtype = _base.float_dtype(gramian)
  pref = (jnp.ones((num_tasks,), dtype) if pref_vector is None
          else jnp.asarray(pref_vector, dtype))
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
  inv_norms = jnp.where(norms > 0, 1.0 / jnp.where(norms > 0, norms, 1.0), 0.0)
  unit_gramian = inv_norms[:, None] * gramian * inv_norms[None, :]
  beta = inv_norms * (_linalg.pinv_psd(unit_gramian) @ pref)
  g_beta = gramian @ beta
  norm_sq = beta @ g_beta
  ok = norm_sq > 0
  return jnp.where(ok, jnp.sum(g_beta) / jnp.where(ok, norm_sq, 1.0), 0.0) * beta


def config(pref_vector: Any | None = None) -> _base.Aggregator:
  """ConFIG as an :class:`~mtl_jax.aggregation.Aggregator` (no state).

  Args:
    pref_vector: see :func:`config_weights`; its length is checked against K
      at ``init``.
  """
  _base.check_pref_vector(pref_vector, None, "config")
  return _base.gramian_aggregator(
      lambda state, g: (config_weights(g, pref_vector), state),
      _base.stateless, "config",
      check_init=lambda k: _base.check_pref_vector(pref_vector, k, "config"))
