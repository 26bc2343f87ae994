"""UW-SO without a temperature grid: uw_so_rel and uw_so_entropy."""
import functools
import math

import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from mtl_jax import weighting
from mtl_jax.weighting import uw_so_entropy_weights, uw_so_rel_weights, uw_so_weights

SETTINGS = settings(deadline=None, max_examples=30)
# Jitted with traced hyperparameters: one compile per number of tasks.
_rel = jax.jit(uw_so_rel_weights)
_entropy = jax.jit(uw_so_entropy_weights)
_uw_so = jax.jit(uw_so_weights)
# target 0.9: a floor that acts on most loss vectors (0.5, the default, acts
# on fewer; test_weighting_registry and test_values cover it).
VARIANTS = {"rel": lambda l: _rel(l, 1.0),
            "entropy": lambda l: _entropy(l, 0.9)}


def _rel_bound(k, tau):
  """The documented bound e^(K/tau) / (e^(K/tau) + K - 1)."""
  return 1.0 / (1.0 + (k - 1) * math.exp(-k / tau))


@functools.cache
def _entropy_bound(k, target):
  """Largest weight of a K-vector with entropy target * log K (others equal),
  by scipy's brentq in float64."""
  def gap(a):
    return (-a * math.log(a) - (1 - a) * math.log(1 - a)
            + (1 - a) * math.log(k - 1) - target * math.log(k))
  if k == 1 or gap(1.0 - 1e-15) >= 0:  # a target near 0: no bound below 1
    return 1.0
  return optimize.brentq(gap, 1.0 / k, 1.0 - 1e-15, xtol=1e-15)


def _entropy_of(w):
  w = np.asarray(w, np.float64)
  return -np.sum(np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0))


@SETTINGS
@given(losses=_inputs.loss_vectors(),
       tau=st.floats(0.1, 100.0), target=st.floats(0.0, 1.0))
