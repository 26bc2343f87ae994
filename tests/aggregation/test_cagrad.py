"""CAGrad: TorchJD's pinned values and properties, a scipy reference, LibMTL's
rescale conventions."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from _slow import representative, slow

from mtl_jax.aggregation.cagrad import cagrad, cagrad_weights

# c is traced, so each Gramian shape and dtype compiles once (about 2 s for
# the interior point, K >= 3; K <= 2 has a closed form).
_weights = jax.jit(lambda g, c: cagrad_weights(g, c))

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], np.float32)


def _direction(jac, c):
  jac = jnp.asarray(jac)
  return _asserts.direction(lambda g: _weights(g, c), jac)


def _reference(jac, c, norm_eps=1e-4):
  """TorchJD's CAGrad weights in float64: SLSQP on the simplex from several
  starts, then TorchJD's trace normalisation and zero rule."""
  g = jac.astype(np.float64) @ jac.T.astype(np.float64)
  k = g.shape[0]
  trace = np.trace(g)
  if trace < norm_eps:
    return np.zeros(k)
  g = g / trace
  b = g.sum(axis=1) / k
  phi = c * np.sqrt(max(g.sum(), 0.0)) / k

  def norm(w):
    return np.sqrt(max(w @ g @ w, 0.0))

  def objective(w):
    return b @ w + phi * norm(w)

  def gradient(w):
    s = norm(w)
    return b + (phi * (g @ w) / s if s > 1e-12 else 0.0)

  starts = [np.full(k, 1.0 / k)] + [0.9 * np.eye(k)[i] + 0.1 / k
                                     for i in range(k)]
  results = [scipy.optimize.minimize(
      objective, w0, jac=gradient, method="SLSQP", bounds=[(0.0, 1.0)] * k,
      constraints={"type": "eq", "fun": lambda w: w.sum() - 1.0,
                   "jac": lambda w: np.ones(k)},
      options={"ftol": 1e-15, "maxiter": 1000}) for w0 in starts]
  w = np.clip(min(results, key=lambda r: objective(r.x)).x, 0.0, None)
  w /= w.sum()
  s = norm(w)
  return np.zeros(k) if s < norm_eps else 1.0 / k + phi * w / s


def test_pinned_values():
  # TorchJD tests/unit/aggregation/test_values.py, CAGrad(c=0.5), float32.
  w = _weights(jnp.asarray(J_BASE @ J_BASE.T), 0.5)
  assert w.dtype == jnp.float32
  np.testing.assert_allclose(w, [0.7041, 0.5000], atol=1e-4, rtol=0)
  np.testing.assert_allclose(_direction(J_BASE, 0.5), [0.1835, 1.2041, 1.2041],
                             atol=1e-4, rtol=0)


@pytest.mark.parametrize("rescale, divisor, direction", [
    (0, 1.0, [0.1835, 1.2041, 1.2041]),   # TorchJD (pinned)
    (1, 1.25, [0.1468, 0.9633, 0.9633]),  # LibMTL, Nash-MTL repo (by hand)
    (2, 1.5, [0.1223, 0.8027, 0.8027])])  # 1 + c
def test_factory_and_rescale_conventions(rescale, divisor, direction):
  method = cagrad(0.5, rescale=rescale)
  params, state = method.init(2)
  gram = jnp.asarray(J_BASE @ J_BASE.T)
  out = jax.jit(method.apply)(params, state, gram)
  np.testing.assert_allclose(out.weights, _weights(gram, 0.5) / divisor,
                             rtol=1e-6)
  np.testing.assert_allclose(out.weights @ J_BASE, direction, atol=1e-4,
                             rtol=0)
  assert jax.tree.structure(out.state) == jax.tree.structure(state)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
@pytest.mark.slow
def test_non_conflicting_for_c_at_least_one(index, dtype):
  # TorchJD: CAGrad is non-conflicting (J d >= 0) for c = 1 and c = 2.
  jac = _inputs.all_jacobians(dtype=dtype)[index]
  with jax.enable_x64(dtype == np.float64):
    for c in (1.0, 2.0):
      w = _weights(jnp.asarray(jac @ jac.T), c)
      assert w.dtype == dtype
      _asserts.assert_finite_shape(w, (jac.shape[0],))
      assert np.all(np.asarray(w) >= 0.0)
      _asserts.assert_non_conflicting(jac, np.asarray(w, np.float64) @ jac,
                                      atol=4e-4)


# K in {3, 4, 9} reuses the float64 compilations of the test above.
_REFERENCE_CASES = [
    ("full rank", _inputs.jacobian(10, 3, 5, 3), 0.5),
    ("rank 2", _inputs.jacobian(11, 3, 5, 2), 0.4),
    ("K = 4", _inputs.jacobian(12, 4, 6, 4), 1.0),
    ("rank 5 of 9", _inputs.jacobian(13, 9, 11, 5), 0.5),
    ("full rank 9", _inputs.jacobian(14, 9, 11, 9), 2.0),
    ("stationary", _inputs.strongly_stationary(15, 9, 6), 0.4),
    ("stationary, c = 2", _inputs.strongly_stationary(16, 9, 6), 2.0),
    ("weakly stationary", _inputs.weakly_stationary(17, 9, 6), 0.5),
    ("non-stationary", _inputs.non_stationary(18, 4, 3), 1.0),
    ("tiny", 1e-3 * _inputs.jacobian(19, 3, 4, 3), 0.5),
    ("zero", np.zeros((4, 5), np.float32), 0.5),
]


