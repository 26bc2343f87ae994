"""GradDrop: the sign rule against numpy, the pinned TorchJD value, the leak,
the factory's draws and its errors."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative

from mtl_jax import aggregation
from mtl_jax.aggregation.graddrop import graddrop, graddrop_direction

_direction = jax.jit(graddrop_direction)
_with_leak = jax.jit(lambda j, u, leak: graddrop_direction(j, u, leak))

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)
# torch.manual_seed(0); torch.rand(3) (REFERENCE 8.1).
TORCH_DRAWS = np.array([0.4963, 0.7682, 0.0885], np.float32)


def _graddrop_numpy(jac, uniform, leak=None):
  """The rule as written in the paper's Algorithm 1 (lines 10-15), float64."""
  jac = np.asarray(jac, np.float64)
  k, p = jac.shape
  leak = np.zeros(k) if leak is None else np.broadcast_to(leak, (k,))
  out = np.zeros(p)
  for col in range(p):
    column = jac[:, col]
    mass = np.abs(column).sum()
    purity = 0.5 * (1 + column.sum() / mass) if mass > 0 else 0.5
    for i in range(k):
      keep = ((purity > uniform[col] and column[i] > 0)
              or (purity < uniform[col] and column[i] < 0))
      out[col] += (leak[i] + (1 - leak[i]) * keep) * column[i]
  return out


def test_pinned_torchjd():
  # Column 0: P = (1 + 2/10) / 2 = 0.6 > 0.4963: keep the positive 6.
  # Columns 1, 2: P = 1 > U: keep both 1s. d = [6, 2, 2].
  d = _direction(jnp.asarray(J_BASE), jnp.asarray(TORCH_DRAWS))
  np.testing.assert_array_equal(d, [6.0, 2.0, 2.0])
  # A draw above 0.6 keeps the negative -4 instead.
  d = _direction(jnp.asarray(J_BASE), jnp.array([0.7, 0.5, 0.5]))
  np.testing.assert_array_equal(d, [-4.0, 2.0, 2.0])