def test_weights_on_simplex(losses, tau, target):
  for w in (_rel(losses, tau), _entropy(losses, target, tau)):
    _asserts.assert_finite_shape(w, losses.shape)
    _asserts.assert_simplex(w, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@SETTINGS
@given(losses=_inputs.loss_vectors(min_tasks=2, low=1e-2, high=1e2),
       log_scale=st.floats(-6.0, 6.0))
def test_invariant_to_a_common_loss_scale(variant, losses, log_scale):
  # eps = 0: exactly invariant (with eps = 1e-8, up to eps / L).
  fn = {"rel": lambda l: _rel(l, 1.0, 0.0),
        "entropy": lambda l: _entropy(l, 0.9, 1.0, 0.0)}[variant]
  scaled = (losses.astype(np.float64) * 10.0 ** log_scale).astype(np.float32)
  np.testing.assert_allclose(fn(scaled), fn(losses), atol=2e-5)


def test_uw_so_collapses_as_losses_shrink_but_these_do_not():
  # The same loss ratios at three stages of training: UW-SO at a fixed T
  # sharpens to one task, the relative variants keep their weights.
  start = np.array([0.5, 1.0, 2.0], np.float32)
  for shrink in (1.0, 1e-2, 1e-4):
    losses = start * np.float32(shrink)
    if shrink < 1e-3:
      assert float(jnp.max(_uw_so(losses, 10.0))) > 1.0 - 1e-6
    for name, fn in VARIANTS.items():
      # eps = 1e-8 next to losses of 5e-5 moves the weights by ~1e-4 / K.
      np.testing.assert_allclose(fn(losses), fn(start), atol=1e-4,
                                 err_msg=name)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@SETTINGS
@given(data=st.data(), losses=_inputs.loss_vectors(min_tasks=2))
def test_permutation_equivariant(variant, data, losses):
  perm = data.draw(_inputs.permutations_of(losses))
  _asserts.assert_permutation_equivariant(VARIANTS[variant], losses, perm,
                                          atol=1e-6)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@settings(deadline=None, max_examples=20)
@given(value=st.floats(1e-6, 1e6), k=st.integers(1, 6))
def test_equal_losses_give_equal_weights(variant, value, k):
  losses = np.full(k, value, np.float32)
  np.testing.assert_allclose(VARIANTS[variant](losses), np.full(k, 1.0 / k),
                             atol=1e-6)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_close_losses_give_close_weights(variant):
  # Continuity: an exact-entropy rule (H(w) = 0.9 log 2 at every step) would
  # give 0.684 / 0.316 here; the floor does not act on near-equal losses.
  w = VARIANTS[variant](jnp.asarray([1.0, 1.0 + 1e-4]))
  np.testing.assert_allclose(w, [0.5, 0.5], atol=1e-4)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@SETTINGS
@given(losses=_inputs.loss_vectors(min_tasks=2))
def test_lower_loss_gets_more_weight(variant, losses):
  w = np.asarray(VARIANTS[variant](losses))
  order = np.argsort(losses, kind="stable")
  assert np.all(np.diff(w[order]) <= 1e-6), (losses, w)


@pytest.mark.parametrize("k", [2, 3, 4, 10])
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_one_tiny_loss_stays_below_the_rel_bound(k, tau):
  # A loss 1e-7 next to losses of 1: UW-SO at T = 10 gives it all the
  # weight; uw_so_rel stays below e^(K/tau) / (e^(K/tau) + K - 1) and comes
  # close to it (the bound is the limit of one loss tending to 0).
  losses = jnp.asarray([1e-7] + [1.0] * (k - 1))
  bound = _rel_bound(k, tau)
  w = float(uw_so_rel_weights(losses, tau)[0])
  assert w <= bound + 1e-6
  assert w >= bound - 1e-5
  assert float(uw_so_weights(losses, 10.0)[0]) > 1.0 - 1e-6


@pytest.mark.parametrize("k", [2, 3, 4, 10])
@pytest.mark.parametrize("target", [0.5, 0.9])
def test_one_tiny_loss_stays_below_the_entropy_bound(k, target):
  # The others equal: the floor's bound is reached exactly.
  losses = jnp.asarray([1e-7] + [1.0] * (k - 1))
  w = np.asarray(uw_so_entropy_weights(losses, target))
  bound = min(_entropy_bound(k, target), _rel_bound(k, 1.0))
  np.testing.assert_allclose(w[0], bound, atol=1e-5)


@SETTINGS
@given(losses=_inputs.loss_vectors(), target=st.floats(0.0, 0.999))
def test_entropy_is_at_least_the_target(losses, target):
  w = _entropy(losses, target)
  k = losses.size
  assert _entropy_of(w) >= target * math.log(k) - 1e-5
  assert float(jnp.max(w)) <= _entropy_bound(k, target) + 1e-5


@SETTINGS
@given(losses=_inputs.loss_vectors(min_tasks=2, low=1e-2, high=1e2))
def test_the_floor_only_raises_the_temperature(losses):
  # Where the relative weights already have entropy >= target log K they are
  # kept; target = 0 is uw_so_rel; otherwise the weights are flatter.
  rel = np.asarray(_rel(losses, 1.0))
  floor = 0.9 * math.log(losses.size)
  entropy = np.asarray(_entropy(losses, 0.9))
  np.testing.assert_allclose(_entropy(losses, 0.0), rel, atol=1e-6)
  if _entropy_of(rel) >= floor + 1e-4:
    np.testing.assert_allclose(entropy, rel, atol=1e-6)
  else:
    assert np.max(entropy) <= np.max(rel) + 1e-6


def test_large_tau_is_equal_weighting():
  losses = jnp.asarray(_inputs.positive_losses(0, 4))
  for w in (uw_so_rel_weights(losses, math.inf),
            uw_so_entropy_weights(losses, 0.9, math.inf),
            uw_so_entropy_weights(losses, 1.0)):
    np.testing.assert_allclose(w, np.full(4, 0.25), atol=1e-6)


def test_weights_carry_no_gradient():
  losses = jnp.asarray(_inputs.positive_losses(0, 4))
  _asserts.assert_no_gradient(uw_so_rel_weights, losses)
  _asserts.assert_no_gradient(uw_so_entropy_weights, losses)


@pytest.mark.parametrize("name", ["uw_so_rel", "uw_so_entropy"])
@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_gradient_of_total_is_sum_of_weights_times_task_gradients(name, ema):
  # d total / d theta = sum_k w_k d L_k / d theta, with w of the same step.
  method = weighting.get(name, ema=ema)
  params, state = method.init(3)
  state = method.apply(params, state, jnp.asarray([2.0, 1.0, 4.0])).state
  theta = jnp.asarray([0.3, -1.2, 0.8])

  def task_losses(t):
    return jnp.asarray([0.1, 2.0, 0.5]) * (t - 1.0) ** 2 + 0.05

  total = lambda t: method.apply(params, state, task_losses(t)).total
  weights = method.apply(params, state, task_losses(theta)).weights
  expected = jax.jacobian(task_losses)(theta).T @ weights
  np.testing.assert_allclose(jax.grad(total)(theta), expected, rtol=1e-6)
  _asserts.assert_grad_equals_weights(method.apply, params, state,
                                      task_losses(theta))


def test_batched_input_is_row_wise():
  losses = jnp.asarray(_inputs.positive_losses(1, 3, batch=(5,)))
  for fn in (uw_so_rel_weights, uw_so_entropy_weights):
    rows = jnp.stack([fn(l) for l in losses])
    np.testing.assert_allclose(fn(losses), rows, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(fn))(losses), rows, atol=1e-6)


