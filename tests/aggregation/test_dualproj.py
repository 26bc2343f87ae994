"""DualProj: TorchJD's pinned value and properties, float64 reference."""
import contextlib

import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative, slow
from test_qp import normalize_regularize, reference_projection

from mtl_jax.aggregation.dualproj import dualproj, dualproj_weights
from mtl_jax.aggregation.upgrad import upgrad_weights

# One compile per (K, dtype) for the whole module: reg_eps is always passed,
# so that it is traced and the same executable serves 1e-4 and 0.
_weights = jax.jit(dualproj_weights)


def _fn(reg_eps=1e-4):
  return lambda g: _weights(g, reg_eps=reg_eps)


def _with_pref(g, pref, reg_eps=1e-4):
  return _weights(g, pref, reg_eps=reg_eps)


G_BASE = np.array([[18.0, -22.0], [-22.0, 38.0]], np.float32)
J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)
_JACOBIANS = range(len(_inputs.all_jacobians()))


def _reference(jac, pref=None):
  """The exact float64 projection of p (TorchJD's maths)."""
  k = jac.shape[0]
  pref = np.full(k, 1 / k) if pref is None else np.asarray(pref, np.float64)
  jac = np.asarray(jac, np.float64)
  return reference_projection(normalize_regularize(jac @ jac.T), pref)


def _assert_non_conflicting(jac, reg_eps, atol):
  """``J d >= 0`` for ``reg_eps = 0``; with the ridge, ``J d = G w >=
  -reg_eps tr(G) w`` (see tests/aggregation/test_upgrad.py)."""
  jac = np.asarray(jac)
  w = np.asarray(_fn(reg_eps)(jnp.asarray(jac @ jac.T)), np.float64)
  jac = jac.astype(np.float64)
  jd = jac @ (w @ jac)
  slack = reg_eps * np.trace(jac @ jac.T) * w
  assert np.all(jd + slack >= -atol * max(1.0, np.abs(jd).max())), jd
  if reg_eps == 0:
    _asserts.assert_non_conflicting(jac, w @ jac, atol=atol)


def test_torchjd_pinned_values():
  w = _fn()(jnp.asarray(G_BASE))
  np.testing.assert_allclose(w, [0.6109, 0.5000], atol=1e-4, rtol=0)
  np.testing.assert_allclose(_asserts.direction(_fn(), J_BASE),
                             [0.5563, 1.1109, 1.1109], atol=1e-4, rtol=0)


def test_one_violated_constraint_has_gems_closed_form():
  # The mean m = (1, 1, 1) of J_base conflicts with g_1 only, so without the
  # ridge its projection is m - (m . g_1 / |g_1|^2) g_1.
  g1 = J_BASE[0].astype(np.float64)
  m = J_BASE.astype(np.float64).mean(axis=0)
  np.testing.assert_allclose(_asserts.direction(_fn(0.0), J_BASE),
                             m - (m @ g1) / (g1 @ g1) * g1, rtol=1e-5)


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
                            atol=1e-4 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("reg_eps", [1e-4, 0.0])
@pytest.mark.parametrize("make", [_inputs.strongly_stationary,
                                  _inputs.weakly_stationary,
                                  _inputs.non_stationary],
                         ids=["strongly", "weakly", "non"])
def test_non_conflicting_on_stationary_jacobians(make, reg_eps):
  _assert_non_conflicting(make(0), reg_eps, atol=1e-4)


