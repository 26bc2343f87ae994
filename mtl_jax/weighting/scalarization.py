r"""Scalarization: fixed task weights, and the simplex grid to search them.

.. math::

  \mathcal{L} = \sum_{k=1}^{K} w_k L_k, \qquad w \text{ fixed}

The costly baseline of Kirchdorfer et al. (GCPR 2024,
https://arxiv.org/abs/2408.07985): one full training per point of a grid over
the simplex, keeping the best on validation.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import _checks
from mtl_jax.weighting import _base


def scalarization_grid(num_tasks: int, step: float = 0.1) -> np.ndarray:
  r"""Every weight vector on the simplex grid with all weights >= ``step``.

  .. math::

    \{\, w = \mathrm{step} \cdot n \;:\; n \in \mathbb{Z}^K,\ n_k \ge 1,\
    \textstyle\sum_k n_k = 1/\mathrm{step} \,\}

  There are :math:`\binom{N-1}{K-1}` such vectors with :math:`N = 1/\mathrm{step}`:
  36 for 3 tasks and 9 for 2 tasks at step 0.1.

  Args:
    num_tasks: :math:`K \ge 1`.
    step: grid spacing; ``1 / step`` must be an integer :math:`N \ge K`.

  Returns:
    ``(num_points, K)`` float64 numpy array, rows summing to 1, in
    lexicographic order of the integer counts, largest first weight first.

  References:
    Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning", GCPR 2024, https://arxiv.org/abs/2408.07985.
  """
  num_tasks = _base.check_num_tasks(num_tasks)
  _checks.number(step, "step", "scalarization_grid", low=0, low_open=True,
                 hint="It is the grid spacing; 1 / step must be an integer.")
  n = round(1.0 / step)
  if abs(n * step - 1.0) > 1e-9:
    raise ValueError(
        f"1 / step must be an integer, got step={step!r} (1/step = {1/step}).")
  if n < num_tasks:
    raise ValueError(
        f"step={step!r} leaves no grid point with every weight >= step for "
        f"{num_tasks} tasks; use step <= {1 / num_tasks}.")
  # Choose K-1 cut points among the N-1 gaps of N unit cells ("stars and bars").
  rows = []
  for cuts in itertools.combinations(range(1, n), num_tasks - 1):
    bounds = (0,) + cuts + (n,)
    rows.append([b - a for a, b in itertools.pairwise(bounds)])
  counts = np.array(sorted(rows, reverse=True), dtype=np.float64)
  return counts / n


class ScalarizationState(NamedTuple):
  """The fixed weights, in the state so that one compiled train step serves
  every weight vector: swap them with ``state._replace(weights=w)``."""
  weights: jax.Array  # (K,) the default float type


def scalarization(weights: Sequence[float]) -> _base.Weighting:
  r"""Fixed task weights as a :class:`~mtl_jax.weighting.Weighting`.

  .. math::

    \mathcal{L} = \sum_{k=1}^{K} w_k L_k

  Args:
    weights: the :math:`K` fixed weights, finite and >= 0, not all zero (for
      example a row of :func:`scalarization_grid`). They need not sum to 1.
      Their length fixes the number of tasks. They live in the state
      (:class:`ScalarizationState`), so a grid search compiles its train
      step once and swaps them between runs.
  """
  weights = _checks.vector(
      weights, "weights", "scalarization", nonnegative=True,
      hint="w_k is the fixed share of task k in the total sum_k w_k L_k: a "
      "negative weight would ascend that task's loss, all zeros would train "
      "nothing. They need not sum to 1.")
  if weights is None:
    raise ValueError("scalarization: weights must be concrete numbers, not "
                     "traced; vmap over the losses, not over the weights.")
  num_tasks = weights.size

  def init_state(num_tasks: int, key: jax.Array | None) -> ScalarizationState:
    del num_tasks, key
    # float32, or float64 with jax_enable_x64.
    return ScalarizationState(jnp.asarray(weights, jnp.result_type(float)))

  return _base.fixed_weighting(
      lambda params, state, losses: (state.weights, state),
      init_state, "scalarization", num_tasks=num_tasks,
      num_tasks_of=lambda state: jnp.shape(state.weights)[-1])