def test_hyperparameters_can_be_swept_with_vmap():
  losses = jnp.asarray([0.5, 1.0, 2.0])
  taus = jnp.asarray([0.5, 1.0, 4.0])
  targets = jnp.asarray([0.0, 0.9, 1.0])
  swept = jax.jit(jax.vmap(lambda t: uw_so_rel_weights(losses, t)))(taus)
  rows = [uw_so_rel_weights(losses, float(t)) for t in taus]
  np.testing.assert_allclose(swept, np.stack(rows), atol=1e-6)
  swept = jax.jit(jax.vmap(lambda t: uw_so_entropy_weights(losses, t)))(
      targets)
  rows = [uw_so_entropy_weights(losses, float(t)) for t in targets]
  np.testing.assert_allclose(swept, np.stack(rows), atol=1e-6)


# --- the moving average of the losses (ema > 0) ------------------------------


@pytest.mark.parametrize("name", ["uw_so_rel", "uw_so_entropy"])
def test_ema_follows_its_recurrence(name):
  ema = 0.8
  steps = _inputs.positive_losses(4, 3, batch=(4,))
  method = weighting.get(name, ema=ema)
  plain = weighting.get(name)
  params, state = method.init(3)
  assert isinstance(state, weighting.LossEMAState)
  mean = np.zeros(3)
  apply = jax.jit(method.apply)
  for losses in steps:
    mean = ema * mean + (1 - ema) * losses.astype(np.float64)
    out = apply(params, state, jnp.asarray(losses))
    state = out.state
    np.testing.assert_allclose(state.mean, mean, rtol=1e-6)
    # The weights of the average (this step's losses in it), the total of
    # the current losses.
    expected = plain.apply(*plain.init(3), jnp.asarray(mean, jnp.float32))
    np.testing.assert_allclose(out.weights, expected.weights, atol=1e-6)
    np.testing.assert_allclose(out.total, np.dot(out.weights, losses),
                               rtol=1e-6)


@pytest.mark.parametrize("name", ["uw_so_rel", "uw_so_entropy"])
def test_ema_state_does_not_retrace_and_records_k(name):
  method = weighting.get(name, ema=0.9)
  params, state = method.init(3)
  _asserts.assert_no_retrace(
      method.apply, params, state,
      [jnp.asarray(_inputs.positive_losses(s, 3)) for s in range(4)])
  with pytest.raises(ValueError, match="initialised for 3 tasks"):
    method.apply(params, state, jnp.ones(2))


def test_ema_vmaps_over_a_batch_of_loss_vectors():
  method = weighting.get("uw_so_entropy", ema=0.5)
  params, state = method.init(3)
  batch = jnp.asarray(_inputs.positive_losses(2, 3, batch=(4,)))
  out = jax.jit(jax.vmap(method.apply, in_axes=(None, None, 0)))(
      params, state, batch)
  for row, weights in zip(batch, out.weights):
    np.testing.assert_allclose(weights, method.apply(params, state, row).weights,
                               atol=1e-6)


def test_ema_smooths_a_noisy_loss():
  # Task 0's loss alternates 0.5 / 2 around task 1's steady 1: the current-
  # loss weights swing, the average's swing less.
  seq = [jnp.asarray([0.5 if i % 2 else 2.0, 1.0]) for i in range(20)]
  spread = {}
  for ema in (0.0, 0.9):
    method = weighting.get("uw_so_rel", ema=ema)
    params, state = method.init(2)
    ws = []
    for losses in seq:
      out = method.apply(params, state, losses)
      state = out.state
      ws.append(float(out.weights[0]))
    spread[ema] = np.ptp(ws[10:])
  assert spread[0.9] < 0.3 * spread[0.0], spread
