"""Every registered method and pure function: jit, vmap, dtypes, gradients.

Checked against small numpy references written here, so the jitted, the
eager and the vmapped paths are each compared with the formula, not only with
each other.
"""
import functools

import _asserts
import _inputs
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import core_first
from absl.testing import parameterized
from hypothesis import given, settings
from scipy import optimize

from mtl_jax import weighting
from mtl_jax.weighting import (
  dwa_weights,
  gls_loss,
  imtl_l_loss,
  rlw_weights,
  uncertainty_loss,
  uw_o_weights,
  uw_so_entropy_weights,
  uw_so_rel_weights,
  uw_so_weights,
)

K = 3
RTOL = {jnp.float32: 1e-5, jnp.float64: 1e-12}
DTYPES = {"float32": (jnp.float32, False), "float64": (jnp.float64, True)}
RLW_KEY = jax.random.PRNGKey(4)


def _softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _relative(l, tau=1.0):
  """UW-SO's logits at T = tau * mean(1 / L): u / (tau mean u)."""
  u = 1.0 / (l + 1e-8)
  return u / (tau * np.mean(u, axis=-1, keepdims=True))


def _entropy_floor(l, target=0.5):
  """Softmax of beta * the relative logits, beta in [0, 1] the largest with
  entropy >= target * log K, found with scipy's brentq (one loss vector)."""
  z = _relative(l)
  entropy = lambda b: -np.sum(_softmax(b * z) * np.log(_softmax(b * z)))
  floor = target * np.log(z.shape[-1])
  if entropy(1.0) >= floor:
    return _softmax(z)
  beta = optimize.brentq(lambda b: entropy(b) - floor, 0.0, 1.0, xtol=1e-15)
  return _softmax(beta * z)


def _reference(name, params, state, losses):
  """``(total, weights)`` of method ``name`` in float64 numpy."""
  l = np.asarray(losses, np.float64)
  k = l.shape[-1]
  if name == "gls":
    total = np.exp(np.mean(np.log(l)))
    return total, total / (k * l)
  if name == "uw":
    s = np.asarray(params["log_vars"], np.float64)
    return np.sum(0.5 * np.exp(-s) * l + 0.5 * s), 0.5 * np.exp(-s)
  if name == "imtl_l":
    s = np.asarray(params["log_scales"], np.float64)
    return np.sum(np.exp(s) * l - s), np.exp(s)
  if name == "famo":
    z = _softmax(np.asarray(state.logits, np.float64))
    shifted = l + 1e-8
    c = 1.0 / np.sum(z / shifted, axis=-1, keepdims=True)
    return np.sum(c * z * np.log(shifted), axis=-1), c * z / shifted
  if name == "stch":  # mu = 0.5, preference 1/K, no reference
    scaled = l / k / 0.5
    m = np.max(scaled, axis=-1, keepdims=True)
    total = 0.5 * (m[..., 0] + np.log(np.sum(np.exp(scaled - m), axis=-1)))
    return total, _softmax(scaled) / k
  if name == "ew":
    w = np.ones(k)
  elif name == "scalarization":
    w = np.asarray(_inputs.hparams(name, k)["weights"])
  elif name == "uw_o":
    w = 1.0 / (l + 1e-8)
  elif name == "uw_so":
    w = _softmax(1.0 / (l + 1e-8) / 2.0)
  elif name == "uw_so_rel":  # tau = K / 2
    w = _softmax(_relative(l, k / 2))
  elif name == "uw_so_entropy":
    w = _entropy_floor(l, 0.9)
  elif name == "uw_so_norm":  # tau = K / 2 on the losses over the first ones
    first = (np.asarray(state.initial, np.float64) if int(state.count) > 0
             else l) + 1e-8
    u = first / (l + 1e-8)  # the inverse relative losses
    v = _softmax(2.0 * u / np.sum(u, axis=-1, keepdims=True))
    w = v / first / np.sum(v / first, axis=-1, keepdims=True)
  elif name == "dwa":
    # The warm state sits at the first step of epoch 2: the epoch that just
    # ended is loss_sum / steps_per_epoch, the one before is state.prev.
    prev = np.asarray(state.loss_sum, np.float64) / 2
    w = k * _softmax(prev / np.asarray(state.prev, np.float64) / 2.0)
  elif name == "rlw":
    _, sub = jax.random.split(state.key)
    w = np.asarray(jax.nn.softmax(jax.random.normal(sub, (k,), losses.dtype)),
                   np.float64)
  return w @ l, w


def _check_out(out, reference, dtype, shape):
  total, weights = reference
  assert out.total.dtype == dtype and out.weights.dtype == dtype
  _asserts.assert_finite_shape(out.total, shape[:-1])
  _asserts.assert_finite_shape(out.weights, shape)
  np.testing.assert_allclose(out.total, total, rtol=RTOL[dtype])
  np.testing.assert_allclose(out.weights, weights, rtol=RTOL[dtype])


