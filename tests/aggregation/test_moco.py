"""MoCo: the recurrence against numpy over several steps, a value by hand,
invariances, the factory's state and its errors."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import aggregation
from mtl_jax.aggregation.moco import moco, moco_direction

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
DEFAULTS = {"beta": 0.5, "beta_sigma": 0.5, "gamma": 0.1, "gamma_sigma": 0.5,
            "rho": 0.0}


def _moco_numpy(jacs, losses, beta=0.5, beta_sigma=0.5, gamma=0.1,
                gamma_sigma=0.5, rho=0.0):
  """LibMTL's MoCo.backward over a sequence of calls, in float64: the list
  of (d, y, lambda) after each call."""
  k, p = jacs[0].shape
  y, lambd = np.zeros((k, p)), np.full(k, 1.0 / k)
  out = []
  for t, (jac, loss) in enumerate(zip(jacs, losses), start=1):
    g = np.array(jac, np.float64)
    for i in range(k):
      g[i] = g[i] / (np.linalg.norm(g[i]) + 1e-8) * loss[i]
    y = y - beta / t**beta_sigma * (y - g)
    z = lambd - gamma / t**gamma_sigma * (y @ y.T + rho * np.eye(k)) @ lambd
    lambd = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    out.append((y.T @ lambd, y.copy(), lambd.copy()))
  return out


def _sequence(seed, k, p, steps=3):
  jacs = [_inputs.jacobian(seed + s, k, p, min(k, p), dtype=np.float64)
          for s in range(steps)]
  losses = [_inputs.positive_losses(seed + s, k, low=0.1, high=10.0,
                                    dtype=np.float64) for s in range(steps)]
  return jacs, losses


def test_first_call_by_hand():
  # L = [1, 2]: g_hat = [u_0, 2 u_1] with unit rows u_i; y = g_hat / 2 =
  # [u_0 / 2, u_1]; cos = u_0 . u_1 = -22 / sqrt(18 * 38) = -0.8411910.
  # y y^T lambda = 0.5 [0.25 + 0.5 cos, 0.5 cos + 1] = [-0.0852978, 0.2897022];
  # lambda = softmax(0.5 - 0.1 [...]) = softmax([0.5085298, 0.4710298]):
  # 1 / (1 + e^-0.0375) = 0.5093739. d = 0.2546870 u_0 + 0.4906261 u_1
  # = [0.2374192, 0.1396203, 0.1396203].
  method = moco()
  params, state = method.init(2, num_params=3)
  out = method.apply(params, state, jnp.asarray(J_BASE, jnp.float32),
                     losses=jnp.array([1.0, 2.0]))
  np.testing.assert_allclose(out.weights, [0.5093739, 0.4906261], atol=1e-6)
  np.testing.assert_allclose(out.direction, [0.2374192, 0.1396203, 0.1396203],
                             atol=1e-6)
  assert int(out.state.step) == 1


@pytest.mark.parametrize("hparams", [{}, {"beta": 0.9, "beta_sigma": 0.0,
                                          "gamma": 1.0, "gamma_sigma": 1.0,
                                          "rho": 0.3}])
@pytest.mark.parametrize("k,p", [(2, 5), (4, 7), (1, 3)])
def test_recurrence_matches_numpy_over_four_steps(k, p, hparams):
  jacs, losses = _sequence(k + p, k, p, steps=4)
  expected = _moco_numpy(jacs, losses, **{**DEFAULTS, **hparams})
  method = moco(**hparams)
  for x64, tol in ((True, 1e-12), (False, 2e-5)):
    with jax.enable_x64(x64):
      dtype = jnp.float64 if x64 else jnp.float32
      params, state = method.init(k, num_params=p)
      apply = jax.jit(method.apply)
      for jac, loss, (d, y, lambd) in zip(jacs, losses, expected):
        out = apply(params, state, jnp.asarray(jac, dtype),
                    losses=jnp.asarray(loss, dtype))
        assert out.direction.dtype == out.weights.dtype == dtype
        np.testing.assert_allclose(out.direction, d, atol=tol, rtol=tol)
        np.testing.assert_allclose(out.state.y, y, atol=tol, rtol=tol)
        np.testing.assert_allclose(out.weights, lambd, atol=tol, rtol=tol)
        state = out.state
      assert int(state.step) == 4


@pytest.mark.parametrize("seed", range(3))
def test_simplex_permutation_and_row_scale(seed):
  k, p = 4, 6
  jacs, losses = _sequence(seed, k, p)
  perm = np.random.default_rng(seed).permutation(k)
  scales = np.random.default_rng(seed).uniform(0.1, 10.0, size=(k, 1))
  method = moco()
  apply = jax.jit(method.apply)

  def run(transform_j, transform_l):
    params, state = method.init(k, num_params=p)
    for jac, loss in zip(jacs, losses):
      out = apply(params, state, jnp.asarray(transform_j(jac), jnp.float32),
                  losses=jnp.asarray(transform_l(loss), jnp.float32))
      _asserts.assert_finite_shape(out.direction, (p,))
      _asserts.assert_simplex(out.weights, atol=1e-5)
      state = out.state
    return np.asarray(out.direction), np.asarray(out.weights)

  d, lambd = run(lambda j: j, lambda l: l)
  # Tasks in another order: lambda permuted, d unchanged (every step is
  # equivariant: row-wise rescaling, Y Y^T, softmax).
  d_perm, lambd_perm = run(lambda j: j[perm], lambda l: l[perm])
  np.testing.assert_allclose(d_perm, d, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(lambd_perm, lambd[perm], rtol=1e-5, atol=1e-6)
  # g_hat_i = L_i g_i / ||g_i|| does not see a positive scale of g_i.
  d_scaled, _ = run(lambda j: scales * j, lambda l: l)
  np.testing.assert_allclose(d_scaled, d, rtol=1e-4, atol=1e-6)


def test_pure_function_matches_factory_and_zero_rows():
  jac = _inputs.jacobian(7, 3, 5, 2)
  jac[1] = 0.0  # a zero gradient: g_hat_1 = 0, no NaN
  losses = jnp.array([0.5, 1.0, 2.0])
  method = moco(rho=0.1)
  params, state = method.init(3, num_params=5)
  out = method.apply(params, state, jnp.asarray(jac), losses=losses)
  d, y, lambd = moco_direction(jnp.asarray(jac), losses, state.y,
                               state.lambd, 1, rho=0.1)
  np.testing.assert_array_equal(out.direction, d)
  np.testing.assert_array_equal(out.state.y, y)
  np.testing.assert_array_equal(out.weights, lambd)
  _asserts.assert_finite_shape(d, (5,))
  np.testing.assert_array_equal(np.asarray(y)[1], 0.0)


def test_state_is_stable_and_carries_no_gradient():
  jac = jnp.asarray(_inputs.jacobian(1, 3, 4, 3))
  losses = jnp.array([1.0, 2.0, 3.0])
  method = moco()
  params, state = method.init(3, num_params=4)
  assert isinstance(method, aggregation.JacobianAggregator) and params == {}
  assert state.y.shape == (3, 4) and state.y.dtype == jnp.float32
  np.testing.assert_allclose(state.lambd, 1 / 3)
  traces = []

  def counted(s, j):
    traces.append(None)
    return method.apply(params, s, j, losses=losses)

  jitted = jax.jit(counted)
  for _ in range(3):
    out = jitted(state, jac)
    assert jax.tree.structure(out.state) == jax.tree.structure(state)
    for new, old in zip(jax.tree.leaves(out.state), jax.tree.leaves(state)):
      assert (new.shape, new.dtype) == (old.shape, old.dtype)
    state = out.state
  assert len(traces) == 1
  _, fresh = method.init(3, num_params=4)
  _asserts.assert_no_gradient(
      lambda j: method.apply(params, fresh, j, losses=losses).direction, jac)
  _asserts.assert_no_gradient(
      lambda l: method.apply(params, fresh, jac, losses=l).direction, losses)


def test_errors():
  method = moco()
  with pytest.raises(ValueError, match="needs num_params"):
    method.init(2)
  with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
    moco(beta=-0.1)
  with pytest.raises(ValueError, match="rho must be a finite number >= 0"):
    moco(rho=float("nan"))
  params, state = method.init(2, num_params=3)
  jac = jnp.asarray(J_BASE, jnp.float32)
  with pytest.raises(ValueError, match="needs the task losses"):
    method.apply(params, state, jac)
  with pytest.raises(ValueError, match=r"losses must have shape \(2,\)"):
    method.apply(params, state, jac, losses=jnp.ones(3))
  with pytest.raises(ValueError, match="initialised for 2 tasks"):
    method.apply(params, state, jnp.ones((3, 3)), losses=jnp.ones(3))
  with pytest.raises(ValueError, match="num_params=3"):
    method.apply(params, state, jnp.ones((2, 4)), losses=jnp.ones(2))
  with pytest.raises(ValueError, match="y must be"):
    moco_direction(jac, jnp.ones(2), jnp.zeros((2, 4)), jnp.ones(2) / 2, 1)
