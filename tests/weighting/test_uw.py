"""UW: Kendall et al.'s learnable log-variances, and their optimum."""
import functools

import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_jax import weighting
from mtl_jax.weighting import uncertainty_loss, uw_o_weights

SETTINGS = settings(deadline=None, max_examples=30)
_uncertainty_loss = jax.jit(uncertainty_loss, static_argnames="task_types")
TYPES = ("regression", "classification")


@functools.partial(jax.jit, static_argnames=("task_types", "steps"))
def _minimise_log_vars(losses, task_types=None, steps=200):
  """Plain gradient descent (step 1) on s with the losses held fixed.

  The objective c e^-s L + s/2 is convex in s with curvature 1/2 at its
  minimum, so a unit step contracts the error by half each step once near it,
  and from far above it descends by less than the gap (no overshoot).
  """
  grad = jax.grad(lambda s: uncertainty_loss(losses, s, task_types)[0])
  return jax.lax.fori_loop(0, steps, lambda _, s: s - grad(s),
                           jnp.zeros_like(losses))


@SETTINGS
@given(losses=_inputs.loss_vectors(max_tasks=4, low=0.05, high=20.0))
def test_regression_optimum_is_log_loss(losses):
  s = _minimise_log_vars(jnp.asarray(losses))
  np.testing.assert_allclose(s, np.log(losses), atol=1e-4)
  # At the optimum w = 0.5 e^-s = 1 / (2 L): proportional to UW-O's 1 / L.
  _, w = _uncertainty_loss(jnp.asarray(losses), s)
  np.testing.assert_allclose(w, 0.5 * uw_o_weights(losses), rtol=1e-3)


@SETTINGS
@given(losses=_inputs.loss_vectors(max_tasks=4, low=0.05, high=20.0))
def test_classification_optimum_is_log_twice_loss(losses):
  types = ("classification",) * losses.shape[0]
  s = _minimise_log_vars(jnp.asarray(losses), types)
  np.testing.assert_allclose(s, np.log(2.0 * losses), atol=1e-4)
  # w = e^-s = 1 / (2 L) again.
  _, w = _uncertainty_loss(jnp.asarray(losses), s, types)
  np.testing.assert_allclose(w, 0.5 * uw_o_weights(losses), rtol=1e-3)


@settings(deadline=None, max_examples=10)  # each task_types is a compile
@given(data=st.data(),
       losses=_inputs.loss_vectors(min_tasks=2, max_tasks=4, low=0.05,
                                   high=20.0))
def test_mixed_task_types_optimum(data, losses):
  types = tuple(data.draw(st.lists(st.sampled_from(TYPES),
                                   min_size=losses.size, max_size=losses.size)))
  s = _minimise_log_vars(jnp.asarray(losses), types)
  factor = np.array([0.5 if t == "regression" else 1.0 for t in types])
  np.testing.assert_allclose(s, np.log(2.0 * factor * losses), atol=1e-4)


def test_optax_adam_reaches_the_same_optimum():
  optax = pytest.importorskip("optax")
  losses = jnp.asarray([0.2, 1.0, 5.0])
  method = weighting.get("uw")
  params, state = method.init(3)
  opt = optax.adam(optax.exponential_decay(0.1, 100, 0.5))
  opt_state = opt.init(params)

  @jax.jit
  def step(carry, _):
    params, opt_state = carry
    grads = jax.grad(lambda p: method.apply(p, state, losses).total)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, opt_state), None, length=800)
  np.testing.assert_allclose(params["log_vars"], np.log(losses), atol=1e-3)
  w = method.apply(params, state, losses).weights
  np.testing.assert_allclose(w / w.sum(), uw_o_weights(losses)
                             / uw_o_weights(losses).sum(), rtol=1e-3)


@SETTINGS
@given(losses=_inputs.loss_vectors(), seed=st.integers(0, 2**16))
def test_total_and_weights_formula(losses, seed):
  s = np.random.default_rng(seed).uniform(-2.0, 2.0, losses.shape)
  total, w = _uncertainty_loss(jnp.asarray(losses),
                               jnp.asarray(s, jnp.float32))
  l64 = losses.astype(np.float64)
  np.testing.assert_allclose(total, np.sum(0.5 * np.exp(-s) * l64 + 0.5 * s),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(w, 0.5 * np.exp(-s), rtol=1e-5)


def test_weights_are_the_gradient_and_carry_none():
  losses = jnp.asarray(_inputs.positive_losses(0, 3))
  s = jnp.asarray([-0.7, 0.2, 1.1])
  types = ("regression", "classification", "regression")
  grad = jax.grad(lambda l: uncertainty_loss(l, s, types)[0])(losses)
  np.testing.assert_allclose(grad, uncertainty_loss(losses, s, types)[1],
                             rtol=1e-6)
  # No gradient through the weights, neither to the losses nor to s.
  _asserts.assert_no_gradient(lambda l: uncertainty_loss(l, s, types)[1],
                              losses)
  _asserts.assert_no_gradient(lambda v: uncertainty_loss(losses, v, types)[1],
                              s)


def test_log_var_gradient_is_the_paper_s():
  # d/ds (c e^-s L + s/2) = 1/2 - c e^-s L.
  losses = jnp.asarray([0.5, 3.0])
  s = jnp.asarray([0.3, -0.4])
  types = ("classification", "regression")
  grad = jax.grad(lambda v: uncertainty_loss(losses, v, types)[0])(s)
  c = np.array([1.0, 0.5])
  np.testing.assert_allclose(grad, 0.5 - c * np.exp(-np.asarray(s))
                             * np.asarray(losses), rtol=1e-6)


@pytest.mark.parametrize("init_log_var", [0.0, -0.5])
def test_factory_init(init_log_var):
  params, state = weighting.uw(init_log_var=init_log_var).init(4)
  assert set(params) == {"log_vars"}
  np.testing.assert_array_equal(params["log_vars"], np.full(4, init_log_var))
  assert params["log_vars"].dtype == jnp.float32
  assert isinstance(state, weighting.StatelessState)
  assert state.tasks.shape == (4,)  # records K for apply's check


def test_permutation_equivariant_with_log_vars():
  losses = jnp.asarray(_inputs.positive_losses(3, 4))
  s = jnp.asarray([0.1, -0.3, 0.8, 0.0])
  perm = np.array([2, 0, 3, 1])
  total, w = uncertainty_loss(losses, s)
  total_p, w_p = uncertainty_loss(losses[perm], s[perm])
  np.testing.assert_allclose(total_p, total, rtol=1e-6)
  np.testing.assert_allclose(w_p, np.asarray(w)[perm], rtol=1e-6)
