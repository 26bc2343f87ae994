"""IMTL (LibMTL's IMTL-L + IMTL-G): IMTL-G at s = 0, LibMTL's linear system on
the scaled gradients, the head weights and the gradient of the loss scales."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative

from mtl_jax import aggregation
from mtl_jax.aggregation import imtl_g_weights, imtl_weights
from mtl_jax.aggregation._base import apply_with_grads

_weights = jax.jit(imtl_weights)


def _libmtl_imtl_g(jac):
  """IMTL-G as the paper's linear system (LibMTL's form), full-rank J:
  alpha_{2:} = g_1 U^T (D U^T)^{-1}, D = g_1 - g_{2:}, U = u_1 - u_{2:},
  alpha_1 = 1 - sum(alpha_{2:}); returns d = J^T alpha."""
  unit = jac / np.linalg.norm(jac, axis=1, keepdims=True)
  d_mat = jac[:1] - jac[1:]
  u_mat = unit[:1] - unit[1:]
  rest = jac[0] @ u_mat.T @ np.linalg.inv(d_mat @ u_mat.T)
  alpha = np.concatenate([[1.0 - rest.sum()], rest])
  return alpha @ jac


@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_zero_scales_give_imtl_g(index):
  jac = _inputs.all_jacobians()[index]
  gramian = jnp.asarray(jac @ jac.T)
  k = jac.shape[0]
  w = _weights(gramian, jnp.zeros(k))
  _asserts.assert_finite_shape(w, (k,))
  # Same computation (e^0 = 1 exactly); jit vs eager float32 rounding only.
  expected = np.asarray(imtl_g_weights(gramian))
  np.testing.assert_allclose(w, expected, rtol=0.0,
                             atol=1e-5 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_libmtl_linear_system_on_the_scaled_gradients(seed, k):
  # LibMTL: IMTL-G's alpha on the gradients of e^s L - s, i.e. on e^s g_k;
  # the shared update is sum_k alpha_k e^{s_k} g_k = J^T w.
  jac = _inputs.jacobian(seed, k, k + 3, k, dtype=np.float64)
  s = np.random.default_rng(seed).normal(size=k)
  expected = _libmtl_imtl_g(np.exp(s)[:, None] * jac)
  with jax.enable_x64():
    w = np.asarray(_weights(jnp.asarray(jac @ jac.T), jnp.asarray(s)))
  np.testing.assert_allclose(w @ jac, expected, rtol=1e-8,
                             atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("seed", range(4))
def test_direction_parallel_to_imtl_g_with_equal_projections(seed):
  jac = _inputs.jacobian(seed, 4, 7, 4, dtype=np.float64)
  s = 2.0 * np.random.default_rng(seed + 10).normal(size=4)
  with jax.enable_x64():
    g = jnp.asarray(jac @ jac.T)
    d = np.asarray(_weights(g, jnp.asarray(s))) @ jac
    d_g = np.asarray(imtl_g_weights(g)) @ jac
  cosine = d @ d_g / (np.linalg.norm(d) * np.linalg.norm(d_g))
  np.testing.assert_allclose(cosine, 1.0, rtol=1e-10)
  projections = jac @ d / np.linalg.norm(jac, axis=1)
  np.testing.assert_allclose(projections, projections[0], rtol=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_head_weights_and_the_gradient_of_the_scales(seed):
  rng = np.random.default_rng(seed)
  jac = _inputs.jacobian(seed, 3, 5, 3)
  gramian = jnp.asarray(jac @ jac.T)
  losses = jnp.asarray(rng.uniform(0.1, 3.0, size=3), jnp.float32)
  s = jnp.asarray(rng.normal(size=3), jnp.float32)
  method = aggregation.get("imtl")
  params, state = method.init(3)
  np.testing.assert_array_equal(params["log_scales"], 0.0)
  params = {"log_scales": s}
  out, grads = jax.jit(lambda p, g, l: apply_with_grads(method, p, state, g, l)
                       )(params, gramian, losses)
  e = np.exp(np.asarray(s, np.float64))
  l64 = np.asarray(losses, np.float64)
  np.testing.assert_allclose(out.head_weights, e, rtol=1e-6)
  np.testing.assert_allclose(out.aux_loss, np.sum(e * l64 - np.asarray(s)),
                             rtol=1e-6)
  # LibMTL's K backward passes of e^{s_k} L_k - s_k leave e^s L - 1 in s.
  np.testing.assert_allclose(grads["log_scales"], e * l64 - 1.0, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(out.weights, imtl_weights(gramian, s), rtol=1e-5,
                             atol=1e-7)
  assert isinstance(out.state, aggregation.StatelessState)
  assert out.state.tasks.shape == (3,)


def test_weights_carry_no_gradient():
  jac = _inputs.jacobian(6, 3, 4, 3)
  gramian = jnp.asarray(jac @ jac.T)
  s = jnp.array([0.3, -0.2, 0.5])
  _asserts.assert_no_gradient(lambda g: imtl_weights(g, s), gramian)
  _asserts.assert_no_gradient(lambda x: imtl_weights(gramian, x), s)
  method = aggregation.get("imtl")
  _, state = method.init(3)
  _asserts.assert_no_gradient(
      lambda x: method.apply({"log_scales": x}, state, gramian,
                             losses=jnp.ones(3)).head_weights, s)


def test_jit_float64_and_no_retrace():
  method = aggregation.get("imtl")
  params, state = method.init(3)
  jac = _inputs.jacobian(1, 3, 6, 3)
  gramian = jnp.asarray(jac @ jac.T)
  apply = jax.jit(lambda p, s, g: method.apply(p, s, g, losses=jnp.ones(3)))
  _asserts.assert_no_retrace(apply, params, state, [gramian] * 3)
  with jax.enable_x64():
    params, state = method.init(3)
    out = method.apply(params, state, jnp.asarray(jac @ jac.T, jnp.float64),
                       losses=jnp.ones(3, jnp.float64))
    assert out.weights.dtype == jnp.float64
    assert out.head_weights.dtype == jnp.float64


def test_errors():
  method = aggregation.get("imtl")
  params, state = method.init(2)
  gramian = jnp.array([[18.0, -22.0], [-22.0, 38.0]])
  with pytest.raises(ValueError, match="imtl needs the task losses"):
    method.apply(params, state, gramian)
  with pytest.raises(ValueError, match=r"losses must have shape \(2,\)"):
    method.apply(params, state, gramian, losses=jnp.ones((2, 1)))
  with pytest.raises(ValueError, match="initialised for 2 tasks"):
    method.apply(params, state, jnp.eye(3), losses=jnp.ones(3))
  with pytest.raises(ValueError, match=r"log_scales must have shape \(2,\)"):
    imtl_weights(gramian, jnp.zeros(3))
  with pytest.raises(ValueError, match="takes no hyperparameter"):
    aggregation.get("imtl", init_log_scale=1.0)
