"""Small linear-algebra helpers for symmetric positive semi-definite Gramians."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def eigh_psd(gramian: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Eigen-decomposition of a PSD matrix and the mask of the kept eigenvalues.

  Returns ``(eigenvalues, eigenvectors, kept)``: eigenvalues clipped at 0 and
  ``kept`` true for those above ``K * eps * max(eigenvalues)`` (``eps`` of the
  dtype), the usual numerical-rank cut-off (as ``numpy.linalg.pinv``'s
  default ``rcond`` does).
  """
  sym = 0.5 * (gramian + gramian.T)
  values, vectors = jnp.linalg.eigh(sym)
  values = jnp.maximum(values, 0.0)
  cutoff = (gramian.shape[0] * jnp.finfo(values.dtype).eps
            * jnp.max(values, initial=0.0))
  return values, vectors, values > cutoff


def pinv_psd(gramian: jax.Array) -> jax.Array:
  """Moore-Penrose pseudo-inverse of a PSD matrix (eigenvalues below the
  numerical-rank cut-off of :func:`eigh_psd` are treated as 0)."""
  values, vectors, kept = eigh_psd(gramian)
  inverse = jnp.where(kept, 1.0 / jnp.where(kept, values, 1.0), 0.0)
  return (vectors * inverse) @ vectors.T
