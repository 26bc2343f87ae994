r"""Aligned-MTL: align the principal components of the gradients, then scale.

.. math::

  G = V \Lambda V^\top, \qquad
  w = \sqrt{\sigma}\, V \Lambda^{-1/2} V^\top p, \qquad d = J^\top w

Senushkin, Patakin, Kuznetsov, Konushin, "Independent Component Alignment
for Multi-Task Learning", CVPR 2023, https://arxiv.org/abs/2305.19000.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mtl_jax.aggregation import _base, _linalg

SCALE_MODES = ("min", "median", "rmse")


def _check_scale_mode(scale_mode: Any, method: str) -> None:
  if scale_mode not in SCALE_MODES:
    raise ValueError(
        f"{method}: scale_mode must be one of {SCALE_MODES}, got "
        f"{scale_mode!r}.")


def aligned_mtl_weights(gramian: jax.Array, pref_vector: Any | None = None,
                        scale_mode: str = "min") -> jax.Array:
  r"""Aligned-MTL's weights: the gradients made orthogonal and equally long.

  .. math::

    w = B p, \qquad B = \sqrt{\sigma}\, V_{+} \Lambda_{+}^{-1/2} V_{+}^\top

  where :math:`G = J J^\top = V \Lambda V^\top` is the eigen-decomposition of
  the Gramian, :math:`V_{+}, \Lambda_{+}` keep the eigenvalues above
  :math:`K \epsilon \lambda_{\max}` (:math:`\epsilon` of the dtype; when none
  is kept, :math:`B = I`), :math:`p` the preference vector (default
  :math:`1/K`) and :math:`\sigma` the scale: the smallest kept eigenvalue
  (``"min"``), their median (``"median"``) or their mean (``"rmse"``). The
  rows of :math:`B J` are orthogonal with equal norms :math:`\sqrt{\sigma}`
  (the condition number of the aligned system is 1).

  Conventions: TorchJD's (:math:`p = 1/K`). LibMTL uses :math:`\sigma =
  \lambda_{\min}` and :math:`w = B\mathbf{1}`, i.e. :math:`K` times these
  weights (``pref_vector=jnp.ones(K)`` gives LibMTL's).

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    pref_vector: ``(K,)`` non-negative preferences; ``None`` for :math:`1/K`.
    scale_mode: ``"min"`` (the paper's and TorchJD's default), ``"median"``
      or ``"rmse"``.

  Returns:
    ``(K,)`` weights.

  Example:
    >>> aligned_mtl_weights(jnp.array([[18., -22.], [-22., 38.]]))
    Array([0.5591, 0.4083], dtype=float32)

  References:
    Senushkin et al., "Independent Component Alignment for Multi-Task
    Learning", CVPR 2023, https://arxiv.org/abs/2305.19000.
  """
  _base.check_gramian(gramian, None, "aligned_mtl_weights")
  num_tasks = gramian.shape[0]
  _base.check_pref_vector(pref_vector, num_tasks, "aligned_mtl_weights")
  dtype = _base.float_dtype(gramian)
  pref = _base.pref_or_mean(pref_vector, num_tasks, dtype)
  values, vectors, kept = _linalg.eigh_psd(gramian)
  count = jnp.maximum(jnp.sum(kept), 1)
  if scale_mode == "min":
    sigma = jnp.min(jnp.where(kept, values, jnp.inf))
  elif scale_mode == "median":
    sigma = jnp.nanmedian(jnp.where(kept, values, jnp.nan))
  else:
    sigma = jnp.sum(jnp.where(kept, values, 0.0)) / count
  inv_sqrt = jnp.where(kept, 1.0 / jnp.sqrt(jnp.where(kept, values, 1.0)), 0.0)
  b = jnp.sqrt(jnp.where(jnp.any(kept), sigma, 1.0)) * (
      (vectors * inv_sqrt) @ vectors.T)
  b = jnp.where(jnp.any(kept), b, jnp.eye(num_tasks, dtype=dtype))
  return b @ pref


def aligned_mtl(pref_vector: Any | None = None,
                scale_mode: str = "min") -> _base.Aggregator:
  """Aligned-MTL as an :class:`~mtl_jax.aggregation.Aggregator` (no state).

  Args:
    pref_vector: see :func:`aligned_mtl_weights`; its length is checked
      against K at ``init``.
    scale_mode: see :func:`aligned_mtl_weights`.
  """
  _check_scale_mode(scale_mode, "aligned_mtl")
  _base.check_pref_vector(pref_vector, None, "aligned_mtl")
  return _base.gramian_aggregator(
      lambda state, g: (aligned_mtl_weights(g, pref_vector, scale_mode), state),
      _base.stateless, "aligned_mtl",
      check_init=lambda k: _base.check_pref_vector(pref_vector, k,
                                                   "aligned_mtl"))
