"""uw_so_norm: UW-SO on the losses relative to their first step."""
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
from mtl_jax.weighting import uw_so_norm_weights, uw_so_rel_weights

SETTINGS = settings(deadline=None, max_examples=30)
_norm = jax.jit(uw_so_norm_weights)


def _by_hand(losses, initial, tau=None):
  """The formula in float64, step by step."""
  losses, initial = np.asarray(losses, np.float64), np.asarray(initial, np.float64)
  k = len(losses)
  tau = k / 2 if tau is None else tau
  ell = losses / initial
  p = (1 / ell) / np.sum(1 / ell)
  v = np.exp(k / tau * p) / np.sum(np.exp(k / tau * p))
  raw = v / initial
  return raw / raw.sum()


@SETTINGS
@given(losses=_inputs.loss_vectors(), data=st.data())
def test_matches_the_formula_and_lies_on_the_simplex(losses, data):
  initial = np.asarray(data.draw(_inputs.loss_vectors(len(losses), len(losses))))
  w = _norm(losses, initial)
  _asserts.assert_simplex(w, atol=1e-5)
  np.testing.assert_allclose(w, _by_hand(losses, initial), rtol=2e-4, atol=1e-6)


@SETTINGS
@given(losses=_inputs.loss_vectors(), data=st.data())
def test_each_task_keeps_its_share_under_its_own_rescaling(losses, data):
  # Task k's losses (first step included) times c_k: w_k L_k unchanged, up
  # to the normalisation common to all tasks.
  k = len(losses)
  initial = np.asarray(data.draw(_inputs.loss_vectors(k, k)))
  c = np.asarray(data.draw(st.lists(st.floats(-3, 3), min_size=k, max_size=k)))
  scale = 10.0 ** c
  share = lambda w, l: np.asarray(w) * l / np.sum(np.asarray(w) * l)
  a = share(_norm(losses, initial), np.asarray(losses))
  b = share(_norm(losses * scale, initial * scale), np.asarray(losses) * scale)
  np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def test_first_step_weights_are_the_inverse_first_losses():
  initial = jnp.array([0.5, 2.0, 400.0])
  w = _norm(initial, initial)
  inv = 1 / np.asarray(initial)
  np.testing.assert_allclose(w, inv / inv.sum(), rtol=1e-5)


def test_a_task_that_progressed_more_gets_more_weight():
  initial = jnp.array([1.0, 1.0, 1.0])
  w = np.asarray(_norm(jnp.array([0.2, 0.5, 1.0]), initial))
  assert w[0] > w[1] > w[2]
  # With equal first losses it is uw_so_rel of the current losses.
  np.testing.assert_allclose(w, uw_so_rel_weights(jnp.array([0.2, 0.5, 1.0])),
                             rtol=1e-5)


def test_permutation_equivariant():
  losses, initial = jnp.array([0.3, 7.0, 0.01]), jnp.array([1.0, 20.0, 0.1])
  perm = jnp.array([2, 0, 1])
  np.testing.assert_allclose(_norm(losses[perm], initial[perm]),
                             np.asarray(_norm(losses, initial))[perm], rtol=1e-6)


def test_factory_stores_the_first_losses_and_resumes():
  method = weighting.get("uw_so_norm")
  params, state = method.init(2)
  apply = jax.jit(method.apply)
  first = apply(params, state, jnp.array([2.0, 50.0]))
  np.testing.assert_allclose(first.state.initial, [2.0, 50.0])
  assert int(first.state.count) == 1
  second = apply(params, first.state, jnp.array([1.0, 50.0]))
  np.testing.assert_allclose(second.state.initial, [2.0, 50.0])  # kept
  np.testing.assert_allclose(second.weights, _by_hand([1.0, 50.0], [2.0, 50.0]),
                             rtol=1e-5)
  # The total is sum_k w_k L_k and no gradient flows through the weights.
  grad = jax.grad(lambda l: method.apply(params, first.state, l).total)(
      jnp.array([1.0, 50.0]))
  np.testing.assert_allclose(grad, second.weights, rtol=1e-6)


def test_one_tiny_loss_moves_only_the_bounded_softmax():
  # The progress term v obeys uw_so_rel's bound at tau = K / 2: e^2 at most
  # between two tasks with equal first losses, whatever the losses.
  k = 4
  w = np.asarray(_norm(jnp.array([1e-9, 1.0, 1.0, 1.0]), jnp.ones(k)))
  assert w[0] < 1 / (1 + (k - 1) * math.exp(-2.0)) + 1e-6
  assert w[0] / w[1] <= math.exp(2.0) * (1 + 1e-5)


@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan])
def test_bad_tau_is_rejected(tau):
  with pytest.raises(ValueError, match="tau"):
    weighting.uw_so_norm(tau=tau)
