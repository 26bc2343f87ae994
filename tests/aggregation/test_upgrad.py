"""UPGrad: TorchJD's pinned value and properties, float64 reference, hparams."""
import contextlib

import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative
from test_qp import normalize_regularize, reference_projection

from mtl_jax.aggregation.upgrad import upgrad, upgrad_weights

# One compile per (K, dtype) for the whole module: reg_eps is always passed,
# so that it is traced and the same executable serves 1e-4 and 0.
_weights = jax.jit(upgrad_weights)


def _fn(reg_eps=1e-4):
  return lambda g: _weights(g, reg_eps=reg_eps)


def _assert_non_conflicting(jac, reg_eps, atol):
  """``J d >= 0`` for ``reg_eps = 0``. With the ridge, each projection only
  satisfies ``(G / tr(G) + reg_eps I) v >= 0``, so ``J d = G w >=
  -reg_eps tr(G) w``: TorchJD's weights have these small conflicts too (its
  test compares norms, ||(J d)_+|| ~ ||J d||, which hides them)."""
  jac = np.asarray(jac)
  w = np.asarray(_fn(reg_eps)(jnp.asarray(jac @ jac.T)), np.float64)
  jac = jac.astype(np.float64)
  jd = jac @ (w @ jac)
  slack = reg_eps * np.trace(jac @ jac.T) * w
  assert np.all(jd + slack >= -atol * max(1.0, np.abs(jd).max())), jd
  if reg_eps == 0:
    _asserts.assert_non_conflicting(jac, w @ jac, atol=atol)

G_BASE = np.array([[18.0, -22.0], [-22.0, 38.0]], np.float32)
J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)
_JACOBIANS = range(len(_inputs.all_jacobians()))


def _reference(jac, pref=None):
  """Sum of the exact float64 projections of p_i e_i (TorchJD's maths)."""
  k = jac.shape[0]
  pref = np.full(k, 1 / k) if pref is None else np.asarray(pref, np.float64)
  jac = np.asarray(jac, np.float64)
  a = normalize_regularize(jac @ jac.T)
  return sum(reference_projection(a, p * e) for p, e in zip(pref, np.eye(k)))


def test_torchjd_pinned_values():
  w = _fn()(jnp.asarray(G_BASE))
  np.testing.assert_allclose(w, [1.1109, 0.7894], atol=1e-4, rtol=0)
  np.testing.assert_allclose(_asserts.direction(_fn(), J_BASE),
                             [0.2929, 1.9004, 1.9004], atol=1e-4, rtol=0)


@pytest.mark.parametrize("scale", _inputs.JACOBIAN_SCALES)
@pytest.mark.parametrize("index", representative(_JACOBIANS))
def test_expected_structure(index, scale):
  jac = scale * _inputs.all_jacobians()[index]
  k = jac.shape[0]
  w = _fn()(jnp.asarray(jac @ jac.T))
  _asserts.assert_finite_shape(w, (k,))
  assert np.all(np.asarray(w) >= 1 / k - 1e-6)  # w >= p


