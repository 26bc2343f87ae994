r"""Constant: fixed weights on the task gradients, in gradient space.

.. math::

  w = c, \qquad d = J^\top c = \sum_{k=1}^{K} c_k g_k

No paper: the baseline of TorchJD (``Constant``), Quinton, Rey, "Jacobian
Descent for Multi-Objective Optimization", 2024,
https://arxiv.org/abs/2406.16232.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import _checks
from mtl_jax.aggregation import _base


def _check_weights(weights: Any, num_tasks: Any, method: str) -> None:
  _checks.numeric(weights, "weights", method,
                  "a vector of finite numbers, one per task")
  shape = np.shape(weights)
  if len(shape) != 1 or shape[0] < 1:
    raise ValueError(
        f"{method}: weights must be a non-empty vector with one entry per "
        f"task, got shape {shape}.")
  if num_tasks is not None and shape[0] != num_tasks:
    raise ValueError(
        f"{method}: weights has {shape[0]} entries but there are {num_tasks} "
        "tasks. Give one weight per task, in the order of the task losses.")
  concrete = _base._concrete(weights)  # pylint: disable=protected-access
  if concrete is not None and not np.all(np.isfinite(concrete)):
    raise ValueError(f"{method}: weights must be finite, got "
                     f"{concrete.tolist()}.")


def constant_weights(gramian: jax.Array, weights: Any) -> jax.Array:
  r"""Constant's weights: the given vector :math:`c`.

  .. math::

    w = c

  where :math:`c \in \mathbb{R}^K` is fixed (any sign, as TorchJD allows)
  and :math:`K` the size of the Gramian :math:`G = J J^\top`, read only for
  its shape and dtype.

  Conventions: TorchJD's ``Constant``. In gradient space each head gets its
  own unweighted gradient; :func:`mtl_jax.weighting.scalarization` weights
  the losses instead, so it also scales every head by its weight (the same
  update when there are no task-specific parameters).

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    weights: ``(K,)`` finite weights :math:`c`.

  Returns:
    ``(K,)`` weights :math:`c`, in the Gramian's dtype, with no gradient.

  Example:
    >>> constant_weights(jnp.array([[18., -22.], [-22., 38.]]), [1., 2.])
    Array([1., 2.], dtype=float32)

  References:
    TorchJD's ``Constant``; Quinton, Rey, "Jacobian Descent for
    Multi-Objective Optimization", 2024, https://arxiv.org/abs/2406.16232.
  """
  _base.check_gramian(gramian, None, "constant_weights")
  _check_weights(weights, gramian.shape[0], "constant_weights")
  return jax.lax.stop_gradient(
      jnp.asarray(weights, _base.float_dtype(gramian)))


def constant(weights: Any) -> _base.Aggregator:
  """Constant as an :class:`~mtl_jax.aggregation.Aggregator` (no state).

  Args:
    weights: ``(K,)`` finite weights, one per task (a list, a tuple or an
      array); the length is checked against K at ``init``.
  """
  _check_weights(weights, None, "constant")
  return _base.gramian_aggregator(
      lambda state, g: (constant_weights(g, weights), state), _base.stateless,
      "constant",
      check_init=lambda k: _check_weights(weights, k, "constant"))