def _check_state(new_state, method):
  """The state keeps the structure, shapes and dtypes that init gave it."""
  init_state = method.init(K)[1]
  assert jax.tree.structure(new_state) == jax.tree.structure(init_state)
  for new, old in zip(jax.tree.leaves(new_state), jax.tree.leaves(init_state)):
    assert (new.shape, new.dtype) == (old.shape, old.dtype)


class ApplyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(name=_inputs.METHODS, dtype=tuple(DTYPES))
  def test_apply(self, name, dtype):
    dtype, x64 = DTYPES[dtype]
    with jax.enable_x64(x64):
      method, params, state = _inputs.build(name, K, dtype=dtype)
      losses = jnp.asarray(_inputs.positive_losses(0, K), dtype)
      out = self.variant(method.apply)(params, state, losses)
      _check_out(out, _reference(name, params, state, losses), dtype, (K,))
      _check_state(out.state, method)

  # vmap is checked jitted only: eager vmap compiles every op for the batched
  # shapes, seconds per method, for no path that jit does not take.
  @parameterized.product(name=_inputs.METHODS, dtype=tuple(DTYPES))
  def test_vmap_over_a_batch_of_loss_vectors(self, name, dtype):
    dtype, x64 = DTYPES[dtype]
    with jax.enable_x64(x64):
      method, params, state = _inputs.build(name, K, dtype=dtype)
      batch = jnp.asarray(_inputs.positive_losses(1, K, batch=(4,)), dtype)
      out = jax.jit(jax.vmap(method.apply, in_axes=(None, None, 0)))(
          params, state, batch)
      rows = [_reference(name, params, state, row) for row in batch]
      reference = (np.stack([r[0] for r in rows]),
                   np.stack([r[1] for r in rows]))
      _check_out(out, reference, dtype, batch.shape)


# The pure functions, each as f(losses, aux) with aux the second input (the
# log-variances, log-scales or older epoch losses; unused by the others), and
# a float64 numpy reference. rlw_weights takes a key: its reference is the
# eager draw, and its "losses" only carry K and the dtype.
FUNCTIONS = {
    "uw_o_weights": (lambda l, a: uw_o_weights(l),
                     lambda l, a: 1.0 / (l + 1e-8)),
    "uw_so_weights": (lambda l, a: uw_so_weights(l, 2.0),
                      lambda l, a: _softmax(1.0 / (l + 1e-8) / 2.0)),
    "uw_so_rel_weights": (lambda l, a: uw_so_rel_weights(l, 2.0),
                          lambda l, a: _softmax(_relative(l, 2.0))),
    "uw_so_entropy_weights": (lambda l, a: uw_so_entropy_weights(l),
                              lambda l, a: _entropy_floor(l, 0.9)),
    "uncertainty_loss": (
        uncertainty_loss,
        lambda l, a: (np.sum(0.5 * np.exp(-a) * l + 0.5 * a, axis=-1),
                      0.5 * np.exp(-a))),
    "dwa_weights": (lambda l, a: dwa_weights(l, a, 2.0),
                    lambda l, a: l.shape[-1] * _softmax(l / a / 2.0)),
    "rlw_weights": (
        lambda l, a: rlw_weights(RLW_KEY, l.shape[-1], l.dtype),
        lambda l, a: np.asarray(jax.nn.softmax(jax.random.normal(
            RLW_KEY, l.shape[-1:], jax.dtypes.canonicalize_dtype(l.dtype))),
            np.float64)),
    "gls_loss": (lambda l, a: gls_loss(l),
                 lambda l, a: np.exp(np.mean(np.log(l), axis=-1))),
    "imtl_l_loss": (imtl_l_loss,
                    lambda l, a: (np.sum(np.exp(a) * l - a, axis=-1),
                                  np.exp(a))),
}


def _function_inputs(batch, dtype):
  losses = _inputs.positive_losses(2, K, batch=batch)
  aux = _inputs.positive_losses(3, K, batch=batch, low=0.5, high=2.0)
  return jnp.asarray(losses, dtype), jnp.asarray(aux, dtype)


def _check_function(actual, expected, dtype, batch):
  actual = actual if isinstance(actual, tuple) else (actual,)
  expected = expected if isinstance(expected, tuple) else (expected,)
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    assert a.dtype == dtype, (a.dtype, dtype)
    _asserts.assert_finite_shape(a, np.shape(e))
    assert a.shape[:len(batch)] == batch
    np.testing.assert_allclose(a, e, rtol=RTOL[dtype])


class FunctionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(name=tuple(FUNCTIONS), dtype=tuple(DTYPES))
  def test_function(self, name, dtype):
    fn, reference = FUNCTIONS[name]
    dtype, x64 = DTYPES[dtype]
    with jax.enable_x64(x64):
      losses, aux = _function_inputs((), dtype)
      actual = self.variant(fn)(losses, aux)
      expected = reference(np.asarray(losses, np.float64),
                           np.asarray(aux, np.float64))
      _check_function(actual, expected, dtype, ())

  @parameterized.product(name=tuple(FUNCTIONS), dtype=tuple(DTYPES))
  def test_vmap_over_a_batch(self, name, dtype):
    fn, reference = FUNCTIONS[name]
    dtype, x64 = DTYPES[dtype]
    with jax.enable_x64(x64):
      losses, aux = _function_inputs((4,), dtype)
      actual = jax.jit(jax.vmap(fn))(losses, aux)
      rows = [reference(l, a) for l, a in zip(np.asarray(losses, np.float64),
                                              np.asarray(aux, np.float64))]
      if isinstance(rows[0], tuple):
        expected = tuple(np.stack(parts) for parts in zip(*rows))
      else:
        expected = np.stack(rows)
      _check_function(actual, expected, dtype, (4,))


@functools.cache
def _built(name, num_tasks):
  """One (method, params, state) per method and K, so jit caches hold."""
  return _inputs.build(name, num_tasks)


@pytest.mark.parametrize("name", core_first(_inputs.METHODS))
@settings(deadline=None, max_examples=20)
@given(losses=_inputs.loss_vectors(low=1e-2, high=1e2))
def test_gradient_of_total_equals_weights(name, losses):
  method, params, state = _built(name, losses.size)
  _asserts.assert_grad_equals_weights(method.apply, params, state, losses,
                                      rtol=2e-5)


@pytest.mark.parametrize("name", core_first(_inputs.METHODS))
@pytest.mark.parametrize("dtype", tuple(DTYPES))
def test_jitted_apply_does_not_retrace(name, dtype):
  dtype, x64 = DTYPES[dtype]
  with jax.enable_x64(x64):
    # From the state init returns, as a train loop does: a state whose dtype
    # drifts on the first step would be hidden by a warmed-up one.
    method, params, state = _inputs.build(name, K, warm=False)
    steps = [jnp.asarray(_inputs.positive_losses(seed, K), dtype)
             for seed in range(6)]
    _asserts.assert_no_retrace(method.apply, params, state, steps)


def test_no_retrace_check_can_fail():
  # The control: a state whose dtype changes after one step retraces.
  def apply(params, state, losses):
    del params
    return weighting.WeightedLoss(losses.sum(), losses, state + 0.5)
  with pytest.raises(AssertionError, match="traced 2 times"):
    _asserts.assert_no_retrace(apply, {}, jnp.zeros((), jnp.int32),
                               [jnp.ones(2)] * 3)


@pytest.mark.parametrize("name", core_first(_inputs.METHODS))
@pytest.mark.parametrize("case", sorted(_inputs.DEGENERATE))
def test_degenerate_losses_stay_finite(name, case):
  losses = jnp.asarray(_inputs.DEGENERATE[case], jnp.float32)
  method, params, state = _built(name, losses.size)
  out = jax.jit(method.apply)(params, state, losses)
  _asserts.assert_finite_shape(out.weights, losses.shape)
  _asserts.assert_finite_shape(out.total, ())


def test_names():
  assert weighting.names() == ("dwa", "ew", "famo", "gls", "imtl_l", "rlw",
                               "scalarization", "stch", "uw", "uw_o", "uw_so",
                               "uw_so_entropy", "uw_so_norm", "uw_so_rel")
  assert set(_inputs.METHODS) == set(weighting.names())


@pytest.mark.parametrize("spelling", ["uw_so", "UW-SO", "Uw_So"])
def test_get_normalises_the_name(spelling):
  losses = jnp.asarray([0.5, 2.0])
  method = weighting.get(spelling, temperature=2.0)
  out = method.apply(*method.init(2), losses)
  np.testing.assert_allclose(out.weights, uw_so_weights(losses, 2.0))


def test_get_passes_hyperparameters_and_returns_a_weighting():
  method = weighting.get("uw", init_log_var=-0.5)
  assert isinstance(method, weighting.Weighting)
  params, _ = method.init(num_tasks=2)
  np.testing.assert_array_equal(params["log_vars"], [-0.5, -0.5])


@pytest.mark.parametrize("name", core_first(_inputs.METHODS))
def test_float32_losses_stay_float32_under_x64(name):
  # With x64 on, Python floats and numpy float64 constants inside a method
  # must not promote float32 losses (a silent 2x memory and speed cost).
  with jax.enable_x64(True):
    method, params, state = _inputs.build(name, K)
    losses = jnp.asarray(_inputs.positive_losses(0, K), jnp.float32)
    out = jax.jit(method.apply)(params, state, losses)
    assert out.total.dtype == jnp.float32, out.total.dtype
    assert out.weights.dtype == jnp.float32, out.weights.dtype
    _check_state(out.state, method)