@pytest.mark.parametrize("reg_eps", [1e-4, 0.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", representative(_JACOBIANS))
def test_non_conflicting(index, dtype, reg_eps):
  jac = _inputs.all_jacobians(dtype=dtype)[index]
  with jax.enable_x64() if dtype == np.float64 else contextlib.nullcontext():
    _assert_non_conflicting(jac, reg_eps,
                            atol=4e-4 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("reg_eps", [1e-4, 0.0])
@pytest.mark.parametrize("make", [_inputs.strongly_stationary,
                                  _inputs.weakly_stationary,
                                  _inputs.non_stationary],
                         ids=["strongly", "weakly", "non"])
def test_non_conflicting_on_stationary_jacobians(make, reg_eps):
  _assert_non_conflicting(make(0), reg_eps, atol=4e-4)


@pytest.mark.parametrize("index", representative(_JACOBIANS))
def test_float64_matches_the_reference(index):
  jac = _inputs.all_jacobians(dtype=np.float64)[index]
  with jax.enable_x64():
    w = np.asarray(_fn()(jnp.asarray(jac @ jac.T)))
  assert w.dtype == np.float64
  np.testing.assert_allclose(w, _reference(jac), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("index", representative(_JACOBIANS))
def test_permutation_invariant(index):
  jac = _inputs.all_jacobians(dtype=np.float64)[index]
  perm = np.random.default_rng(index).permutation(jac.shape[0])
  with jax.enable_x64():
    _asserts.assert_permutation_invariant(_fn(), jac, perm, atol=1e-9,
                                          rtol=1e-7)
  # float32: up to the solver's float32 accuracy on rank-deficient inputs.
  _asserts.assert_permutation_invariant(
      _fn(), jac.astype(np.float32), perm, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("index", representative(_JACOBIANS))
def test_linear_under_scaling(index):
  # TorchJD's tolerance: the trace normalisation and the ridge make UPGrad
  # only approximately linear.
  jac = _inputs.all_jacobians()[index]
  _asserts.assert_linear_under_scaling(_fn(), jac,
                                       np.random.default_rng(index),
                                       atol=6e-2, rtol=6e-2)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("make", [_inputs.non_stationary,
                                  _inputs.weakly_stationary],
                         ids=["non_stationary", "weakly_stationary"])
def test_strongly_stationary(make, seed):
  # No w > 0 has J^T w = 0, so some direction improves every task: UPGrad
  # must not return d = 0.
  _asserts.assert_strongly_stationary(_fn(), make(seed), threshold=5e-3)


def test_pref_vector():
  jac = _inputs.jacobian(4, 4, 6, 3)
  g = jnp.asarray(jac @ jac.T)
  with_pref = lambda g, p: _weights(g, p, reg_eps=1e-4)
  uniform = jnp.full((4,), 0.25, jnp.float32)
  np.testing.assert_allclose(with_pref(g, uniform), _fn()(g), atol=1e-7)
  # The sum over tasks: w(p) = sum_i w(p_i e_i), and w(c p) = c w(p).
  pref = jnp.array([0.1, 0.0, 0.5, 0.4])
  w = with_pref(g, pref)
  parts = sum(with_pref(g, p * e) for p, e in zip(pref, jnp.eye(4)))
  np.testing.assert_allclose(w, parts, atol=1e-6)
  np.testing.assert_allclose(with_pref(g, 3.0 * pref), 3.0 * w, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(w, _reference(jac, pref), rtol=1e-3, atol=1e-5)
  assert np.all(np.asarray(w) >= np.asarray(pref) - 1e-7)
  # A zero Jacobian: A = reg_eps I, so the bounds are the solution: w = p.
  np.testing.assert_allclose(with_pref(jnp.zeros((4, 4)), pref), pref,
                             atol=1e-7)


def test_two_tasks_without_ridge_is_pcgrad():
  # With two tasks, projecting each gradient onto the dual cone removes its
  # component along the other when they conflict: PCGrad's sum, up to the
  # preference 1/2 (TorchJD tests UPGrad(ones) == PCGrad for two rows).
  g1, g2 = J_BASE.astype(np.float64)
  pc1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
  pc2 = g2 - (g1 @ g2) / (g1 @ g1) * g1
  d = _asserts.direction(_fn(0.0), J_BASE)
  np.testing.assert_allclose(2 * d, pc1 + pc2, rtol=1e-5)


def test_jit_and_no_jit_agree():
  jac = _inputs.jacobian(3, 4, 6, 2)
  g = jnp.asarray(jac @ jac.T)
  np.testing.assert_allclose(upgrad_weights(g), _fn()(g), atol=1e-7)


def test_factory_matches_function_and_keeps_state():
  # K = 4 throughout, to reuse the executables of the tests above.
  jac = _inputs.jacobian(3, 4, 6, 2)
  g = jnp.asarray(jac @ jac.T)
  pref = (0.1, 0.2, 0.3, 0.4)
  method = upgrad(pref_vector=pref, reg_eps=1e-3)
  params, state = method.init(4)
  out = jax.jit(method.apply)(params, state, g)
  np.testing.assert_allclose(
      out.weights, _weights(g, jnp.array(pref), reg_eps=1e-3), atol=1e-6)
  assert out.weights.dtype == jnp.float32
  assert jax.tree.structure(out.state) == jax.tree.structure(state)
  default = upgrad()
  params, state = default.init(4)
  np.testing.assert_allclose(default.apply(params, state, g).weights,
                             _fn()(g), atol=1e-7)


def test_weights_carry_no_gradient():
  _asserts.assert_no_gradient(upgrad_weights, jnp.asarray(G_BASE))


def test_bad_hyperparameters_raise():
  g = jnp.asarray(G_BASE)
  with pytest.raises(ValueError, match="pref_vector has 3 entries"):
    upgrad(pref_vector=(1.0, 1.0, 1.0)).init(2)
  with pytest.raises(ValueError, match="pref_vector has 3 entries"):
    upgrad_weights(g, jnp.ones(3))
  with pytest.raises(ValueError, match=">= 0"):
    upgrad(pref_vector=(1.0, -1.0))
  with pytest.raises(ValueError, match="norm_eps"):
    upgrad(norm_eps=-1e-4)
  with pytest.raises(ValueError, match="reg_eps"):
    upgrad(reg_eps=-1.0)
  with pytest.raises(ValueError, match="max_iters"):
    upgrad(max_iters=0)
  with pytest.raises(ValueError, match="square"):
    upgrad_weights(jnp.ones((2, 3)))
