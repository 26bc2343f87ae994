"""FAMO: c sum_k z_k log L_k, and one Adam step on the logits after update."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_jax import weighting
from mtl_jax.weighting import famo_loss, famo_weights

SETTINGS = settings(deadline=None, max_examples=30)
_loss = jax.jit(famo_loss)
_weights = jax.jit(famo_weights)
_grad = jax.jit(jax.grad(famo_loss))
# One Weighting for the module, so that jitted applies are cached.
METHOD = weighting.famo()


def _logits_for(losses, seed=0):
  rng = np.random.default_rng(seed + losses.size)
  return rng.normal(size=losses.shape).astype(np.float32)


def _state_with(logits):
  """A FAMOState at the given logits, with a fresh optimiser state."""
  _, state = METHOD.init(len(logits))
  return state._replace(logits=jnp.asarray(logits, state.logits.dtype))


# --- the loss and its weights -------------------------------------------------

def test_value_and_gradient_at_zero_logits():
  # z = [1/2, 1/2]: c = 1 / (0.5 / 1 + 0.5 / 2) = 4/3; value 4/3 * 0.5 * log 2
  # = 0.4620981; gradient c z / L = [2/3, 1/3] (TorchJD's test_famo.py).
  losses = jnp.asarray([1.0, 2.0])
  np.testing.assert_allclose(famo_loss(losses, jnp.zeros(2)), 0.4620981,
                             atol=1e-6)
  np.testing.assert_allclose(jax.grad(famo_loss)(losses, jnp.zeros(2)),
                             [2 / 3, 1 / 3], atol=1e-6)
  np.testing.assert_allclose(famo_weights(losses, jnp.zeros(2)),
                             [2 / 3, 1 / 3], atol=1e-6)


@SETTINGS
@given(losses=_inputs.loss_vectors(low=1e-2, high=1e2))
def test_weights_are_the_gradient_and_on_simplex(losses):
  logits = _logits_for(losses)
  w = _weights(losses, logits)
  _asserts.assert_finite_shape(w, losses.shape)
  _asserts.assert_simplex(w, atol=1e-5)
  np.testing.assert_allclose(_grad(losses, logits), w, rtol=1e-5, atol=1e-7)


@SETTINGS
@given(losses=_inputs.loss_vectors(low=1e-2, high=1e2))
def test_apply_gradient_of_total_equals_weights(losses):
  state = _state_with(_logits_for(losses, seed=1))
  _asserts.assert_grad_equals_weights(METHOD.apply, {}, state, losses,
                                      rtol=2e-5)


@SETTINGS
@given(data=st.data(), losses=_inputs.loss_vectors(min_tasks=2))
def test_permutation_equivariant(data, losses):
  # Permuting the tasks together with their logits permutes the weights.
  perm = data.draw(_inputs.permutations_of(losses))
  logits = _logits_for(losses)
  w = np.asarray(_weights(losses, logits))
  np.testing.assert_allclose(_weights(losses[perm], logits[perm]), w[perm],
                             rtol=1e-5, atol=1e-7)


@SETTINGS
@given(losses=_inputs.loss_vectors(min_tasks=2, low=1e-2, high=1e2),
       scale=st.floats(1e-1, 1e2))
def test_weights_invariant_to_a_common_loss_scale(losses, scale):
  # w_k is proportional to z_k / L_k: a common factor cancels (up to the
  # 1e-8 added to each loss, < 1e-5 relative here).
  logits = _logits_for(losses)
  np.testing.assert_allclose(_weights(scale * losses, logits),
                             _weights(losses, logits), rtol=1e-4, atol=1e-6)


def test_equal_logits_weight_by_inverse_loss():
  losses = jnp.asarray([0.5, 1.0, 4.0])
  inverse = 1.0 / np.asarray(losses)
  np.testing.assert_allclose(famo_weights(losses, jnp.zeros(3)),
                             inverse / inverse.sum(), rtol=1e-6)


def test_min_losses_shift_the_log():
  # b = [1, 1] on [2, 3]: shifted [1, 2], as [1, 2] with no bound.
  value = famo_loss(jnp.asarray([2.0, 3.0]), jnp.zeros(2), jnp.ones(2))
  np.testing.assert_allclose(value, famo_loss(jnp.asarray([1.0, 2.0]),
                                              jnp.zeros(2)), atol=1e-6)
  method = weighting.famo(min_losses=(1.0, 1.0))
  out = method.apply(*method.init(2), jnp.asarray([2.0, 3.0]))
  np.testing.assert_allclose(out.weights, [2 / 3, 1 / 3], atol=1e-6)


def test_loss_below_its_bound_is_nan():
  assert np.isnan(famo_loss(jnp.asarray([-1.0, 2.0]), jnp.zeros(2)))


def test_logits_get_no_gradient_from_the_loss():
  losses = jnp.asarray([0.5, 2.0, 1.0])
  logits = jnp.asarray([0.3, -0.2, 0.1])
  _asserts.assert_no_gradient(lambda z: famo_loss(losses, z), logits)
  _asserts.assert_no_gradient(lambda l: famo_weights(l, logits), losses)


@pytest.mark.parametrize("case", sorted(_inputs.DEGENERATE))
def test_degenerate_losses_stay_finite(case):
  losses = jnp.asarray(_inputs.DEGENERATE[case], jnp.float32)
  params, state = METHOD.init(losses.size)
  out = jax.jit(METHOD.apply)(params, state, losses)
  _asserts.assert_finite_shape(out.total, ())
  _asserts.assert_finite_shape(out.weights, losses.shape)
  _asserts.assert_simplex(out.weights, atol=1e-5)
  new = jax.jit(METHOD.after_update)(params, state, losses, 0.5 * losses)
  _asserts.assert_finite_shape(new.logits, losses.shape)


def test_batched_losses_are_row_wise():
  losses = jnp.asarray(_inputs.positive_losses(1, 3, batch=(4,)))
  logits = jnp.asarray([0.2, -0.1, 0.4])
  rows = jnp.stack([famo_loss(l, logits) for l in losses])
  np.testing.assert_allclose(famo_loss(losses, logits), rows, rtol=1e-6)
  np.testing.assert_allclose(
      jax.vmap(famo_weights, in_axes=(0, None))(losses, logits),
      jnp.stack([famo_weights(l, logits) for l in losses]), rtol=1e-6)


# --- after_update: the recurrence of the logits -------------------------------

def _reference_famo(pairs, lr, weight_decay, min_losses=None):
  """FAMO's logits over steps, in float64 numpy, Adam written out by hand.

  ``pairs`` holds ``(losses_before, losses_after)`` of each step. Returns the
  weights used at each step and the logits after each update.
  """
  b1, b2, eps = 0.9, 0.999, 1e-8
  k = len(pairs[0][0])
  bound = np.zeros(k) if min_losses is None else np.asarray(min_losses)
  xi, m, v = np.zeros(k), np.zeros(k), np.zeros(k)
  weights, logits = [], []
  for t, (before, after) in enumerate(pairs, start=1):
    before = np.asarray(before, np.float64) - bound + 1e-8
    after = np.asarray(after, np.float64) - bound + 1e-8
    z = np.exp(xi - xi.max())
    z /= z.sum()
    weights.append((z / before) / np.sum(z / before))
    delta = np.log(before) - np.log(after)
    grad = (np.diag(z) - np.outer(z, z)) @ delta   # softmax VJP
    grad = grad + weight_decay * xi                 # coupled L2 (torch Adam)
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad ** 2
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    xi = xi - lr * m_hat / (np.sqrt(v_hat) + eps)
    logits.append(xi.copy())
  return np.asarray(weights), np.asarray(logits)


def test_three_steps_by_hand():
  # Step 1 at xi = 0, z = [1/2, 1/2]: delta = [log 2, log(2 / 1.9)]
  # = [0.693147, 0.051293]; the softmax VJP is z (delta - z . delta) =
  # [0.160464, -0.160464]; Adam's first step is lr * g / |g| (m_hat = g,
  # v_hat = g^2), so xi = [-0.025, 0.025]: task 0 improved more, loses weight.
  pairs = [([1.0, 2.0], [0.5, 1.9]), ([0.5, 1.9], [0.45, 1.0]),
           ([0.45, 1.0], [0.44, 0.98])]
  params, state = METHOD.init(2)
  state = jax.jit(METHOD.after_update)(params, state,
                                       jnp.asarray(pairs[0][0]),
                                       jnp.asarray(pairs[0][1]))
  np.testing.assert_allclose(state.logits, [-0.025, 0.025], atol=1e-6)
  for lr, weight_decay in ((0.025, 1e-3), (0.1, 0.5)):
    method = weighting.famo(lr=lr, weight_decay=weight_decay)
    expected_w, expected_xi = _reference_famo(pairs, lr, weight_decay)
    params, state = method.init(2)
    for step, (before, after) in enumerate(pairs):
      out = method.apply(params, state, jnp.asarray(before))
      np.testing.assert_allclose(out.weights, expected_w[step], rtol=1e-5,
                                 err_msg=f"weights, step {step}")
      state = method.after_update(params, out.state, jnp.asarray(before),
                                  jnp.asarray(after))
      np.testing.assert_allclose(state.logits, expected_xi[step], rtol=1e-5,
                                 atol=1e-7, err_msg=f"logits, step {step}")
    assert int(state.opt_state[1][0].count) == len(pairs)


def test_recurrence_with_min_losses_and_three_tasks():
  pairs = [([1.5, 2.0, 3.0], [1.2, 1.9, 2.0]),
           ([1.2, 1.9, 2.0], [1.1, 1.5, 1.9]),
           ([1.1, 1.5, 1.9], [1.05, 1.4, 1.2])]
  bound = (1.0, 0.5, 0.0)
  method = weighting.famo(min_losses=bound)
  expected_w, expected_xi = _reference_famo(pairs, 0.025, 1e-3, bound)
  params, state = method.init(3)
  apply, after_update = jax.jit(method.apply), jax.jit(method.after_update)
  for step, (before, after) in enumerate(pairs):
    out = apply(params, state, jnp.asarray(before))
    np.testing.assert_allclose(out.weights, expected_w[step], rtol=1e-5)
    state = after_update(params, out.state, jnp.asarray(before),
                         jnp.asarray(after))
    np.testing.assert_allclose(state.logits, expected_xi[step], rtol=1e-4,
                               atol=1e-7)


def test_no_change_in_the_losses_leaves_zero_logits():
  params, state = METHOD.init(3)
  losses = jnp.asarray([0.5, 1.0, 2.0])
  for _ in range(3):
    state = METHOD.after_update(params, state, losses, losses)
  np.testing.assert_array_equal(state.logits, np.zeros(3))


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_jitted_steps_do_not_retrace_and_keep_dtypes(x64):
  with jax.enable_x64(x64):
    params, state = METHOD.init(3)
    init_leaves = jax.tree.leaves(state)
    traces = []

    @jax.jit
    def step(state, before, after):
      traces.append(None)
      out = METHOD.apply(params, state, before)
      return out, METHOD.after_update(params, out.state, before, after)

    for seed in range(5):
      before = jnp.asarray(_inputs.positive_losses(seed, 3), jnp.float32)
      out, state = step(state, before, 0.9 * before)
      # float32 losses stay float32 under x64.
      assert out.total.dtype == out.weights.dtype == jnp.float32
    assert len(traces) == 1
    assert jax.tree.structure(state) == jax.tree.structure(METHOD.init(3)[1])
    for new, old in zip(jax.tree.leaves(state), init_leaves):
      assert (new.shape, new.dtype) == (old.shape, old.dtype)


def test_state_is_typed_and_on_the_logits_optimiser():
  params, state = METHOD.init(4)
  assert params == {}
  assert isinstance(state, weighting.FAMOState)
  np.testing.assert_array_equal(state.logits, np.zeros(4))
  assert METHOD.after_update is not None
  assert weighting.get("famo").after_update is not None


# --- errors -------------------------------------------------------------------

@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
def test_lr_must_be_positive(lr):
  with pytest.raises(ValueError, match="lr must be a finite number > 0") as info:
    weighting.famo(lr=lr)
  assert repr(lr) in str(info.value)


@pytest.mark.parametrize("weight_decay", [-1e-3, float("nan")])
def test_weight_decay_must_be_non_negative(weight_decay):
  with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
    weighting.get("famo", weight_decay=weight_decay)


def test_min_losses_need_one_entry_per_task():
  with pytest.raises(ValueError, match="min_losses has 3 entries"):
    weighting.famo(min_losses=(0.0, 0.0, 0.0)).init(2)


def test_losses_must_match_num_tasks():
  params, state = METHOD.init(3)
  with pytest.raises(ValueError, match="initialised for 3 tasks"):
    METHOD.apply(params, state, jnp.ones(2))
  with pytest.raises(ValueError, match="initialised for 3 tasks"):
    METHOD.after_update(params, state, jnp.ones(3), jnp.ones(4))


@pytest.mark.parametrize("num_tasks", [0, 1.5, True])
def test_init_rejects_bad_num_tasks(num_tasks):
  with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
    METHOD.init(num_tasks)
