"""UW-O: inverse-loss weights, every weighted term equal to 1."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_jax import weighting
from mtl_jax.weighting import uw_o_weights

SETTINGS = settings(deadline=None, max_examples=30)
_weights = jax.jit(uw_o_weights)  # one compile per shape
DIM = 4


def _task_losses(theta):
  """Three positive task losses f_k(theta) of a small shared parameter."""
  a = jnp.asarray([[1.0, -2.0, 0.5, 0.0], [0.3, 0.3, -1.0, 2.0],
                   [-1.5, 0.0, 0.7, 1.0]])
  return jnp.asarray([0.1, 0.2, 0.05]) + (a @ theta - jnp.asarray(
      [1.0, -1.0, 0.5])) ** 2


def _total(name):
  method = weighting.get(name)
  params, state = method.init(3)
  return lambda losses: method.apply(params, state, losses).total


_UW_O_TOTAL = _total("uw_o")  # built once: the jitted gradient is cached


@SETTINGS
@given(losses=_inputs.loss_vectors())
def test_every_weighted_loss_is_one(losses):
  w = _weights(losses)
  _asserts.assert_finite_shape(w, losses.shape)
  # w_k L_k = L_k / (L_k + eps) = 1 - eps / (L_k + eps).
  np.testing.assert_allclose(np.asarray(w) * losses, 1.0, rtol=1e-6,
                             atol=1e-8 / losses.min())


@SETTINGS
@given(data=st.data(), losses=_inputs.loss_vectors(min_tasks=2))
def test_permutation_equivariant(data, losses):
  perm = data.draw(_inputs.permutations_of(losses))
  _asserts.assert_permutation_equivariant(_weights, losses, perm)


@SETTINGS
@given(scales=st.lists(st.floats(1e-2, 1e2), min_size=3, max_size=3),
       seed=st.integers(0, 2**16))
def test_gradient_invariant_to_rescaling_a_task(scales, seed):
  # L_k >= 0.05 * 1e-2, so eps / L_k <= 2e-5: the gradients agree to that
  # relative error plus float32 rounding.
  theta = jnp.asarray(np.random.default_rng(seed).normal(size=DIM), jnp.float32)
  _asserts.assert_scale_invariant(_UW_O_TOTAL, _task_losses, theta,
                                  jnp.asarray(scales), rtol=1e-4, atol=1e-4)


def test_gradient_is_that_of_sum_of_log_losses():
  theta = jnp.asarray([0.3, -0.2, 1.0, 0.5])
  expected = jax.grad(lambda t: jnp.sum(jnp.log(_task_losses(t))))(theta)
  actual = jax.grad(lambda t: _total("uw_o")(_task_losses(t)))(theta)
  np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_equal_weighting_is_not_scale_invariant():
  # The control that shows the scaling check can fail: EW's gradient moves
  # when one task's loss is multiplied by 10.
  theta = jnp.asarray([0.3, -0.2, 1.0, 0.5])
  with pytest.raises(AssertionError):
    _asserts.assert_scale_invariant(_total("ew"), _task_losses, theta,
                                    jnp.asarray([10.0, 1.0, 1.0]))


@pytest.mark.parametrize("case", sorted(_inputs.DEGENERATE))
def test_degenerate_losses_stay_finite(case):
  losses = jnp.asarray(_inputs.DEGENERATE[case], jnp.float32)
  w = uw_o_weights(losses)
  _asserts.assert_finite_shape(w, losses.shape)
  # 1/(1e-8 + 1e-8) = 5e7 at the small end, 1e-8 at the large end.
  np.testing.assert_allclose(w, 1.0 / (np.asarray(losses, np.float64) + 1e-8),
                             rtol=1e-6)


def test_weights_carry_no_gradient():
  losses = jnp.asarray(_inputs.positive_losses(0, 4))
  _asserts.assert_no_gradient(uw_o_weights, losses)


def test_batched_input_is_row_wise():
  losses = jnp.asarray(_inputs.positive_losses(1, 3, batch=(5,)))
  rows = jnp.stack([uw_o_weights(l) for l in losses])
  np.testing.assert_allclose(uw_o_weights(losses), rows, rtol=1e-7)
  np.testing.assert_allclose(jax.vmap(uw_o_weights)(losses), rows, rtol=1e-7)
