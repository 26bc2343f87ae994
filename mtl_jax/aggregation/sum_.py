r"""Sum: the sum of the task gradients, in gradient space.

.. math::

  w = \mathbf{1}, \qquad d = J^\top w = \sum_{k=1}^{K} g_k

No paper: the baseline of TorchJD (``Sum``), Quinton, Rey, "Jacobian Descent
for Multi-Objective Optimization", 2024, https://arxiv.org/abs/2406.16232.
The file and the factory are ``sum_`` so that neither hides Python's
built-in ``sum`` (in a star import, or as ``mtl_jax.aggregation.sum``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.aggregation import _base


def sum_weights(gramian: jax.Array) -> jax.Array:
  r"""Sum's weights: 1 for every task.

  .. math::

    w = \mathbf{1} \in \mathbb{R}^K

  where :math:`K` is the size of the Gramian :math:`G = J J^\top`, read only
  for its shape and dtype.

  Conventions: TorchJD's ``Sum``, and LibMTL's ``EW`` (weights 1 despite its
  docstring's 1/T). Each head gets its own unweighted gradient, so this is
  exactly :func:`mtl_jax.weighting.ew` (which weights the losses by 1): the
  same update, through the Jacobian instead of one backward pass.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.

  Returns:
    ``(K,)`` ones, in the Gramian's dtype, with no gradient.

  Example:
    >>> sum_weights(jnp.array([[18., -22.], [-22., 38.]]))
    Array([1., 1.], dtype=float32)

  References:
    TorchJD's ``Sum``; Quinton, Rey, "Jacobian Descent for Multi-Objective
    Optimization", 2024, https://arxiv.org/abs/2406.16232.
  """
  _base.check_gramian(gramian, None, "sum_weights")
  return jnp.ones((gramian.shape[0],), _base.float_dtype(gramian))


def sum_() -> _base.Aggregator:
  """Sum as an :class:`~mtl_jax.aggregation.Aggregator` (no state);
  registered as ``"sum"``."""
  return _base.gramian_aggregator(
      lambda state, g: (sum_weights(g), state), _base.stateless, "sum")
