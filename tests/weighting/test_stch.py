"""STCH: mu logsumexp(lambda (L - z) / mu), stateless or LibMTL's warm-up."""
import math

import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_jax import weighting
from mtl_jax.weighting import stch_loss

SETTINGS = settings(deadline=None, max_examples=30)
LN2 = math.log(2.0)
_loss = jax.jit(stch_loss)  # traced mu: one compile per shape
_grad = jax.jit(jax.grad(stch_loss))
STATELESS = weighting.stch()


def _preferences(losses, seed=0):
  rng = np.random.default_rng(seed + losses.size)
  return rng.uniform(0.1, 2.0, size=losses.shape).astype(np.float32)


# --- the stateless form (TorchJD) ---------------------------------------------

@pytest.mark.parametrize("kwargs,losses,expected", [
    # mu logsumexp([0, 0] / 2 / mu) = log 2 (uniform weights 1/2).
    ({}, [0.0, 0.0], LN2),
    # weights [1, 1] on [1, 1]: log(2 e) = 1 + log 2.
    ({"weights": [1.0, 1.0]}, [1.0, 1.0], 1.0 + LN2),
    # reference [1, 1] shifts back to [0, 0]: log 2.
    ({"weights": [1.0, 1.0], "reference": [1.0, 1.0]}, [1.0, 1.0], LN2),
])
def test_torchjd_values(kwargs, losses, expected):
  kwargs = {k: jnp.asarray(v) for k, v in kwargs.items()}
  np.testing.assert_allclose(stch_loss(jnp.asarray(losses), 1.0, **kwargs),
                             expected, atol=1e-6)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.slow
def test_tiny_mu_on_huge_losses_is_the_max(x64):
  # TorchJD's case: mu = 1e-10 on [1e30, 2e30, 3e30], weights 1/3: the max,
  # 1e30. Dividing before shifting would overflow (1e40 > float32's 3e38);
  # an absolute tolerance is meaningless at 1e30, so compare relatively.
  with jax.enable_x64(x64):
    losses = jnp.asarray([1e30, 2e30, 3e30])
    np.testing.assert_allclose(stch_loss(losses, 1e-10), 1e30, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(stch_loss)(losses, 1e-10),
                               [0.0, 0.0, 1 / 3], rtol=1e-6)


@SETTINGS
@given(losses=_inputs.loss_vectors(low=1e-2, high=1e2),
       mu=st.floats(1e-2, 1e2))
def test_between_max_and_max_plus_mu_log_k(losses, mu):
  lam = _preferences(losses)
  top = float(np.max(lam.astype(np.float64) * losses))
  value = float(_loss(losses, mu, lam))
  slack = 1e-5 * max(1.0, abs(top))
  assert top - slack <= value <= top + mu * math.log(losses.size) + slack


@SETTINGS
@given(losses=_inputs.loss_vectors(min_tasks=2, low=1e-2, high=1e2))
def test_small_mu_tends_to_the_max(losses):
  lam = _preferences(losses)
  top = np.max(lam.astype(np.float64) * losses)
  mu = 1e-6 * max(1.0, top)
  np.testing.assert_allclose(_loss(losses, mu, lam), top, rtol=1e-5)


@SETTINGS
@given(losses=_inputs.loss_vectors(low=1e-2, high=1e2),
       shift=st.floats(-10.0, 10.0))
