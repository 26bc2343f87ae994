"""GLS (geometric mean) and IMTL-L (learnable log-scales)."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_jax import weighting
from mtl_jax.weighting import gls_loss, imtl_l_loss, uw_o_weights

SETTINGS = settings(deadline=None, max_examples=30)
# Jitted once per module: one compile per number of tasks.
_gls = jax.jit(gls_loss)
_imtl_l = jax.jit(imtl_l_loss)
GLS = weighting.gls()


@SETTINGS
@given(losses=_inputs.loss_vectors())
def test_gls_is_the_geometric_mean(losses):
  l64 = losses.astype(np.float64)
  np.testing.assert_allclose(_gls(losses),
                             np.prod(l64) ** (1.0 / l64.size), rtol=1e-5)


@SETTINGS
@given(losses=_inputs.loss_vectors(), scale=st.floats(1e-3, 1e3))
def test_gls_is_homogeneous_and_scale_invariant_in_log(losses, scale):
  # GLS(c L) = c GLS(L): rescaling every task rescales the total, so the
  # direction of its gradient (d log GLS) does not change.
  np.testing.assert_allclose(_gls(np.float32(scale) * losses),
                             scale * _gls(losses), rtol=1e-5)


@SETTINGS
@given(losses=_inputs.loss_vectors())
def test_gls_weights_are_the_gradient(losses):
  params, state = GLS.init(losses.size)
  _asserts.assert_grad_equals_weights(GLS.apply, params, state, losses)
  # d GLS / d L_k = GLS / (K L_k): an inverse-loss weighting like UW-O's,
  # scaled by GLS / K.
  out = GLS.apply(params, state, jnp.asarray(losses))
  np.testing.assert_allclose(
      out.weights, out.total / (losses.size * losses.astype(np.float64)),
      rtol=1e-5)


@pytest.mark.parametrize("case", sorted(_inputs.DEGENERATE))
def test_gls_degenerate_losses_stay_finite(case):
  losses = jnp.asarray(_inputs.DEGENERATE[case], jnp.float32)
  method = weighting.gls()
  out = method.apply(*method.init(losses.size), losses)
  _asserts.assert_finite_shape(out.total, ())
  _asserts.assert_finite_shape(out.weights, losses.shape)
  l64 = np.asarray(losses, np.float64)
  np.testing.assert_allclose(out.total, np.exp(np.mean(np.log(l64))),
                             rtol=1e-5)


def test_gls_batched_input_is_row_wise():
  losses = jnp.asarray(_inputs.positive_losses(1, 3, batch=(5,)))
  rows = jnp.stack([gls_loss(l) for l in losses])
  np.testing.assert_allclose(gls_loss(losses), rows, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(gls_loss)(losses), rows, rtol=1e-6)


@SETTINGS
@given(losses=_inputs.loss_vectors(), seed=st.integers(0, 2**16))
def test_imtl_l_formula(losses, seed):
  s = np.random.default_rng(seed).uniform(-2.0, 2.0, losses.shape)
  total, w = _imtl_l(jnp.asarray(losses), jnp.asarray(s, jnp.float32))
  l64 = losses.astype(np.float64)
  np.testing.assert_allclose(total, np.sum(np.exp(s) * l64 - s), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(w, np.exp(s), rtol=1e-5)


@jax.jit
def _minimise_log_scales(losses):
  # d/ds (e^s L - s) = e^s L - 1, curvature 1 at the optimum: a step of 0.5
  # halves the error each step near it and never overshoots from below.
  grad = jax.grad(lambda s: imtl_l_loss(losses, s)[0])
  return jax.lax.fori_loop(0, 300, lambda _, s: s - 0.5 * grad(s),
                           jnp.zeros_like(losses))


@SETTINGS
@given(losses=_inputs.loss_vectors(max_tasks=4, low=0.05, high=20.0))
def test_imtl_l_optimum_scales_every_loss_to_one(losses):
  s = _minimise_log_scales(jnp.asarray(losses))
  np.testing.assert_allclose(s, -np.log(losses), atol=1e-4)
  # At the optimum the weights e^s are UW-O's 1/L.
  _, w = _imtl_l(jnp.asarray(losses), s)
  np.testing.assert_allclose(w, uw_o_weights(losses), rtol=1e-3)


def test_imtl_l_weights_are_the_gradient_and_carry_none():
  losses = jnp.asarray(_inputs.positive_losses(0, 3))
  s = jnp.asarray([-0.7, 0.2, 1.1])
  grad = jax.grad(lambda l: imtl_l_loss(l, s)[0])(losses)
  np.testing.assert_allclose(grad, imtl_l_loss(losses, s)[1], rtol=1e-6)
  _asserts.assert_no_gradient(lambda l: imtl_l_loss(l, s)[1], losses)
  _asserts.assert_no_gradient(lambda v: imtl_l_loss(losses, v)[1], s)


@pytest.mark.parametrize("init_log_scale", [0.0, 0.3])
def test_imtl_l_factory_init(init_log_scale):
  params, state = weighting.imtl_l(init_log_scale=init_log_scale).init(3)
  assert set(params) == {"log_scales"}
  np.testing.assert_array_equal(params["log_scales"],
                                np.full(3, init_log_scale, np.float32))
  assert isinstance(state, weighting.StatelessState)
  assert state.tasks.shape == (3,)  # records K for apply's check
