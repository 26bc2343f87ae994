"""GradNorm's synthetic regression: formula, task scales, determinism, pipeline."""
import numpy as np
import pytest

from mtl_jax.data import synthetic


def test_targets_follow_the_formula():
  data = synthetic.generate(5, num_tasks=3, sigmas=[1.0, 10.0, 100.0], problem_seed=7)
  p = synthetic.make_problem(3, [1.0, 10.0, 100.0], problem_seed=7)
  n, i = 4, 2
  want = 100.0 * np.tanh((p.b + p.eps[i]) @ data["x"][n].astype(np.float64))
  np.testing.assert_allclose(data["y"][n, i], want, rtol=1e-4, atol=1e-4)
  assert data["x"].shape == (5, 250) and data["y"].shape == (5, 3, 100)


def test_problem_statistics():
  p = synthetic.make_problem(4, problem_seed=0)
  assert abs(p.b.var() - 10.0) < 0.3 and abs(p.eps.var() - 3.5) < 0.1
  assert p.sigmas.max() / p.sigmas.min() == pytest.approx(100.0)


def test_task_scales_span_orders_of_magnitude():
  y = synthetic.generate(2000, num_tasks=4)["y"]
  std = y.std(axis=(0, 2))
  assert np.all(np.diff(std) > 0) and std[-1] / std[0] > 50
  # Not saturated: a good share of outputs away from +-sigma.
  assert np.mean(np.abs(y[:, 0]) < 0.9) > 0.3


def test_problem_is_fixed_by_its_seed_and_inputs_by_theirs():
  a = synthetic.generate(3, num_tasks=2, problem_seed=1, seed=0)
  np.testing.assert_array_equal(a["y"], synthetic.generate(3, num_tasks=2, problem_seed=1)["y"])
  b = synthetic.generate(3, num_tasks=2, problem_seed=2, seed=0)
  assert not np.allclose(a["x"], synthetic.generate(3, num_tasks=2, problem_seed=1, seed=1)["x"])
  assert not np.allclose(a["y"], b["y"])


def test_pipeline_batches_splits_and_state():
  kw = dict(batch_size=8, num_tasks=3, num_examples=40, shard_index=0, shard_count=1)
  ds = synthetic.load("train", **kw)
  it = iter(ds)
  batch = next(it)
  assert batch["x"].shape == (8, 250) and batch["y"].shape == (8, 3, 100)
  assert batch["x"].dtype == batch["y"].dtype == np.float32
  for _ in range(6):
    next(it)
  state = it.get_state()
  expected = [next(it)["x"] for _ in range(3)]
  fresh = iter(ds)
  fresh.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(fresh)["x"], want)
  val = next(iter(synthetic.load("validation", **kw)))["x"]
  assert not np.isin(val[:, 0], batch["x"][:, 0]).any()


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="num_tasks"):
    synthetic.make_problem(0)
  with pytest.raises(ValueError, match="sigmas"):
    synthetic.make_problem(3, sigmas=[1.0, 2.0])
  with pytest.raises(ValueError, match="split"):
    synthetic.load("dev", batch_size=2)