def test_reference_shift_invariance(losses, shift):
  # Shifting the losses and the reference together changes nothing, and
  # the reference is a shift of the losses.
  lam = _preferences(losses)
  ref = _preferences(losses, seed=1)
  value = _loss(losses, 0.5, lam, ref)
  np.testing.assert_allclose(_loss(losses + shift, 0.5, lam, ref + shift),
                             value, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(_loss(losses - ref, 0.5, lam), value, rtol=1e-5,
                             atol=1e-5)


@SETTINGS
@given(data=st.data(), losses=_inputs.loss_vectors(min_tasks=2))
def test_permutation_invariant_with_uniform_weights(data, losses):
  perm = data.draw(_inputs.permutations_of(losses))
  np.testing.assert_allclose(_loss(losses[perm], 1.0), _loss(losses, 1.0),
                             rtol=1e-6)


@SETTINGS
@given(losses=_inputs.loss_vectors(low=1e-2, high=1e2),
       mu=st.floats(1e-2, 1e2))
def test_stateless_weights_are_the_gradient(losses, mu):
  lam = _preferences(losses)
  ref = _preferences(losses, seed=2)
  method = weighting.stch(mu, weights=tuple(lam), reference=tuple(ref))
  params, state = method.init(losses.size)
  out = method.apply(params, state, jnp.asarray(losses))
  np.testing.assert_allclose(out.weights, _grad(losses, mu, lam, ref),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(out.total, _loss(losses, mu, lam, ref),
                             rtol=1e-6)
  # Default weights 1/K: the gradient is a softmax / K, summing to 1/K.
  params, state = STATELESS.init(losses.size)
  _asserts.assert_grad_equals_weights(STATELESS.apply, params, state, losses)
  np.testing.assert_allclose(
      np.sum(STATELESS.apply(params, state, jnp.asarray(losses)).weights),
      1.0 / losses.size, rtol=1e-5)


def test_batched_losses_are_row_wise():
  losses = jnp.asarray(_inputs.positive_losses(1, 3, batch=(4,)))
  rows = jnp.stack([stch_loss(l, 0.5) for l in losses])
  np.testing.assert_allclose(stch_loss(losses, 0.5), rows, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(lambda l: stch_loss(l, 0.5))(losses),
                             rows, rtol=1e-6)


# --- LibMTL's form: warm-up, nadir vector, normalised log losses --------------

def _reference_libmtl(losses_per_step, steps_per_epoch, warmup_epochs, mu):
  """LibMTL's STCH in float64 numpy, epoch by epoch as its trainer runs it.

  Returns ``(total, d total / d L)`` of each step; the gradient is written
  out by hand.
  """
  losses_per_step = np.asarray(losses_per_step, np.float64)
  k = losses_per_step.shape[1]
  nadir_sum, nadir_count, nadir = np.zeros(k), 0, None
  out = []
  for step, l in enumerate(losses_per_step):
    epoch = step // steps_per_epoch
    if epoch <= warmup_epochs:
      if epoch == warmup_epochs:
        nadir_sum, nadir_count = nadir_sum + l, nadir_count + 1
      out.append((np.sum(np.log(l + 1e-20)), 1.0 / (l + 1e-20)))
      continue
    if nadir is None:
      nadir = nadir_sum / nadir_count
    f = np.log(l / nadir + 1e-20)
    g = (f - f.max()) / mu
    soft = np.exp(g) / np.exp(g).sum()
    out.append((k * mu * np.log(np.exp(g).sum()),
                k * soft / nadir / (l / nadir + 1e-20)))
  return out


def _run(method, losses_per_step, jit):
  params, state = method.init(len(losses_per_step[0]))
  apply = jax.jit(method.apply) if jit else method.apply
  grad = jax.jit(jax.grad(lambda s, l: method.apply(params, s, l).total,
                          argnums=1))
  outs = []
  for losses in losses_per_step:
    losses = jnp.asarray(losses, jnp.float32)
    out = apply(params, state, losses)
    outs.append((out, grad(state, losses)))
    state = out.state
  return outs


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("warmup_epochs", [0, 1, 2])
def test_warmup_and_nadir_recurrence(warmup_epochs, jit):
  steps_per_epoch, mu = 2, 0.7
  losses = _inputs.positive_losses(3, 3, low=0.2, high=5.0,
                                   batch=((warmup_epochs + 3) * 2,))
  method = weighting.stch(mu, warmup_epochs=warmup_epochs,
                          steps_per_epoch=steps_per_epoch)
  outs = _run(method, losses, jit)
  expected = _reference_libmtl(losses, steps_per_epoch, warmup_epochs, mu)
  for step, ((out, grad), (total, weights)) in enumerate(zip(outs, expected)):
    np.testing.assert_allclose(out.total, total, rtol=1e-5, atol=1e-6,
                               err_msg=f"total, step {step}")
    np.testing.assert_allclose(out.weights, weights, rtol=1e-5,
                               err_msg=f"weights, step {step}")
    np.testing.assert_allclose(grad, out.weights, rtol=1e-5,
                               err_msg=f"gradient, step {step}")
  last = outs[-1][0].state
  assert int(last.step) == len(losses)
  # The nadir sums exactly the losses of epoch W, and nothing after.
  w = warmup_epochs
  np.testing.assert_allclose(last.loss_sum, losses[2 * w:2 * w + 2].sum(0),
                             rtol=1e-6)


def test_nadir_recurrence_by_hand():
  # warmup_epochs = 1, steps_per_epoch = 2. Epoch 0: log-sum, gradient 1/L.
  # Epoch 1 (steps 2, 3): log-sum too, and the nadir n = mean([2, 4], [4, 2])
  # = [3, 3]. Step 4, L = [1, 1]: f = log(1/3) both, total 2 * log 2
  # = 1.3862944, weights 2 * (1/2) / 1 = [1, 1]. Step 5, L = [3, 1]:
  # f = [0, -log 3]: total 2 log(1 + 1/3) = 0.5753641; softmax [3/4, 1/4],
  # weights [2 * 3/4 / 3, 2 * 1/4 / 1] = [0.5, 0.5].
  steps = [[1.0, 2.0], [1.0, 2.0], [2.0, 4.0], [4.0, 2.0], [1.0, 1.0],
           [3.0, 1.0]]
  outs = _run(weighting.stch(warmup_epochs=1, steps_per_epoch=2), steps,
              jit=False)
  expected = [(math.log(2.0), [1.0, 0.5])] * 2 + [
      (math.log(8.0), [0.5, 0.25]), (math.log(8.0), [0.25, 0.5]),
      (2 * LN2, [1.0, 1.0]), (0.5753641, [0.5, 0.5])]
  for step, ((out, _), (total, weights)) in enumerate(zip(outs, expected)):
    np.testing.assert_allclose(out.total, total, atol=1e-6, err_msg=str(step))
    np.testing.assert_allclose(out.weights, weights, atol=1e-6,
                               err_msg=str(step))
  np.testing.assert_allclose(outs[-1][0].state.loss_sum, [6.0, 6.0])


def test_small_libmtl_value_keeps_its_precision():
  # Nadir [1, 1] (W = 0), then L = [1, e^-10]: f = [0, -10]; the value is
  # K log(1 + e^-10) = 2 * 4.5398899e-5 = 9.0797798e-5, held to 1e-6
  # relative in float32 (log of a sum near 1 would give ~1e-3).
  method = weighting.stch(warmup_epochs=0, steps_per_epoch=1)
  params, state = method.init(2)
  state = method.apply(params, state, jnp.ones(2)).state
  out = method.apply(params, state, jnp.asarray([1.0, math.exp(-10.0)]))
  np.testing.assert_allclose(out.total, 2 * math.log1p(math.exp(-10.0)),
                             rtol=1e-6)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("warmup_epochs", [None, 1])
def test_jitted_apply_does_not_retrace_and_keeps_float32(warmup_epochs, x64):
  # Six steps with steps_per_epoch = 2 and W = 1 cross the warm-up, the
  # nadir epoch and the STCH epochs.
  kwargs = {} if warmup_epochs is None else {
      "warmup_epochs": warmup_epochs, "steps_per_epoch": 2}
  method = weighting.stch(**kwargs)
  with jax.enable_x64(x64):
    params, state = method.init(3)
    steps = [jnp.asarray(_inputs.positive_losses(seed, 3), jnp.float32)
             for seed in range(6)]
    _asserts.assert_no_retrace(method.apply, params, state, steps)
    out = jax.jit(method.apply)(params, state, steps[0])
    assert out.total.dtype == out.weights.dtype == jnp.float32


@pytest.mark.parametrize("warmup_epochs", [None, 0])
@pytest.mark.parametrize("case", sorted(_inputs.DEGENERATE))
def test_degenerate_losses_stay_finite(case, warmup_epochs):
  kwargs = {} if warmup_epochs is None else {
      "warmup_epochs": warmup_epochs, "steps_per_epoch": 1}
  method = weighting.stch(**kwargs)
  losses = jnp.asarray(_inputs.DEGENERATE[case], jnp.float32)
  params, state = method.init(losses.size)
  for _ in range(2):  # warm-up (nadir) step, then STCH
    out = jax.jit(method.apply)(params, state, losses)
    _asserts.assert_finite_shape(out.total, ())
    _asserts.assert_finite_shape(out.weights, losses.shape)
    state = out.state


def test_state_is_typed():
  _, state = weighting.stch(warmup_epochs=4, steps_per_epoch=3).init(4)
  assert isinstance(state, weighting.STCHState)
  assert state.step.shape == () and state.step.dtype == jnp.int32
  assert state.loss_sum.shape == (4,)
  stateless = STATELESS.init(4)[1]
  assert isinstance(stateless, weighting.StatelessState)
  assert stateless.tasks.shape == (4,)  # records K for apply's check


# --- errors -------------------------------------------------------------------

@pytest.mark.parametrize("mu", [0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("build", [
    lambda mu: weighting.stch(mu),
    lambda mu: weighting.get("stch", mu=mu, warmup_epochs=4,
                             steps_per_epoch=2),
], ids=["stch", "get"])
def test_mu_must_be_positive(build, mu):
  with pytest.raises(ValueError, match="mu must be a finite number > 0") as info:
    build(mu)
  assert repr(mu) in str(info.value)


@pytest.mark.parametrize("steps_per_epoch", [None, 0, -3, 2.0, True])
def test_warmup_needs_steps_per_epoch(steps_per_epoch):
  with pytest.raises(ValueError, match="needs steps_per_epoch"):
    weighting.stch(warmup_epochs=4, steps_per_epoch=steps_per_epoch)


@pytest.mark.parametrize("warmup_epochs", [-1, 1.5, True])
def test_warmup_epochs_must_be_a_non_negative_int(warmup_epochs):
  with pytest.raises(ValueError, match="warmup_epochs must be None"):
    weighting.stch(warmup_epochs=warmup_epochs, steps_per_epoch=2)


def test_steps_per_epoch_without_warmup_is_rejected():
  with pytest.raises(ValueError, match="only used with warmup_epochs"):
    weighting.stch(steps_per_epoch=2)


def test_preferences_do_not_combine_with_warmup():
  with pytest.raises(ValueError, match="stateless form only"):
    weighting.stch(weights=(0.5, 0.5), warmup_epochs=4, steps_per_epoch=2)


@pytest.mark.parametrize("name", ["weights", "reference"])
def test_vectors_need_one_entry_per_task(name):
  with pytest.raises(ValueError, match=rf"{name} must have shape \(2,\)"):
    stch_loss(jnp.ones(2), 1.0, **{name: jnp.ones(3)})
  with pytest.raises(ValueError, match=rf"{name} must have shape \(2,\)"):
    weighting.stch(**{name: (1.0, 1.0, 1.0)}).init(2)


def test_losses_must_match_num_tasks():
  method = weighting.stch(warmup_epochs=1, steps_per_epoch=2)
  params, state = method.init(3)
  with pytest.raises(ValueError, match="initialised for 3 tasks"):
    method.apply(params, state, jnp.ones(2))
