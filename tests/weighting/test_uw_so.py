"""UW-SO: softmax of the inverse losses over a temperature."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mtl_jax import weighting
from mtl_jax.weighting import uw_so_weights

SETTINGS = settings(deadline=None, max_examples=30)
# Jitted with a traced temperature: one compile per number of tasks, where
# eager mode would compile every op for every new shape.
_weights = jax.jit(uw_so_weights)


@SETTINGS
@given(losses=_inputs.loss_vectors(),
       temperature=st.floats(1e-2, 1e3, allow_nan=False, allow_infinity=False))
def test_weights_on_simplex(losses, temperature):
  w = _weights(losses, temperature)
  _asserts.assert_finite_shape(w, losses.shape)
  _asserts.assert_simplex(w, atol=1e-5)


@SETTINGS
@given(data=st.data(), losses=_inputs.loss_vectors(min_tasks=2))
def test_permutation_equivariant(data, losses):
  perm = data.draw(_inputs.permutations_of(losses))
  _asserts.assert_permutation_equivariant(
      lambda l: _weights(l, 3.0), losses, perm)


@SETTINGS
@given(losses=_inputs.loss_vectors(low=1e-2, high=1e2))
def test_large_temperature_is_equal_weighting_over_k(losses):
  # 1/L <= 100, so 1/(T L) <= 1e-4 and every weight is within ~1e-4 of 1/K,
  # i.e. EW's weights divided by K.
  k = losses.shape[0]
  method = weighting.get("ew")
  ew_over_k = method.apply(*method.init(k), jnp.asarray(losses)).weights / k
  np.testing.assert_allclose(_weights(losses, 1e6), ew_over_k,
                             atol=1e-4)


@SETTINGS
@given(losses=_inputs.loss_vectors(min_tasks=2))
def test_small_temperature_is_one_hot_on_smallest_loss(losses):
  inverse = np.sort(1.0 / losses.astype(np.float64))[::-1]
  gap = inverse[0] - inverse[1]
  assume(gap > 1e-3 * inverse[0])  # a unique smallest loss
  w = np.asarray(_weights(losses, gap / 50.0))  # others <= K e^-50
  expected = np.zeros_like(w)
  expected[np.argmin(losses)] = 1.0
  np.testing.assert_allclose(w, expected, atol=1e-6)


@SETTINGS
@given(losses=_inputs.loss_vectors(min_tasks=2))
def test_lower_loss_gets_more_weight(losses):
  w = np.asarray(_weights(losses, 2.0))
  order = np.argsort(losses, kind="stable")
  # Weights are non-increasing along increasing losses.
  assert np.all(np.diff(w[order]) <= 1e-7), (losses, w)


@SETTINGS
@given(losses=_inputs.loss_vectors(min_tasks=2, low=1e-1, high=1e1))
def test_temperature_moves_weight_from_smallest_loss(losses):
  assume(np.unique(losses).size == losses.size)
  best = np.argmin(losses)
  weights = [float(_weights(losses, t)[best]) for t in (0.5, 2.0, 8.0)]
  assert weights[0] >= weights[1] >= weights[2] >= 1.0 / losses.size - 1e-6


@pytest.mark.parametrize("case", sorted(_inputs.DEGENERATE))
@pytest.mark.parametrize("temperature", [1e-2, 1.0, 48.0])
def test_degenerate_losses_stay_finite(case, temperature):
  losses = jnp.asarray(_inputs.DEGENERATE[case], jnp.float32)
  w = uw_so_weights(losses, temperature)
  _asserts.assert_finite_shape(w, losses.shape)
  _asserts.assert_simplex(w, atol=1e-6)


def test_equal_losses_give_uniform_weights():
  w = uw_so_weights(jnp.asarray(_inputs.DEGENERATE["equal"]), 0.01)
  np.testing.assert_allclose(w, np.full(3, 1.0 / 3.0), atol=1e-6)


def test_wide_range_puts_weight_on_smallest_loss():
  # 1/(1e-8 + 1e-8) = 5e7 dwarfs the others: all weight on task 0.
  w = uw_so_weights(jnp.asarray(_inputs.DEGENERATE["wide_range"]), 1.0)
  np.testing.assert_allclose(w, [1.0, 0.0, 0.0, 0.0, 0.0], atol=1e-6)


def test_weights_carry_no_gradient():
  losses = jnp.asarray(_inputs.positive_losses(0, 4))
  _asserts.assert_no_gradient(lambda l: uw_so_weights(l, 2.0), losses)


def test_batched_input_is_row_wise():
  losses = jnp.asarray(_inputs.positive_losses(1, 3, batch=(5,)))
  rows = jnp.stack([uw_so_weights(l, 2.0) for l in losses])
  np.testing.assert_allclose(uw_so_weights(losses, 2.0), rows, atol=1e-7)
  np.testing.assert_allclose(
      jax.vmap(lambda l: uw_so_weights(l, 2.0))(losses), rows, atol=1e-7)