@pytest.mark.parametrize("name, jac, c", _REFERENCE_CASES,
                         ids=[case[0] for case in _REFERENCE_CASES])
def test_matches_scipy_reference(name, jac, c):
  del name
  jac = jac.astype(np.float64)
  with jax.enable_x64():
    w = np.asarray(_weights(jnp.asarray(jac @ jac.T), c))
  ref = _reference(jac, c)
  scale = max(np.linalg.norm(jac), 1e-30)
  # The direction is unique; the weights are too when G has full rank.
  np.testing.assert_allclose(w @ jac / scale, ref @ jac / scale, atol=1e-5)
  if np.linalg.matrix_rank(jac) == jac.shape[0]:
    np.testing.assert_allclose(w, ref, atol=1e-4)


@pytest.mark.parametrize("k, rank", [(3, 3), (4, 2), *slow((9, 9))])
def test_c_zero_gives_the_mean(k, rank):
  jac = _inputs.jacobian(20 + k, k, 7, rank)
  np.testing.assert_allclose(_weights(jnp.asarray(jac @ jac.T), 0.0),
                             np.full(k, 1.0 / k), rtol=1e-6)


@pytest.mark.parametrize("k", [4, 9])
def test_permutation_equivariant(k):
  jac = _inputs.jacobian(30 + k, k, 11, min(k, 6), dtype=np.float64)
  perm = np.random.default_rng(k).permutation(k)
  with jax.enable_x64():
    _asserts.assert_permutation_invariant(lambda g: _weights(g, 0.5), jac,
                                          perm, atol=1e-7, rtol=1e-6)
    gram = jnp.asarray(jac @ jac.T)
    w = np.asarray(_weights(gram, 0.5))
    w_perm = np.asarray(_weights(gram[perm][:, perm], 0.5))
  np.testing.assert_allclose(w_perm, w[perm], atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("scale", [0.0, 1e-10])
def test_zero_jacobian_gives_zero_finite_weights(k, scale):
  # TorchJD's rule: a trace below norm_eps gives weights 0, never NaN.
  jac = scale * _inputs.jacobian(k, k, 4, 1)
  w = _weights(jnp.asarray(jac @ jac.T), 0.5)
  _asserts.assert_finite_shape(w, (k,))
  np.testing.assert_array_equal(w, 0.0)


def test_zero_gramian_with_norm_eps_zero_is_finite():
  # TorchJD divides 0 by 0 here; the weights are 0 instead.
  w = jax.jit(lambda g: cagrad_weights(g, 0.5, norm_eps=0.0))(jnp.zeros((2, 2)))
  np.testing.assert_array_equal(w, 0.0)


def test_scale_invariant_and_one_task():
  # The trace normalisation makes the weights independent of ||J||.
  jac = _inputs.jacobian(40, 4, 6, 3)
  gram = jnp.asarray(jac @ jac.T)
  np.testing.assert_allclose(_weights(1e4 * gram, 0.5), _weights(gram, 0.5),
                             rtol=1e-4)
  np.testing.assert_allclose(_weights(jnp.array([[4.0]]), 0.5), [1.5])


def test_jit_matches_no_jit():
  # Eagerly on K = 2 (closed form); an eager run of the interior point would
  # compile its loops once more (about 3 s).
  gram = jnp.asarray(J_BASE @ J_BASE.T)
  np.testing.assert_allclose(cagrad_weights(gram, 0.5), _weights(gram, 0.5),
                             rtol=1e-6)


@pytest.mark.slow
def test_vmaps():
  # The interior point under vmap, against the jitted K = 3 float32 function.
  jac = _inputs.jacobian(50, 3, 5, 3)
  gram = jnp.asarray(jac @ jac.T)
  batch = jnp.stack([gram, 2.0 * gram, gram[::-1, ::-1]])
  batched = jax.jit(jax.vmap(lambda g: cagrad_weights(g, 0.5)))(batch)
  jitted = _weights(gram, 0.5)
  np.testing.assert_allclose(batched[0], jitted, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(batched[1], jitted, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(batched[2], jitted[::-1], rtol=1e-4, atol=1e-5)


def test_weights_carry_no_gradient():
  _asserts.assert_no_gradient(lambda g: cagrad_weights(g, 0.5),
                              jnp.asarray(J_BASE @ J_BASE.T))


@pytest.mark.parametrize("kwargs", [
    {"c": -0.1}, {"c": float("nan")}, {"c": 0.5, "norm_eps": -1e-4},
    {"c": 0.5, "rescale": 3}, {"c": 0.5, "rescale": -1},
    {"c": 0.5, "rescale": True}, {"c": 0.5, "max_iters": 0},
    {"c": 0.5, "polish_iters": -1}])
def test_bad_hyperparameters_raise(kwargs):
  with pytest.raises(ValueError):
    cagrad(**kwargs)
