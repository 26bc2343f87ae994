"""DWA: weights 1 for two epochs, then K softmax of the loss ratios."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_jax import weighting
from mtl_jax.weighting import dwa_weights

SETTINGS = settings(deadline=None, max_examples=30)
_weights = jax.jit(dwa_weights)  # traced temperature: one compile per K


def _reference_dwa(losses_per_step, steps_per_epoch, temperature):
  """DWA in plain numpy (float64), straight from the paper.

  Epoch t uses the mean losses of epochs t-1 and t-2; epochs 0 and 1 use 1.
  """
  losses_per_step = np.asarray(losses_per_step, np.float64)
  num_tasks = losses_per_step.shape[1]
  means = [losses_per_step[i:i + steps_per_epoch].mean(axis=0)
           for i in range(0, len(losses_per_step), steps_per_epoch)]
  weights = []
  for step in range(len(losses_per_step)):
    epoch = step // steps_per_epoch
    if epoch < 2:
      weights.append(np.ones(num_tasks))
      continue
    z = means[epoch - 1] / means[epoch - 2] / temperature
    e = np.exp(z - z.max())
    weights.append(num_tasks * e / e.sum())
  return np.asarray(weights)


def _run(method, losses_per_step, jit):
  params, state = method.init(len(losses_per_step[0]))
  apply = jax.jit(method.apply) if jit else method.apply
  outs = []
  for losses in losses_per_step:
    out = apply(params, state, jnp.asarray(losses, jnp.float32))
    state = out.state
    outs.append(out)
  return outs


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("steps_per_epoch", [1, 2, 3])
def test_recurrence_over_epochs(steps_per_epoch, jit):
  # Four epochs of known losses (two with weight 1, then two from ratios).
  losses = _inputs.positive_losses(5, 3, batch=(4 * steps_per_epoch,),
                                   low=0.2, high=5.0)
  outs = _run(weighting.dwa(2.0, steps_per_epoch=steps_per_epoch), losses,
              jit)
  expected = _reference_dwa(losses, steps_per_epoch, 2.0)
  for step, (out, w_ref) in enumerate(zip(outs, expected)):
    np.testing.assert_allclose(out.weights, w_ref, rtol=1e-5,
                               err_msg=f"step {step}")
    np.testing.assert_allclose(out.total, w_ref @ losses[step], rtol=1e-5)
  assert int(outs[-1].state.step) == len(losses)


def test_ratio_rule_by_hand():
  # steps_per_epoch = 2. Epoch means: e0 = [1, 2], e1 = [0.5, 2] (a task
  # halving its loss). Epoch 2: r = [0.5, 1], T = 2:
  # 2 softmax([0.25, 0.5]) = [0.875647, 1.124353]. Epoch 3 (e2 = [0.5, 1]):
  # r = [1, 0.5]: 2 softmax([0.5, 0.25]) = [1.124353, 0.875647].
  steps = [[1.0, 2.0], [1.0, 2.0], [0.5, 2.0], [0.5, 2.0], [0.5, 1.0],
           [0.5, 1.0], [9.0, 9.0]]
  outs = _run(weighting.dwa(2.0, steps_per_epoch=2), steps, jit=False)
  expected = [[1, 1]] * 4 + [[0.875647, 1.124353]] * 2 + [[1.124353, 0.875647]]
  np.testing.assert_allclose([o.weights for o in outs], expected, atol=1e-6)


@SETTINGS
@given(prev=_inputs.loss_vectors(min_tasks=1, max_tasks=5, low=0.1, high=10.),
       temperature=st.floats(0.1, 100.0))
def test_weights_sum_to_num_tasks(prev, temperature):
  prev_prev = prev[::-1] + 0.5
  w = _weights(prev, prev_prev, temperature)
  _asserts.assert_finite_shape(w, prev.shape)
  np.testing.assert_allclose(np.sum(w), prev.size, rtol=1e-5)
  assert np.all(np.asarray(w) >= 0)


@SETTINGS
@given(prev=_inputs.loss_vectors(min_tasks=2, max_tasks=5, low=0.1, high=10.))
def test_large_temperature_is_equal_weighting(prev):
  # Ratios are at most 100 here; over T = 1e6 every weight is 1 within 1e-4.
  prev_prev = prev[::-1]
  np.testing.assert_allclose(_weights(prev, prev_prev, 1e6), 1.0,
                             atol=1e-4)


@SETTINGS
@given(data=st.data(),
       prev=_inputs.loss_vectors(min_tasks=2, max_tasks=5, low=0.1, high=10.))
def test_permutation_equivariant(data, prev):
  prev_prev = np.sqrt(prev) + 0.1
  perm = data.draw(_inputs.permutations_of(prev))
  w = np.asarray(_weights(prev, prev_prev, 2.0))
  np.testing.assert_allclose(_weights(prev[perm], prev_prev[perm], 2.0), w[perm],
                             rtol=1e-6)


def test_slower_task_gets_more_weight():
  # Task 0 halved its loss, task 1 kept it: task 1 gets the larger weight.
  w = dwa_weights(jnp.asarray([0.5, 1.0]), jnp.asarray([1.0, 1.0]))
  assert w[1] > 1.0 > w[0]


def test_weights_carry_no_gradient():
  prev = jnp.asarray([0.5, 1.0, 2.0])
  prev_prev = jnp.asarray([1.0, 1.0, 1.0])
  _asserts.assert_no_gradient(lambda p: dwa_weights(p, prev_prev), prev)
  _asserts.assert_no_gradient(lambda p: dwa_weights(prev, p), prev_prev)


def test_batched_input_is_row_wise():
  prev = jnp.asarray(_inputs.positive_losses(1, 3, batch=(4,)))
  prev_prev = jnp.asarray(_inputs.positive_losses(2, 3, batch=(4,)))
  rows = jnp.stack([dwa_weights(p, q) for p, q in zip(prev, prev_prev)])
  np.testing.assert_allclose(dwa_weights(prev, prev_prev), rows, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(dwa_weights)(prev, prev_prev), rows,
                             rtol=1e-6)


def test_state_is_on_device_and_typed():
  _, state = weighting.dwa(steps_per_epoch=3).init(4)
  assert isinstance(state, weighting.DWAState)
  assert state.step.shape == () and state.step.dtype == jnp.int32
  for field in (state.loss_sum, state.prev, state.prev_prev):
    assert field.shape == (4,)
