"""DB-MTL: the recurrence against numpy over several steps, a value by hand,
loss-scale invariance, the factory's state and head weights, its errors."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import aggregation
from mtl_jax.aggregation.db_mtl import db_mtl, db_mtl_direction

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def _db_mtl_numpy(jacs, losses, beta=0.9, beta_sigma=0.0):
  """LibMTL's DB_MTL.backward over a sequence of calls, in float64: the list
  of (d, alpha, buffer) after each call. The engine's rows are gradients of
  L_i, so the log-loss gradients are g_i / (L_i + 1e-8)."""
  k, p = jacs[0].shape
  buffer = np.zeros((k, p))
  out = []
  for t, (jac, loss) in enumerate(zip(jacs, losses), start=1):
    grads = np.asarray(jac, np.float64) / (np.asarray(loss)[:, None] + 1e-8)
    buffer = grads + beta / t**beta_sigma * (buffer - grads)
    norms = np.linalg.norm(buffer, axis=1)
    alpha = norms.max() / (norms + 1e-8)
    out.append((sum(alpha[i] * buffer[i] for i in range(k)), alpha,
                buffer.copy()))
  return out


def _sequence(seed, k, p, steps=3):
  jacs = [_inputs.jacobian(seed + s, k, p, min(k, p), dtype=np.float64)
          for s in range(steps)]
  losses = [_inputs.positive_losses(seed + s, k, low=0.1, high=10.0,
                                    dtype=np.float64) for s in range(steps)]
  return jacs, losses


def test_first_call_by_hand():
  # L = [1, 2]: log-loss gradients [g_0, g_1 / 2]; B = 0.1 of them.
  # ||B_0|| = 0.1 sqrt(18) = 0.4242641, ||B_1|| = 0.1 sqrt(38) / 2 = 0.3082207:
  # alpha = [1, 1.3764944]; d = 0.1 (g_0 + 0.6882472 g_1)
  # = [0.0129483, 0.1688247, 0.1688247].
  method = db_mtl()
  params, state = method.init(2, num_params=3)
  out = method.apply(params, state, jnp.asarray(J_BASE, jnp.float32),
                     losses=jnp.array([1.0, 2.0]))
  np.testing.assert_allclose(out.weights, [1.0, 1.3764944], atol=1e-6)
  np.testing.assert_allclose(out.direction, [0.0129483, 0.1688247, 0.1688247],
                             atol=1e-6)
  np.testing.assert_allclose(out.head_weights, [1.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(out.state.buffer, 0.1 * np.array(
      [[-4.0, 1.0, 1.0], [3.0, 0.5, 0.5]]), atol=1e-6)


@pytest.mark.parametrize("hparams", [{}, {"beta": 0.5, "beta_sigma": 0.5}])
@pytest.mark.parametrize("k,p", [(2, 5), (4, 7), (1, 3)])
def test_recurrence_matches_numpy_over_four_steps(k, p, hparams):
  jacs, losses = _sequence(k * p, k, p, steps=4)
  expected = _db_mtl_numpy(jacs, losses, **hparams)
  method = db_mtl(**hparams)
  for x64, tol in ((True, 1e-12), (False, 2e-5)):
    with jax.enable_x64(x64):
      dtype = jnp.float64 if x64 else jnp.float32
      params, state = method.init(k, num_params=p)
      apply = jax.jit(method.apply)
      for jac, loss, (d, alpha, buffer) in zip(jacs, losses, expected):
        out = apply(params, state, jnp.asarray(jac, dtype),
                    losses=jnp.asarray(loss, dtype))
        assert out.direction.dtype == out.weights.dtype == dtype
        scale = max(1.0, np.abs(d).max())
        np.testing.assert_allclose(out.direction, d, atol=tol * scale,
                                   rtol=tol)
        np.testing.assert_allclose(out.weights, alpha, atol=tol, rtol=tol)
        np.testing.assert_allclose(out.state.buffer, buffer, rtol=tol,
                                   atol=tol * np.abs(buffer).max())
        state = out.state
      assert int(state.step) == 4


@pytest.mark.parametrize("seed", range(3))
def test_loss_scale_invariance_and_balanced_norms(seed):
  # Multiplying loss i by c_i > 0 multiplies L_i and g_i by c_i: the log-loss
  # gradients, hence d, do not change (up to the 1e-8).
  k, p = 4, 6
  jacs, losses = _sequence(seed, k, p)
  scales = np.random.default_rng(seed).uniform(0.01, 100.0, size=k)
  method = db_mtl(beta_sigma=0.5)
  apply = jax.jit(method.apply)

  def run(c):
    params, state = method.init(k, num_params=p)
    for jac, loss in zip(jacs, losses):
      out = apply(params, state, jnp.asarray(c[:, None] * jac, jnp.float32),
                  losses=jnp.asarray(c * loss, jnp.float32))
      _asserts.assert_finite_shape(out.direction, (p,))
      state = out.state
    return out

  base = run(np.ones(k))
  scaled = run(scales)
  np.testing.assert_allclose(scaled.direction, base.direction, rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(scaled.weights, base.weights, rtol=1e-4)
  # alpha_i B_i all have the norm of the largest B_j; the largest has alpha 1.
  buffer = np.asarray(base.state.buffer, np.float64)
  alpha = np.asarray(base.weights, np.float64)
  norms = np.linalg.norm(alpha[:, None] * buffer, axis=1)
  np.testing.assert_allclose(norms, np.linalg.norm(buffer, axis=1).max(),
                             rtol=1e-5)
  assert alpha.min() >= 1.0 - 1e-6
  np.testing.assert_allclose(alpha.min(), 1.0, atol=1e-6)
  np.testing.assert_allclose(base.head_weights,
                             1.0 / (losses[-1] + 1e-8), rtol=1e-6)


def test_permutation_equivariant():
  jacs, losses = _sequence(11, 3, 5)
  perm = np.array([2, 0, 1])
  method = db_mtl()

  def run(order):
    params, state = method.init(3, num_params=5)
    for jac, loss in zip(jacs, losses):
      out = method.apply(params, state, jnp.asarray(jac[order], jnp.float32),
                         losses=jnp.asarray(loss[order], jnp.float32))
      state = out.state
    return out

  base, permuted = run(np.arange(3)), run(perm)
  np.testing.assert_allclose(permuted.direction, base.direction, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(permuted.weights, np.asarray(base.weights)[perm],
                             rtol=1e-5)


def test_zero_jacobian_and_pure_function():
  method = db_mtl()
  params, state = method.init(2, num_params=3)
  out = method.apply(params, state, jnp.zeros((2, 3)), losses=jnp.ones(2))
  np.testing.assert_array_equal(out.direction, 0.0)
  np.testing.assert_array_equal(out.weights, 0.0)
  jac = jnp.asarray(_inputs.jacobian(3, 2, 3, 2))
  out = method.apply(params, state, jac, losses=jnp.array([0.3, 3.0]))
  d, alpha, buffer = db_mtl_direction(jac, jnp.array([0.3, 3.0]),
                                      state.buffer, 1)
  np.testing.assert_array_equal(out.direction, d)
  np.testing.assert_array_equal(out.weights, alpha)
  np.testing.assert_array_equal(out.state.buffer, buffer)


def test_state_is_stable_and_carries_no_gradient():
  jac = jnp.asarray(_inputs.jacobian(1, 3, 4, 3))
  losses = jnp.array([1.0, 2.0, 3.0])
  method = db_mtl()
  params, state = method.init(3, num_params=4)
  assert isinstance(method, aggregation.JacobianAggregator) and params == {}
  assert state.buffer.shape == (3, 4) and state.buffer.dtype == jnp.float32
  _asserts.assert_no_retrace(
      lambda p, s, j: method.apply(p, s, j, losses=losses), params, state,
      [jac] * 3)
  _asserts.assert_no_gradient(
      lambda j: method.apply(params, state, j, losses=losses).direction, jac)
  _asserts.assert_no_gradient(
      lambda l: method.apply(params, state, jac, losses=l).direction, losses)


def test_errors():
  method = db_mtl()
  with pytest.raises(ValueError, match="needs num_params"):
    method.init(2)
  with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
    db_mtl(beta=-1.0)
  with pytest.raises(ValueError, match="beta_sigma must be"):
    db_mtl(beta_sigma=-0.5)
  params, state = method.init(2, num_params=3)
  jac = jnp.asarray(J_BASE, jnp.float32)
  with pytest.raises(ValueError, match="needs the task losses"):
    method.apply(params, state, jac)
  with pytest.raises(ValueError, match="losses must have shape"):
    method.apply(params, state, jac, losses=jnp.ones((2, 1)))
  with pytest.raises(ValueError, match="initialised for 2 tasks"):
    method.apply(params, state, jnp.ones((3, 3)), losses=jnp.ones(3))
  with pytest.raises(ValueError, match="num_params=3"):
    method.apply(params, state, jnp.ones((2, 4)), losses=jnp.ones(2))
  with pytest.raises(ValueError, match="buffer must be"):
    db_mtl_direction(jac, jnp.ones(2), jnp.zeros((2, 4)), 1)
