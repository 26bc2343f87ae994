"""ExcessMTL: TorchJD's first-call value, the recurrence against numpy over
several steps (with and without warm-up), the simplex, overflow, errors."""
import math

import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import aggregation
from mtl_jax.aggregation.excess_mtl import excess_mtl, excess_mtl_weights

E = math.e


def _excess_mtl_numpy(jacs, robust_step_size=1.0, n_warmup_steps=0):
  """TorchJD's ExcessMTLWeighting.forward over a sequence of calls, float64:
  the list of weights after each call."""
  k, p = jacs[0].shape
  weights, sq_sum = np.full(k, 1.0 / k), np.zeros((k, p))
  warmup_sum, baseline = np.zeros(k), None
  out = []
  for n, jac in enumerate(jacs):
    jac = np.asarray(jac, np.float64)
    sq_sum = sq_sum + jac**2
    e = (jac**2 / np.sqrt(sq_sum + 1e-7)).sum(axis=1)
    if n < n_warmup_steps:
      warmup_sum += e
      out.append(weights.copy())
      continue
    if baseline is None:
      if n_warmup_steps > 0:
        baseline = warmup_sum / n_warmup_steps
        e = e / (baseline + 1e-7)
      else:
        baseline = e
    else:
      e = e / (baseline + 1e-7)
    weights = weights * np.exp(robust_step_size * e)
    weights = weights / weights.sum()
    out.append(weights.copy())
  return out


def test_torchjd_first_call():
  # S = J^2: e = [4 / 2, 1 / 1] = [2, 1] (the 1e-7 moves it by < 1e-7), used
  # raw: w = [e^2, e] / (e^2 + e) = [0.7310586, 0.2689414]; d = J^T w.
  method = excess_mtl()
  params, state = method.init(2, num_params=2)
  jac = jnp.array([[2.0, 0.0], [1.0, 0.0]])
  out = method.apply(params, state, jac)
  expected = np.array([E**2, E]) / (E**2 + E)
  np.testing.assert_allclose(out.weights, expected, atol=1e-6)
  np.testing.assert_allclose(out.direction, [2 * expected[0] + expected[1],
                                             0.0], atol=1e-6)
  np.testing.assert_allclose(out.state.baseline, [2.0, 1.0], atol=1e-6)
  assert int(out.state.step) == 1


@pytest.mark.parametrize("hparams", [{}, {"robust_step_size": 0.01},
                                     {"n_warmup_steps": 1},
                                     {"n_warmup_steps": 2,
                                      "robust_step_size": 0.5}])
@pytest.mark.parametrize("k,p", [(2, 5), (4, 7), (1, 3)])
def test_recurrence_matches_numpy_over_five_steps(k, p, hparams):
  jacs = [_inputs.jacobian(k * p + s, k, p, min(k, p), dtype=np.float64)
          for s in range(5)]
  expected = _excess_mtl_numpy(jacs, **hparams)
  method = excess_mtl(**hparams)
  for x64, tol in ((True, 1e-12), (False, 2e-5)):
    with jax.enable_x64(x64):
      dtype = jnp.float64 if x64 else jnp.float32
      params, state = method.init(k, num_params=p)
      apply = jax.jit(method.apply)
      for jac, w in zip(jacs, expected):
        out = apply(params, state, jnp.asarray(jac, dtype))
        assert out.direction.dtype == out.weights.dtype == dtype
        np.testing.assert_allclose(out.weights, w, atol=tol, rtol=tol)
        np.testing.assert_allclose(out.direction, w @ jac, rtol=tol,
                                   atol=tol * np.abs(jac).max())
        state = out.state
      assert int(state.step) == 5


