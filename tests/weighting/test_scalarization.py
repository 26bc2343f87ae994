"""Scalarization: fixed weights, and the simplex grid to search them."""
import math

import _asserts
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import scalarization_grid

CASES = [(1, 0.1), (2, 0.1), (3, 0.1), (4, 0.1), (2, 0.5), (3, 0.25),
         (3, 0.05), (5, 0.2)]


@pytest.mark.parametrize("num_tasks,step", CASES)
def test_grid(num_tasks, step):
  grid = scalarization_grid(num_tasks, step)
  n = round(1 / step)
  # Stars and bars: K positive counts summing to N.
  assert grid.shape == (math.comb(n - 1, num_tasks - 1), num_tasks)
  assert len({tuple(np.round(row / step).astype(int)) for row in grid}) == len(grid)
  _asserts.assert_simplex(grid, atol=1e-12)
  assert np.all(grid >= step - 1e-12)
  # Every entry is a multiple of the step.
  np.testing.assert_allclose(grid / step, np.round(grid / step), atol=1e-9)


def test_paper_counts():
  assert scalarization_grid(3).shape == (36, 3)
  assert scalarization_grid(2).shape == (9, 2)
  np.testing.assert_allclose(scalarization_grid(2)[:, 0],
                             [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


@pytest.mark.parametrize("step", [0.0, -0.1, 0.3, 0.15, float("nan")])
def test_grid_rejects_bad_step(step):
  with pytest.raises(ValueError, match="step"):
    scalarization_grid(3, step)


def test_grid_rejects_step_too_large_for_the_tasks():
  with pytest.raises(ValueError, match="step"):
    scalarization_grid(3, 0.5)  # two cells cannot give three weights >= 0.5


@pytest.mark.parametrize("num_tasks", [0, -1, 2.5, True])
def test_grid_rejects_bad_num_tasks(num_tasks):
  with pytest.raises(ValueError, match="num_tasks"):
    scalarization_grid(num_tasks)


def test_each_grid_row_is_a_method():
  losses = jnp.asarray([0.5, 2.0, 1.0])
  for row in scalarization_grid(3, 0.25):
    method = weighting.scalarization(tuple(row))
    out = method.apply(*method.init(3), losses)
    np.testing.assert_allclose(out.weights, row, rtol=1e-6)
    np.testing.assert_allclose(out.total, row @ np.asarray(losses), rtol=1e-6)


@pytest.mark.parametrize("weights", [(), ((0.5, 0.5),), (1.0, float("nan")),
                                     (float("inf"), 1.0)])
def test_rejects_bad_weights(weights):
  with pytest.raises(ValueError, match="weights"):
    weighting.scalarization(weights)


def test_init_rejects_other_num_tasks():
  with pytest.raises(ValueError, match="3 tasks"):
    weighting.scalarization((0.2, 0.3, 0.5)).init(2)
