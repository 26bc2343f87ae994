r"""Mean: the average of the task gradients, in gradient space.

.. math::

  w = \tfrac{1}{K}\mathbf{1}, \qquad d = J^\top w = \frac{1}{K}\sum_{k=1}^{K} g_k

No paper: the baseline of TorchJD (``Mean``), Quinton, Rey, "Jacobian
Descent for Multi-Objective Optimization", 2024,
https://arxiv.org/abs/2406.16232.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.aggregation import _base


def mean_weights(gramian: jax.Array) -> jax.Array:
  r"""Mean's weights: :math:`1/K` for every task.

  .. math::

    w = \tfrac{1}{K}\mathbf{1}

  where :math:`K` is the size of the Gramian :math:`G = J J^\top`, read only
  for its shape and dtype.

  Conventions: TorchJD's ``Mean`` (1/K). In gradient space each head gets
  its own unweighted gradient; unlike :func:`mtl_jax.weighting.ew` or a
  scalarization with weights 1/K, which weight the losses and so also scale
  every head by its weight. (LibMTL's ``EW`` uses weights 1: see
  :func:`~mtl_jax.aggregation.sum_`.)

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.

  Returns:
    ``(K,)`` weights :math:`1/K`, in the Gramian's dtype, with no gradient.

  Example:
    >>> mean_weights(jnp.array([[18., -22.], [-22., 38.]]))
    Array([0.5, 0.5], dtype=float32)

  References:
    TorchJD's ``Mean``; Quinton, Rey, "Jacobian Descent for Multi-Objective
    Optimization", 2024, https://arxiv.org/abs/2406.16232.
  """
  _base.check_gramian(gramian, None, "mean_weights")
  num_tasks = gramian.shape[0]
  return jnp.full((num_tasks,), 1.0 / num_tasks, _base.float_dtype(gramian))


def mean() -> _base.Aggregator:
  """Mean as an :class:`~mtl_jax.aggregation.Aggregator` (no state)."""
  return _base.gramian_aggregator(
      lambda state, g: (mean_weights(g), state), _base.stateless, "mean")
