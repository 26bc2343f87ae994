"""GradVac: the Gramian form against the rule on the explicit gradients."""
import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative

from mtl_jax.aggregation.gradvac import gradvac, gradvac_weights
from mtl_jax.aggregation.pcgrad import pcgrad_weights

# beta and eps as traced arguments: one compile per Gramian shape and dtype.
_jitted = jax.jit(lambda g, p, k, beta, eps: gradvac_weights(
    g, p, k, beta=beta, eps=eps))
_pcgrad = jax.jit(pcgrad_weights)


def _weights(gramian, phi_hat, key, beta=0.5, eps=1e-8):
  return _jitted(gramian, phi_hat, key, beta, eps)


# One factory for the factory tests, so that they share its compiled apply.
_METHOD = gradvac(beta=0.3, seed=3)
_apply = jax.jit(_METHOD.apply)

G_BASE = np.array([[18.0, -22.0], [-22.0, 38.0]], np.float32)
# Three gradients that conflict pairwise (as in test_pcgrad.py).
J_3 = np.array([[2.0, 0.0, 0.0], [-1.0, 2.0, 0.0], [-1.0, -2.0, 1.0]],
               np.float32)


def _orders(key, num_tasks):
  """The documented visiting orders: row i permutes with split(key, K)[i]."""
  keys = jax.random.split(key, num_tasks)
  return [np.asarray(jax.random.permutation(keys[i], num_tasks))
          for i in range(num_tasks)]


def _gradvac_numpy(jacobian, phi_hat, orders, beta=0.5, eps=1e-8,
                   fired=None):
  """Wang et al.'s rule on the explicit gradients, in float64: the ``(K, P)``
  corrected gradients g_i^PC and the new targets. Appends the target of each
  correction made to ``fired`` when given."""
  jacobian = np.asarray(jacobian, np.float64)
  phi_hat = np.array(phi_hat, np.float64)
  rows = []
  for i, order in enumerate(orders):
    g = jacobian[i].copy()
    for j in order:
      if j == i:
        continue
      norm_i, norm_j = np.linalg.norm(g), np.linalg.norm(jacobian[j])
      phi = g @ jacobian[j] / (norm_i * norm_j + eps)
      target = phi_hat[i, j]
      if phi < target:
        if fired is not None:
          fired.append(target)
        sin_phi = np.sqrt(max(1.0 - phi**2, 0.0))
        sin_target = np.sqrt(max(1.0 - target**2, 0.0))
        g = g + (norm_i * (target * sin_phi - phi * sin_target)
                 / (norm_j * sin_target + eps)) * jacobian[j]
      phi_hat[i, j] = (1 - beta) * target + beta * phi
    rows.append(g)
  return np.array(rows), phi_hat


def test_pinned_torchjd_two_tasks_first_call():
  w, phi_hat = _weights(jnp.asarray(G_BASE), jnp.zeros((2, 2)),
                        jax.random.PRNGKey(0))
  np.testing.assert_allclose(w, [2.2222, 1.5789], atol=1e-4)
  cos = -22.0 / np.sqrt(18.0 * 38.0)
  np.testing.assert_allclose(phi_hat, [[0.0, cos / 2], [cos / 2, 0.0]],
                             atol=1e-6)