@pytest.mark.parametrize("index", representative(_JACOBIANS))
def test_float64_matches_the_reference(index):
  jac = _inputs.all_jacobians(dtype=np.float64)[index]
  with jax.enable_x64():
    w = np.asarray(_fn()(jnp.asarray(jac @ jac.T)))
  assert w.dtype == np.float64
  np.testing.assert_allclose(w, _reference(jac), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("index", [0, *slow(*_JACOBIANS[1:])])
def test_permutation_invariant(index):
  jac = _inputs.all_jacobians(dtype=np.float64)[index]
  perm = np.random.default_rng(index).permutation(jac.shape[0])
  with jax.enable_x64():
    _asserts.assert_permutation_invariant(_fn(), jac, perm, atol=1e-9,
                                          rtol=1e-7)
  # float32: up to the solver's float32 accuracy on rank-deficient inputs.
  _asserts.assert_permutation_invariant(
      _fn(), jac.astype(np.float32), perm, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("make", [_inputs.non_stationary,
                                  _inputs.weakly_stationary],
                         ids=["non_stationary", "weakly_stationary"])
def test_strongly_stationary(make, seed):
  # No w > 0 has J^T w = 0: DualProj must not return d = 0 (TorchJD's
  # threshold for DualProj).
  _asserts.assert_strongly_stationary(_fn(), make(seed), threshold=3e-3)


def test_pref_vector():
  jac = _inputs.jacobian(4, 4, 6, 3)
  g = jnp.asarray(jac @ jac.T)
  uniform = jnp.full((4,), 0.25, jnp.float32)
  np.testing.assert_allclose(_with_pref(g, uniform), _fn()(g), atol=1e-7)
  pref = jnp.array([0.1, 0.0, 0.5, 0.4])
  w = _with_pref(g, pref)
  np.testing.assert_allclose(_with_pref(g, 3.0 * pref), 3.0 * w, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(w, _reference(jac, pref), rtol=1e-3, atol=1e-5)
  assert np.all(np.asarray(w) >= np.asarray(pref) - 1e-7)
  # UPGrad sums DualProj's projections of the scaled basis vectors p_i e_i.
  parts = sum(_with_pref(g, p * e) for p, e in zip(pref, jnp.eye(4)))
  np.testing.assert_allclose(jax.jit(upgrad_weights)(g, pref), parts,
                             atol=1e-6)
  # Gradients that do not conflict (G >= 0 entrywise): p is already in the
  # dual cone, so w = p. A zero Jacobian gives w = p too.
  aligned = np.abs(jac)
  np.testing.assert_allclose(
      _with_pref(jnp.asarray(aligned @ aligned.T), pref), pref, atol=1e-7)
  np.testing.assert_allclose(_with_pref(jnp.zeros((4, 4)), pref), pref,
                             atol=1e-7)


def test_jit_and_no_jit_agree():
  jac = _inputs.jacobian(3, 4, 6, 2)
  g = jnp.asarray(jac @ jac.T)
  np.testing.assert_allclose(dualproj_weights(g), _fn()(g), atol=1e-7)


def test_factory_matches_function_and_keeps_state():
  # K = 4 throughout, to reuse the executables of the tests above.
  jac = _inputs.jacobian(3, 4, 6, 2)
  g = jnp.asarray(jac @ jac.T)
  pref = (0.1, 0.2, 0.3, 0.4)
  method = dualproj(pref_vector=pref, reg_eps=1e-3)
  params, state = method.init(4)
  out = jax.jit(method.apply)(params, state, g)
  np.testing.assert_allclose(out.weights,
                             _with_pref(g, jnp.array(pref), reg_eps=1e-3),
                             atol=1e-6)
  assert out.weights.dtype == jnp.float32
  assert jax.tree.structure(out.state) == jax.tree.structure(state)
  default = dualproj()
  params, state = default.init(4)
  np.testing.assert_allclose(default.apply(params, state, g).weights,
                             _fn()(g), atol=1e-7)


def test_weights_carry_no_gradient():
  _asserts.assert_no_gradient(dualproj_weights, jnp.asarray(G_BASE))


def test_bad_hyperparameters_raise():
  g = jnp.asarray(G_BASE)
  with pytest.raises(ValueError, match="pref_vector has 3 entries"):
    dualproj(pref_vector=(1.0, 1.0, 1.0)).init(2)
  with pytest.raises(ValueError, match="pref_vector has 3 entries"):
    dualproj_weights(g, jnp.ones(3))
  with pytest.raises(ValueError, match=">= 0"):
    dualproj(pref_vector=(1.0, -1.0))
  with pytest.raises(ValueError, match="norm_eps"):
    dualproj(norm_eps=-1e-4)
  with pytest.raises(ValueError, match="reg_eps"):
    dualproj(reg_eps=-1.0)
  with pytest.raises(ValueError, match="max_iters"):
    dualproj(max_iters=0)
  with pytest.raises(ValueError, match="square"):
    dualproj_weights(jnp.ones((2, 3)))