@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_matches_the_rule_in_numpy(index):
  jac = _inputs.all_jacobians()[index]
  rng = np.random.default_rng(index)
  uniform = rng.uniform(size=jac.shape[1]).astype(np.float32)
  leak = rng.uniform(size=jac.shape[0]).astype(np.float32)
  scale = max(1.0, float(np.abs(jac).max()))
  d = _direction(jnp.asarray(jac), jnp.asarray(uniform))
  _asserts.assert_finite_shape(d, (jac.shape[1],))
  np.testing.assert_allclose(d, _graddrop_numpy(jac, uniform),
                             atol=1e-5 * scale, rtol=1e-5)
  np.testing.assert_allclose(
      _with_leak(jnp.asarray(jac), jnp.asarray(uniform), jnp.asarray(leak)),
      _graddrop_numpy(jac, uniform, leak), atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_each_coordinate_keeps_one_sign(seed):
  jac = _inputs.jacobian(seed, 5, 40, 5)
  uniform = np.random.default_rng(seed).uniform(size=40).astype(np.float32)
  d = np.asarray(_direction(jnp.asarray(jac), jnp.asarray(uniform)), np.float64)
  positive = np.where(jac > 0, jac, 0.0).sum(axis=0)
  negative = np.where(jac < 0, jac, 0.0).sum(axis=0)
  purity = 0.5 * (1 + jac.sum(axis=0) / np.abs(jac).sum(axis=0))
  expected = np.where(purity > uniform, positive, negative)
  np.testing.assert_allclose(d, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_leak_one_is_the_sum_of_rows(seed):
  jac = _inputs.jacobian(seed, 4, 9, 3)
  uniform = np.random.default_rng(seed).uniform(size=9).astype(np.float32)
  d = _with_leak(jnp.asarray(jac), jnp.asarray(uniform), 1.0)
  np.testing.assert_allclose(d, jac.sum(axis=0), rtol=1e-6, atol=1e-6)
  # Per-row leak: a row with leak 1 always passes whole.
  leak = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
  d_row = _with_leak(jnp.asarray(jac), jnp.asarray(uniform), jnp.asarray(leak))
  np.testing.assert_allclose(d_row, _graddrop_numpy(jac, uniform, leak),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_row_permutation_and_positive_scale(seed):
  # P and M are symmetric in the rows, and P does not depend on a common
  # positive scale: d(J[perm]) = d(J), d(c J) = c d(J).
  jac = _inputs.jacobian(seed, 4, 12, 4)
  uniform = jnp.asarray(np.random.default_rng(seed).uniform(size=12),
                        jnp.float32)
  perm = np.random.default_rng(seed).permutation(4)
  d = np.asarray(_direction(jnp.asarray(jac), uniform))
  np.testing.assert_allclose(_direction(jnp.asarray(jac[perm]), uniform), d,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(_direction(jnp.asarray(8.0 * jac), uniform),
                             8.0 * d, rtol=1e-6, atol=1e-6)


def test_extreme_draws():
  # U = 0 keeps every column's positive entries (P > 0 unless all are <= 0).
  jac = _inputs.jacobian(4, 3, 10, 3)
  d = _direction(jnp.asarray(jac), jnp.zeros(10))
  np.testing.assert_allclose(d, np.where(jac > 0, jac, 0.0).sum(axis=0),
                             rtol=1e-6)
  d = _direction(jnp.asarray(jac), jnp.full(10, 0.999999))
  mixed = (jac > 0).any(axis=0) & (jac < 0).any(axis=0)
  np.testing.assert_allclose(np.asarray(d)[mixed],
                             np.where(jac < 0, jac, 0.0).sum(axis=0)[mixed],
                             rtol=1e-6)


def test_no_gradient():
  _asserts.assert_no_gradient(
      lambda j: graddrop_direction(j, jnp.asarray(TORCH_DRAWS)),
      jnp.asarray(J_BASE))


def test_factory_draws_split_the_key_and_report_kept_fraction():
  jac = jnp.asarray(_inputs.jacobian(2, 3, 16, 3))
  method = graddrop(seed=4)
  params, state = method.init(3)
  assert isinstance(method, aggregation.JacobianAggregator) and params == {}
  np.testing.assert_array_equal(state.key, jax.random.PRNGKey(4))
  apply = jax.jit(method.apply)
  key = jax.random.PRNGKey(4)
  for _ in range(3):
    key, sub = jax.random.split(key)
    uniform = jax.random.uniform(sub, (16,), jnp.float32)
    out = apply(params, state, jac)
    np.testing.assert_array_equal(out.direction,
                                  graddrop_direction(jac, uniform))
    np.testing.assert_array_equal(out.state.key, key)
    # The reported weight: the share of each row's nonzero entries kept.
    jac64 = np.asarray(jac, np.float64)
    purity = 0.5 * (1 + jac64.sum(0) / np.abs(jac64).sum(0))
    u = np.asarray(uniform)
    kept = ((purity > u) & (jac64 > 0)) | ((purity < u) & (jac64 < 0))
    np.testing.assert_allclose(out.weights, kept.mean(axis=1), rtol=1e-6)
    assert out.weights.dtype == jnp.float32
    state = out.state
  _asserts.assert_no_retrace(method.apply, params, state, [jac] * 3)
  # Same key, same draws: reproducible; float64 draws the same U.
  _, fresh = method.init(3)
  first = method.apply(params, fresh, jac).direction
  np.testing.assert_array_equal(method.apply(params, fresh, jac).direction,
                                first)
  with jax.enable_x64():
    d64 = method.apply(params, fresh, jnp.asarray(jac, jnp.float64))
    assert d64.direction.dtype == jnp.float64
    np.testing.assert_allclose(d64.direction, first, rtol=1e-6, atol=1e-6)


def test_factory_pinned_with_a_key_and_leak_vector():
  # PRNGKey(5)'s first draw for column 0 is below 0.6 (whichever threefry
  # layout jax uses), so d = [6, 2, 2]; row 0 keeps 2 of 3 entries.
  method = graddrop(seed=5)
  params, state = method.init(2, num_params=3)  # accepted, not needed
  out = method.apply(params, state, jnp.asarray(J_BASE))
  np.testing.assert_array_equal(out.direction, [6.0, 2.0, 2.0])
  np.testing.assert_allclose(out.weights, [2 / 3, 1.0], rtol=1e-6)
  out = graddrop(leak=(1.0, 0.0)).apply(params, state, jnp.asarray(J_BASE))
  np.testing.assert_array_equal(out.direction, [2.0, 2.0, 2.0])
  np.testing.assert_allclose(out.weights, [1.0, 1.0])


def test_zero_rows_and_columns():
  jac = np.zeros((3, 4), np.float32)
  jac[1, :2] = [1.0, -2.0]
  method = graddrop()
  params, state = method.init(3)
  out = method.apply(params, state, jnp.asarray(jac))
  _asserts.assert_finite_shape(out.direction, (4,))
  np.testing.assert_array_equal(out.direction, [1.0, -2.0, 0.0, 0.0])
  np.testing.assert_array_equal(out.weights, [1.0, 1.0, 1.0])


def test_errors():
  with pytest.raises(ValueError, match=r"leak must lie in \[0, 1\]"):
    graddrop(leak=1.5)
  with pytest.raises(ValueError, match="2 entries but there are 3 tasks"):
    graddrop(leak=(0.1, 0.2)).init(3)
  with pytest.raises(ValueError, match="leak must be a number or a vector"):
    graddrop(leak=((0.1,),))
  with pytest.raises(ValueError, match="num_params must be a positive"):
    graddrop().init(2, num_params=0)
  params, state = graddrop().init(2)
  with pytest.raises(ValueError, match="initialised for 2 tasks"):
    graddrop().apply(params, state, jnp.ones((3, 4)))
  with pytest.raises(ValueError, match=r"\(num_tasks, num_params\) matrix"):
    graddrop().apply(params, state, jnp.ones((2,)))
  with pytest.raises(ValueError, match="one draw per column"):
    graddrop_direction(jnp.ones((2, 3)), jnp.ones(4))
  with pytest.raises(ValueError, match="floating point"):
    graddrop_direction(jnp.ones((2, 3), jnp.int32), jnp.ones(3))