def test_pinned_three_tasks_two_calls():
  # PRNGKey(0) at both calls: the rows visit [2, 1], [0, 2], [1, 0].
  key = jax.random.PRNGKey(0)
  gramian = jnp.asarray(J_3 @ J_3.T)
  w, phi_hat = _weights(gramian, jnp.zeros((3, 3)), key)
  # First call: PCGrad (by hand in test_pcgrad.py), and beta times the
  # cosines measured before each correction, by hand: row 0 meets g_2 with
  # cos -2/sqrt(24), then g_1 with (G c)_1 = -3, c^T G c = 10/3 for
  # c = (1, 0, 1/3); and likewise for rows 1 and 2.
  np.testing.assert_allclose(w, [2.3, 2.2, 2.0], atol=1e-6)
  np.testing.assert_allclose(phi_hat, 0.5 * np.array([
      [0.0, -3 / np.sqrt(50 / 3), -2 / np.sqrt(24)],
      [-2 / np.sqrt(20), 0.0, -4 / (2 * np.sqrt(6))],
      [-3.2 / (2 * np.sqrt(4.2)), -3 / np.sqrt(30), 0.0]]), atol=1e-6)
  # Second call, from _gradvac_numpy (float64) with w = J^-T d.
  w, phi_hat = _weights(gramian, phi_hat, key)
  np.testing.assert_allclose(w, [1.588692, 1.584064, 1.502244], atol=1e-5)
  np.testing.assert_allclose(phi_hat, [[0.0, -0.487497, -0.306186],
                                       [-0.335410, 0.0, -0.556392],
                                       [-0.509379, -0.410792, 0.0]],
                             atol=1e-5)


@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_direction_matches_explicit_rule(index):
  jac = _inputs.all_jacobians()[index].astype(np.float64)
  k = jac.shape[0]
  full_rank = np.linalg.matrix_rank(jac) == k
  rng = np.random.default_rng(index)
  phi_hat = np.where(np.eye(k) > 0, 0.0, rng.uniform(-0.9, 0.9, (k, k)))
  key = jax.random.PRNGKey(index)
  rows, expected_phi_hat = _gradvac_numpy(jac, phi_hat, _orders(key, k))
  scale = max(1.0, float(np.abs(jac).max()))
  with jax.enable_x64():
    w, new_phi_hat = _weights(jnp.asarray(jac @ jac.T), jnp.asarray(phi_hat),
                              key)
    assert w.dtype == new_phi_hat.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(w) @ jac, rows.sum(axis=0),
                               atol=1e-9 * scale, rtol=1e-9)
    if full_rank:
      np.testing.assert_allclose(new_phi_hat, expected_phi_hat, atol=1e-9)
    else:
      # A corrected gradient can vanish (opposite gradients): its next cosine
      # is then rounding noise over eps, in the Gramian form (sqrt(c^T G c)
      # of a cancellation) more than on the explicit vectors.
      _asserts.assert_finite_shape(new_phi_hat, (k, k))
      assert np.all(np.abs(np.asarray(new_phi_hat)) <= 1.0)


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e5])
def test_collinear_gradients_in_float32(scale):
  # Rank 1: corrected gradients vanish and their cosines are rounding noise.
  # The clipped cosine keeps the targets in [-1, 1] and float32 close to
  # float64 over several calls.
  jac = (scale * _inputs.jacobian(3, 4, 3, 1)).astype(np.float64)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  out = {}
  for x64 in (False, True):
    with jax.enable_x64(x64):
      dtype = jnp.float64 if x64 else jnp.float32
      gramian = jnp.asarray(jac @ jac.T, dtype)
      phi_hat = jnp.zeros((4, 4), dtype)
      for key in keys:
        w, phi_hat = _weights(gramian, phi_hat, key)
        assert np.all(np.abs(np.asarray(phi_hat)) <= 1.0)
      out[x64] = np.asarray(w, np.float64)
  _asserts.assert_finite_shape(out[False], (4,))
  np.testing.assert_allclose(out[False], out[True], atol=1e-2)


def test_first_call_is_pcgrad_in_float32():
  jac = _inputs.jacobian(2, 4, 6, 4)
  gramian = jnp.asarray(jac @ jac.T)
  for seed in range(3):
    key = jax.random.PRNGKey(seed)
    w, _ = _weights(gramian, jnp.zeros((4, 4)), key)
    _asserts.assert_finite_shape(w, (4,))
    np.testing.assert_allclose(w, _pcgrad(gramian, key), rtol=1e-4, atol=1e-4)


