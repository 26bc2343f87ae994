"""GradNorm: weights K softmax(s), the balancing loss and its gradient, and a
hand-computed recurrence (numpy) over several calls with both conventions
for L(0)."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import aggregation
from mtl_jax.aggregation import gradnorm_loss, gradnorm_weights
from mtl_jax.aggregation._base import apply_with_grads


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _numpy_gradnorm(logits, gramian, losses, initial, alpha):
  """(weights, aux, d aux / d logits) by hand, in float64.

  w = K softmax(s); x_i = w_i n_i - c_i with the constant target
  c_i = mean(w n) r_i^alpha; d aux / d w_i = sign(x_i) n_i and
  d w / d s = diag(w) - w w^T / K (symmetric).
  """
  logits = np.asarray(logits, np.float64)
  k = logits.size
  w = k * _softmax(logits)
  n = np.sqrt(np.maximum(np.diag(np.asarray(gramian, np.float64)), 0.0))
  rate = np.asarray(losses, np.float64) / np.asarray(initial, np.float64)
  r = rate / rate.mean()
  x = w * n - (w * n).mean() * r**alpha
  aux = np.abs(x).sum()
  grad = (np.diag(w) - np.outer(w, w) / k) @ (np.sign(x) * n)
  return w, aux, grad


def _case(seed, k):
  rng = np.random.default_rng(seed)
  jac = _inputs.jacobian(seed, k, k + 2, k, dtype=np.float64)
  return (rng.normal(size=k), jac @ jac.T, rng.uniform(0.1, 2.0, size=k),
          rng.uniform(0.1, 2.0, size=k))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 5])
def test_weights_sum_to_k_and_are_a_scaled_softmax(seed, k):
  logits = np.random.default_rng(seed).normal(size=k) * 3
  w = np.asarray(gradnorm_weights(jnp.asarray(logits, jnp.float32)))
  assert np.all(w > 0)
  np.testing.assert_allclose(w.sum(), k, rtol=1e-6)
  np.testing.assert_allclose(w, k * _softmax(logits), rtol=1e-5)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [0.0, 1.5, 3.0])
def test_loss_and_gradient_match_the_hand_derivative(seed, alpha):
  logits, gramian, losses, initial = _case(seed, 4)
  w, aux, grad = _numpy_gradnorm(logits, gramian, losses, initial, alpha)
  with jax.enable_x64():
    args = [jnp.asarray(x) for x in (logits, gramian, losses, initial)]
    value, g = jax.value_and_grad(gradnorm_loss)(*args, alpha)
    np.testing.assert_allclose(value, aux, rtol=1e-10)
    np.testing.assert_allclose(g, grad, rtol=1e-9, atol=1e-12)
    # Central finite differences of the loss with its target frozen at s
    # (sg: the target is a constant of the step) agree with the derivative.
    n = np.sqrt(np.diag(gramian))
    rate = losses / initial
    target = (w * n).mean() * (rate / rate.mean())**alpha
    frozen = lambda s: np.abs(4 * _softmax(s) * n - target).sum()
    eps = 1e-6
    fd = [(frozen(logits + eps * e) - frozen(logits - eps * e)) / (2 * eps)
          for e in np.eye(4)]
    np.testing.assert_allclose(fd, grad, rtol=1e-5, atol=1e-8)
  # No gradient flows into the Gramian or the losses.
  _asserts.assert_no_gradient(
      lambda gl: gradnorm_loss(jnp.asarray(logits, jnp.float32), gl[0], gl[1],
                               jnp.asarray(initial, jnp.float32), alpha),
      (jnp.asarray(gramian, jnp.float32), jnp.asarray(losses, jnp.float32)))


def test_balanced_point_has_zero_loss():
  # Equal gradient norms and equal training rates at w = 1: nothing to move.
  gramian = jnp.array([[4.0, 1.0, -2.0], [1.0, 4.0, 0.0], [-2.0, 0.0, 4.0]])
  value = gradnorm_loss(jnp.ones(3), gramian, jnp.array([1.0, 2.0, 3.0]),
                        jnp.array([2.0, 4.0, 6.0]))
  assert float(value) == pytest.approx(0.0, abs=1e-6)


def _run(method, calls, lr):
  """The method over ``calls`` [(G, L)], an SGD step of ``lr`` on the logits
  with the aux gradient after each call (as the train step does)."""
  params, state = method.init(len(calls[0][1]))
  apply = jax.jit(lambda p, s, g, l: apply_with_grads(method, p, s, g, l))
  outs = []
  for gramian, losses in calls:
    out, grads = apply(params, state, jnp.asarray(gramian, jnp.float32),
                       jnp.asarray(losses, jnp.float32))
    outs.append((out, grads))
    params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    state = out.state
  return outs


CALLS = [(_case(s, 3)[1], _case(s, 3)[2]) for s in range(4)]
LR = 0.3


def test_recurrence_from_the_first_call():
  # steps_per_epoch=None: L(0) = the first losses; every call balances.
  outs = _run(aggregation.get("gradnorm"), CALLS, LR)
  logits = np.ones(3)
  for t, ((gramian, losses), (out, grads)) in enumerate(zip(CALLS, outs)):
    w, aux, grad = _numpy_gradnorm(logits, gramian, losses, CALLS[0][1], 1.5)
    if t == 0:  # r = 1 and w = 1: the target is the mean gradient norm
      np.testing.assert_allclose(w, 1.0)
      n = np.sqrt(np.diag(gramian))
      np.testing.assert_allclose(aux, np.abs(n - n.mean()).sum())
    np.testing.assert_allclose(out.weights, w, rtol=1e-5)
    np.testing.assert_allclose(out.aux_loss, aux, rtol=1e-5)
    np.testing.assert_allclose(grads["logits"], grad, rtol=1e-4, atol=1e-6)
    assert out.head_weights is None
    np.testing.assert_allclose(out.state.initial_losses, CALLS[0][1],
                               rtol=1e-6)
    assert int(out.state.count) == t + 1
    logits = logits - LR * grad
  assert not np.allclose(outs[-1][0].weights, 1.0)  # the logits have moved


def test_recurrence_with_libmtl_epoch_zero():
  # steps_per_epoch=2: calls 0 and 1 are a plain sum (weights 1, aux 0, no
  # gradient); L(0) = their mean; calls 2 and 3 balance against it.
  outs = _run(aggregation.get("gradnorm", steps_per_epoch=2), CALLS, LR)
  initial = (CALLS[0][1] + CALLS[1][1]) / 2
  logits = np.ones(3)
  for t, ((gramian, losses), (out, grads)) in enumerate(zip(CALLS, outs)):
    assert int(out.state.count) == t + 1
    if t == 0:
      np.testing.assert_allclose(out.state.loss_sum, CALLS[0][1], rtol=1e-6)
      np.testing.assert_array_equal(out.state.initial_losses, 0.0)
    else:
      np.testing.assert_allclose(out.state.loss_sum,
                                 CALLS[0][1] + CALLS[1][1], rtol=1e-6)
      np.testing.assert_allclose(out.state.initial_losses, initial, rtol=1e-6)
    if t < 2:
      np.testing.assert_array_equal(out.weights, 1.0)
      assert float(out.aux_loss) == 0.0
      np.testing.assert_array_equal(grads["logits"], 0.0)
      continue
    w, aux, grad = _numpy_gradnorm(logits, gramian, losses, initial, 1.5)
    np.testing.assert_allclose(out.weights, w, rtol=1e-5)
    np.testing.assert_allclose(out.aux_loss, aux, rtol=1e-5)
    np.testing.assert_allclose(grads["logits"], grad, rtol=1e-4, atol=1e-6)
    logits = logits - LR * grad
  assert not np.allclose(outs[-1][0].weights, 1.0)


@pytest.mark.parametrize("kwargs", [{}, {"steps_per_epoch": 2}])
def test_stable_state_no_retrace_and_dtypes(kwargs):
  method = aggregation.get("gradnorm", **kwargs)
  params, state = method.init(3)
  np.testing.assert_array_equal(params["logits"], 1.0)
  traces = []

  def counted(p, s, g, l):
    traces.append(None)
    return method.apply(p, s, g, losses=l)

  jitted = jax.jit(counted)
  for g, l in CALLS:
    out = jitted(params, state, jnp.asarray(g, jnp.float32),
                 jnp.asarray(l, jnp.float32))
    for new, old in zip(jax.tree.leaves(out.state), jax.tree.leaves(state)):
      assert (new.shape, new.dtype) == (old.shape, old.dtype)
    state = out.state
  assert len(traces) == 1
  with jax.enable_x64():
    params, state = method.init(3)
    out = method.apply(params, state, jnp.asarray(CALLS[0][0]),
                       losses=jnp.asarray(CALLS[0][1]))
    assert out.weights.dtype == jnp.float64


@pytest.mark.parametrize("steps_per_epoch", [None, 1, 3])
def test_degenerate_inputs_stay_finite(steps_per_epoch):
  # Zero Gramian, zero losses, zero initial losses: no NaN in the weights,
  # the loss or the gradient of the logits.
  method = aggregation.get("gradnorm", steps_per_epoch=steps_per_epoch)
  params, state = method.init(3)
  for gramian, losses in ((jnp.zeros((3, 3)), jnp.zeros(3)),
                          (jnp.eye(3), jnp.array([0.0, 1.0, 2.0])),
                          (jnp.eye(3) * 1e-30, jnp.array([1e-8, 1.0, 1e8]))):
    out, grads = apply_with_grads(method, params, state, gramian, losses)
    for leaf in (out.weights, out.aux_loss, grads["logits"]):
      assert np.all(np.isfinite(np.asarray(leaf))), (leaf, gramian, losses)
    state = out.state


def test_errors():
  method = aggregation.get("gradnorm")
  params, state = method.init(2)
  gramian = jnp.array([[18.0, -22.0], [-22.0, 38.0]])
  with pytest.raises(ValueError, match="gradnorm needs the task losses"):
    method.apply(params, state, gramian)
  with pytest.raises(ValueError, match=r"losses must have shape \(2,\)"):
    method.apply(params, state, gramian, losses=jnp.ones(3))
  with pytest.raises(ValueError, match="initialised for 2 tasks"):
    method.apply(params, state, jnp.eye(3), losses=jnp.ones(3))
  with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
    aggregation.get("gradnorm", alpha=-1.0)
  for bad in (0, 1.5, True):
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive"):
      aggregation.get("gradnorm", steps_per_epoch=bad)