def test_warmup_keeps_uniform_weights_and_averages_the_baseline():
  jacs = [_inputs.jacobian(s, 3, 4, 3, dtype=np.float64) for s in range(3)]
  method = excess_mtl(n_warmup_steps=2)
  with jax.enable_x64():
    params, state = method.init(3, num_params=4)
    sq_sum, es = np.zeros((3, 4)), []
    for jac in jacs:
      sq_sum += jac**2
      es.append((jac**2 / np.sqrt(sq_sum + 1e-7)).sum(axis=1))
      out = method.apply(params, state, jnp.asarray(jac))
      state = out.state
      if len(es) <= 2:
        np.testing.assert_allclose(out.weights, 1 / 3, rtol=1e-14)
        np.testing.assert_allclose(state.baseline, np.sum(es, axis=0),
                                   rtol=1e-12)
    np.testing.assert_allclose(state.baseline, (es[0] + es[1]) / 2,
                               rtol=1e-12)
    np.testing.assert_allclose(state.sq_sum, sq_sum, rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_simplex_and_no_overflow(scale):
  # At the first call r = e ~ sum_k |J_ik| (here ~ 1e6 at scale 1e4):
  # exp(e) overflows, but w exp(r - max r) does not.
  jac = scale * _inputs.jacobian(5, 4, 200, 4)
  method = excess_mtl()
  params, state = method.init(4, num_params=200)
  for _ in range(3):
    out = method.apply(params, state, jnp.asarray(jac))
    _asserts.assert_finite_shape(out.direction, (200,))
    _asserts.assert_simplex(out.weights, atol=1e-5)
    state = out.state


def test_permutation_equivariant():
  jacs = [_inputs.jacobian(20 + s, 3, 5, 3) for s in range(3)]
  perm = np.array([1, 2, 0])
  method = excess_mtl(robust_step_size=0.3)

  def run(order):
    params, state = method.init(3, num_params=5)
    for jac in jacs:
      out = method.apply(params, state, jnp.asarray(jac[order]))
      state = out.state
    return out

  base, permuted = run(np.arange(3)), run(perm)
  np.testing.assert_allclose(permuted.weights, np.asarray(base.weights)[perm],
                             rtol=1e-5)
  np.testing.assert_allclose(permuted.direction, base.direction, rtol=1e-5,
                             atol=1e-6)


def test_state_pure_function_and_no_gradient():
  jac = jnp.asarray(_inputs.jacobian(1, 3, 4, 3))
  method = excess_mtl()
  params, state = method.init(3, num_params=4)
  assert isinstance(method, aggregation.JacobianAggregator) and params == {}
  np.testing.assert_allclose(state.weights, 1 / 3)
  out = method.apply(params, state, jac)
  w, sq_sum, baseline = excess_mtl_weights(jac, state.weights, state.sq_sum,
                                           state.baseline, 1)
  np.testing.assert_array_equal(out.weights, w)
  np.testing.assert_array_equal(out.state.sq_sum, sq_sum)
  np.testing.assert_array_equal(out.state.baseline, baseline)
  _asserts.assert_no_retrace(method.apply, params, state, [jac] * 3)
  _asserts.assert_no_gradient(
      lambda j: method.apply(params, state, j).direction, jac)


def test_errors():
  with pytest.raises(ValueError, match="needs num_params"):
    excess_mtl().init(2)
  with pytest.raises(ValueError, match="robust_step_size must be a finite"):
    excess_mtl(robust_step_size=0.0)
  with pytest.raises(ValueError, match="n_warmup_steps must be an integer"):
    excess_mtl(n_warmup_steps=-1)
  with pytest.raises(ValueError, match="n_warmup_steps must be an integer"):
    excess_mtl(n_warmup_steps=1.5)
  method = excess_mtl()
  params, state = method.init(2, num_params=3)
  with pytest.raises(ValueError, match="initialised for 2 tasks"):
    method.apply(params, state, jnp.ones((3, 3)))
  with pytest.raises(ValueError, match="num_params=3"):
    method.apply(params, state, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match=r"\(num_tasks, num_params\) matrix"):
    method.apply(params, state, jnp.ones((2, 3, 1)))
  with pytest.raises(ValueError, match="sq_sum"):
    excess_mtl_weights(jnp.ones((2, 3)), jnp.ones(2) / 2, jnp.zeros((2, 2)),
                       jnp.zeros(2), 1)