def test_recurrence_over_three_calls():
  # The factory (beta = 0.3), fed a new Jacobian at each call, against the
  # explicit rule with the same keys (split from the state's key each call).
  params, state = _METHOD.init(4)
  key, phi_hat, fired = jax.random.PRNGKey(3), np.zeros((4, 4)), []
  for call in range(3):
    jac = _inputs.jacobian(20 + call, 4, 6, 4)
    key, sub = jax.random.split(key)
    rows, phi_hat = _gradvac_numpy(jac, phi_hat, _orders(sub, 4), beta=0.3,
                                   fired=fired)
    out = _apply(params, state, jnp.asarray(jac @ jac.T))
    state = out.state
    np.testing.assert_allclose(np.asarray(out.weights, np.float64) @ jac,
                               rows.sum(axis=0), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(state.phi_hat, phi_hat, atol=2e-6)
    np.testing.assert_array_equal(state.key, key)
  # Corrections towards non-zero targets took place.
  assert sum(abs(target) > 0.05 for target in fired) >= 3


def test_limit_betas():
  jac = _inputs.jacobian(3, 4, 5, 4)
  gramian = jnp.asarray(jac @ jac.T)
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  # beta = 0: the targets stay 0, so every call is PCGrad.
  phi_hat = jnp.zeros((4, 4))
  for key in keys:
    w, phi_hat = _weights(gramian, phi_hat, key, beta=0.0)
    np.testing.assert_array_equal(phi_hat, 0.0)
    np.testing.assert_allclose(w, _pcgrad(gramian, key), rtol=1e-4)
  # beta = 1: the target is the last cosine measured.
  _, phi_hat = _weights(gramian, jnp.zeros((4, 4)), keys[0], beta=1.0)
  _, expected = _gradvac_numpy(jac, np.zeros((4, 4)), _orders(keys[0], 4),
                               beta=1.0)
  np.testing.assert_allclose(phi_hat, expected, atol=1e-5)


def test_reproducible_and_key_dependent():
  gramian = jnp.asarray(J_3 @ J_3.T)
  phi_hat = jnp.zeros((3, 3))
  w0, p0 = _weights(gramian, phi_hat, jax.random.PRNGKey(0))
  w0_again, p0_again = _weights(gramian, phi_hat, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(w0_again, w0)
  np.testing.assert_array_equal(p0_again, p0)
  w1, _ = _weights(gramian, phi_hat, jax.random.PRNGKey(1))
  assert np.abs(np.asarray(w1) - np.asarray(w0)).max() > 0.1


def test_two_tasks_deterministic():
  jac = _inputs.jacobian(1, 2, 5, 2)
  gramian = jnp.asarray(jac @ jac.T)
  phi_hat = jnp.array([[0.0, 0.3], [-0.2, 0.0]])
  outs = [_weights(gramian, phi_hat, jax.random.PRNGKey(s)) for s in range(4)]
  for out in outs[1:]:
    _asserts.assert_trees_close(out, outs[0], atol=0.0)


def test_zero_gramian_and_zero_rows():
  key = jax.random.PRNGKey(0)
  phi_hat = jnp.full((3, 3), 0.5, jnp.float32)
  w, new_phi_hat = _weights(jnp.zeros((3, 3)), phi_hat, key)
  np.testing.assert_array_equal(w, 1.0)
  _asserts.assert_finite_shape(new_phi_hat, (3, 3))
  # Zero rows, with targets above 0 so that the rule wants to add them, and
  # with eps = 0 (no division by 0 either).
  jac = _inputs.jacobian(5, 4, 6, 4)
  jac[[1, 3]] = 0.0
  gramian = jnp.asarray(jac @ jac.T)
  rows, _ = _gradvac_numpy(jac, np.full((4, 4), 0.5), _orders(key, 4))
  for eps in (1e-8, 0.0):
    w, new_phi_hat = _weights(gramian, jnp.full((4, 4), 0.5, jnp.float32),
                              key, eps=eps)
    _asserts.assert_finite_shape(w, (4,))
    _asserts.assert_finite_shape(new_phi_hat, (4, 4))
    np.testing.assert_array_equal(np.asarray(w)[[1, 3]], 1.0)  # never added
    np.testing.assert_allclose(np.asarray(w, np.float64) @ jac,
                               rows.sum(axis=0), atol=1e-4)


def test_jit_matches_no_jit():
  # A plain call, as chex's without_jit variant makes it; float64 under jit
  # is checked against numpy above.
  jac = _inputs.jacobian(4, 3, 6, 3)
  key = jax.random.PRNGKey(2)
  gramian = jnp.asarray(jac @ jac.T)
  phi_hat = jnp.full((3, 3), 0.2, jnp.float32)
  no_jit = gradvac_weights(gramian, phi_hat, key)
  assert no_jit[0].dtype == no_jit[1].dtype == jnp.float32
  _asserts.assert_trees_close(_weights(gramian, phi_hat, key), no_jit,
                              atol=1e-6, rtol=1e-5)


def test_no_gradient():
  jac = _inputs.jacobian(6, 3, 4, 3)
  _asserts.assert_no_gradient(
      lambda g: gradvac_weights(g, jnp.full((3, 3), 0.3, g.dtype),
                                jax.random.PRNGKey(0))[0],
      jnp.asarray(jac @ jac.T))


def test_factory_matches_function_and_keeps_state():
  jac = _inputs.jacobian(8, 4, 5, 4)
  gramian = jnp.asarray(jac @ jac.T)
  method, apply = _METHOD, _apply
  params, state = method.init(4)
  assert params == {}
  np.testing.assert_array_equal(state.phi_hat, np.zeros((4, 4)))
  assert state.phi_hat.dtype == jnp.float32
  np.testing.assert_array_equal(state.key, jax.random.PRNGKey(3))
  key, phi_hat = jax.random.PRNGKey(3), jnp.zeros((4, 4))
  for _ in range(3):
    key, sub = jax.random.split(key)
    w, phi_hat = _weights(gramian, phi_hat, sub, beta=0.3)
    out = apply(params, state, gramian)
    np.testing.assert_allclose(out.weights, w, rtol=1e-6)
    np.testing.assert_allclose(out.state.phi_hat, phi_hat, atol=1e-6)
    np.testing.assert_array_equal(out.state.key, key)
    assert jax.tree.structure(out.state) == jax.tree.structure(state)
    for new, old in zip(jax.tree.leaves(out.state), jax.tree.leaves(state)):
      assert (new.shape, new.dtype, new.weak_type) == (
          old.shape, old.dtype, old.weak_type)
    state = out.state
  _, state = method.init(4, key=jax.random.PRNGKey(9))
  np.testing.assert_array_equal(state.key, jax.random.PRNGKey(9))
  _asserts.assert_no_retrace(method.apply, params, state, [gramian] * 3)
  with pytest.raises(ValueError, match="initialised for 4 tasks"):
    method.apply(params, state, gramian[:3, :3])


def test_state_dtype_is_kept_for_another_gramian_dtype():
  # Under x64 the state is float64; a float32 Gramian gives float32 weights
  # and leaves the state in float64 (no retrace from step to step).
  with jax.enable_x64():
    params, state = _METHOD.init(3)
    assert state.phi_hat.dtype == jnp.float64
    out = _apply(params, state, jnp.asarray(J_3 @ J_3.T, jnp.float32))
    assert out.weights.dtype == jnp.float32
    assert out.state.phi_hat.dtype == jnp.float64


@pytest.mark.parametrize("kwargs", [{"beta": -0.1}, {"beta": 1.5},
                                    {"beta": float("nan")}, {"eps": -1e-8}])
def test_bad_hyperparameters_raise(kwargs):
  name = next(iter(kwargs))
  with pytest.raises(ValueError, match=name):
    gradvac(**kwargs)


def test_bad_phi_hat_shape_raises():
  with pytest.raises(ValueError, match="phi_hat"):
    gradvac_weights(jnp.eye(3), jnp.zeros((2, 2)), jax.random.PRNGKey(0))
