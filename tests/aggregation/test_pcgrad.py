"""PCGrad: the Gramian form against projections of the explicit gradients."""
import importlib
from fractions import Fraction

import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import representative

from mtl_jax.aggregation.pcgrad import pcgrad, pcgrad_weights

_weights = jax.jit(pcgrad_weights)
# The (K, K) coefficients of the projected gradients, g_i^PC = J^T c_i.
# The module, not the factory that mtl_jax.aggregation re-exports as `pcgrad`.
pcgrad_module = importlib.import_module("mtl_jax.aggregation.pcgrad")
_rows = jax.jit(pcgrad_module._projected_rows)  # pylint: disable=W0212

G_BASE = np.array([[18.0, -22.0], [-22.0, 38.0]], np.float32)
# Three gradients that conflict pairwise: the visiting order matters.
J_3 = np.array([[2.0, 0.0, 0.0], [-1.0, 2.0, 0.0], [-1.0, -2.0, 1.0]],
               np.float32)


def _orders(key, num_tasks):
  """The documented visiting orders: row i permutes with split(key, K)[i]."""
  keys = jax.random.split(key, num_tasks)
  return [np.asarray(jax.random.permutation(keys[i], num_tasks))
          for i in range(num_tasks)]


def _pcgrad_numpy(jacobian, orders):
  """Yu et al.'s projections on the explicit gradients, in float64: the
  ``(K, P)`` projected gradients g_i^PC."""
  jacobian = np.asarray(jacobian, np.float64)
  rows = []
  for i, order in enumerate(orders):
    g = jacobian[i].copy()
    for j in order:
      if j == i:
        continue
      dot = g @ jacobian[j]
      if dot < 0:
        g -= dot / (jacobian[j] @ jacobian[j]) * jacobian[j]
    rows.append(g)
  return np.array(rows)


def _pcgrad_fractions(gramian, orders):
  """The G-form rule in exact rational arithmetic (the hand computation)."""
  g = [[Fraction(int(x)) for x in row] for row in gramian]
  k = len(g)
  w = [Fraction(0)] * k
  for i, order in enumerate(orders):
    c = [Fraction(int(i == m)) for m in range(k)]
    for j in order:
      if j == i:
        continue
      dot = sum(g[j][m] * c[m] for m in range(k))
      if dot < 0:
        c[j] -= dot / g[j][j]
    w = [a + b for a, b in zip(w, c)]
  return w


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_pinned_torchjd_two_tasks(seed):
  w = _weights(jnp.asarray(G_BASE), jax.random.PRNGKey(seed))
  np.testing.assert_allclose(w, [2.2222, 1.5789], atol=1e-4)


def test_pinned_three_tasks():
  # With PRNGKey(0) the rows visit [0, 2, 1], [0, 1, 2], [1, 0, 2] (skipping
  # i). By hand: c_0 = e_0 + (2/6) e_2 + (3/5) e_1, c_1 = e_1 + (2/4) e_0 +
  # (4/6) e_2, c_2 = e_2 + (3/5) e_1 + (16/20) e_0, so w = [23/10, 11/5, 2].
  key = jax.random.PRNGKey(0)
  orders = _orders(key, 3)
  assert [o.tolist() for o in orders] == [[0, 2, 1], [0, 1, 2], [1, 0, 2]]
  gramian = J_3 @ J_3.T
  assert _pcgrad_fractions(gramian, orders) == [
      Fraction(23, 10), Fraction(11, 5), Fraction(2)]
  np.testing.assert_allclose(_weights(jnp.asarray(gramian), key),
                             [2.3, 2.2, 2.0], atol=1e-6)


@pytest.mark.parametrize("index", representative(range(len(_inputs.all_jacobians()))))
def test_direction_matches_explicit_projections(index):
  jac = _inputs.all_jacobians()[index]
  k = jac.shape[0]
  scale = max(1.0, float(np.abs(jac).max()))
  for seed in (0, 1):
    key = jax.random.PRNGKey(seed)
    expected = _pcgrad_numpy(jac, _orders(key, k)).sum(axis=0)
    w = _weights(jnp.asarray(jac @ jac.T), key)
    _asserts.assert_finite_shape(w, (k,))
    assert np.all(np.asarray(w) >= 1.0 - 1e-5)
    np.testing.assert_allclose(np.asarray(w, np.float64) @ jac, expected,
                               atol=1e-4 * scale, rtol=1e-4)
    with jax.enable_x64():
      jac64 = jac.astype(np.float64)
      w64 = _weights(jnp.asarray(jac64 @ jac64.T), key)
      assert w64.dtype == jnp.float64
      np.testing.assert_allclose(np.asarray(w64) @ jac64, expected,
                                 atol=1e-10 * scale, rtol=1e-10)


@pytest.mark.parametrize("shape", [(2, 5, 2), (9, 11, 9)])
def test_projected_rows(shape):
  jac = _inputs.jacobian(11, *shape).astype(np.float64)
  k = shape[0]
  key = jax.random.PRNGKey(3)
  orders = _orders(key, k)
  with jax.enable_x64():
    rows = np.asarray(_rows(jnp.asarray(jac @ jac.T), key))
  # Each row is g_i^PC = J^T c_i, with c_ii = 1 and only positive multiples
  # of the other gradients added.
  np.testing.assert_allclose(rows @ jac, _pcgrad_numpy(jac, orders),
                             atol=1e-10)
  np.testing.assert_array_equal(np.diagonal(rows), 1.0)
  assert np.all(rows >= 0.0)
  # The last projection of each row leaves g_i^PC not conflicting with the
  # last task it visited (orthogonal to it if it was projected).
  dots = rows @ (jac @ jac.T)  # dots[i, j] = g_i^PC . g_j
  for i, order in enumerate(orders):
    last = [j for j in order if j != i][-1]
    assert dots[i, last] >= -1e-10 * np.abs(dots[i]).max()
    if rows[i, last] > 0:
      np.testing.assert_allclose(dots[i, last], 0.0,
                                 atol=1e-10 * np.abs(dots[i]).max())
  if k == 2:  # one projection per row: no conflict with the other task
    assert np.all(dots >= -1e-10 * np.abs(dots).max())


def test_reproducible_and_key_dependent():
  gramian = jnp.asarray(J_3 @ J_3.T)
  first = _weights(gramian, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(_weights(gramian, jax.random.PRNGKey(0)),
                                first)
  np.testing.assert_allclose(_weights(gramian, jax.random.PRNGKey(1)),
                             [2.55, 2.0, 61 / 30], atol=1e-6)


def test_two_tasks_deterministic():
  for seed in range(3):
    jac = _inputs.jacobian(seed, 2, 5, 2)
    gramian = jnp.asarray(jac @ jac.T)
    outputs = [np.asarray(_weights(gramian, jax.random.PRNGKey(s)))
               for s in range(5)]
    for out in outputs[1:]:
      np.testing.assert_array_equal(out, outputs[0])


def test_zero_gramian_and_zero_rows():
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(_weights(jnp.zeros((3, 3)), key), 1.0)
  jac = _inputs.jacobian(5, 4, 6, 4)
  jac[[1, 3]] = 0.0
  w = _weights(jnp.asarray(jac @ jac.T), key)
  _asserts.assert_finite_shape(w, (4,))
  np.testing.assert_allclose(np.asarray(w, np.float64) @ jac,
                             _pcgrad_numpy(jac, _orders(key, 4)).sum(axis=0),
                             atol=1e-5)


def test_jit_matches_no_jit():
  # A plain call, as chex's without_jit variant makes it; float64 under jit
  # is checked against numpy above.
  jac = _inputs.jacobian(4, 3, 6, 3)
  key = jax.random.PRNGKey(2)
  gramian = jnp.asarray(jac @ jac.T)
  no_jit = pcgrad_weights(gramian, key)
  assert no_jit.dtype == jnp.float32
  np.testing.assert_allclose(_weights(gramian, key), no_jit, rtol=1e-6)


def test_no_gradient():
  jac = _inputs.jacobian(6, 3, 4, 3)
  _asserts.assert_no_gradient(
      lambda g: pcgrad_weights(g, jax.random.PRNGKey(0)),
      jnp.asarray(jac @ jac.T))


def test_factory_matches_function_and_keeps_state():
  jac = _inputs.jacobian(8, 4, 5, 4)
  gramian = jnp.asarray(jac @ jac.T)
  method = pcgrad(seed=3)
  params, state = method.init(4)
  assert params == {}
  np.testing.assert_array_equal(state.key, jax.random.PRNGKey(3))
  apply = jax.jit(method.apply)
  key = jax.random.PRNGKey(3)
  for _ in range(3):
    key, sub = jax.random.split(key)
    out = apply(params, state, gramian)
    np.testing.assert_array_equal(out.weights, _weights(gramian, sub))
    np.testing.assert_array_equal(out.state.key, key)
    assert jax.tree.structure(out.state) == jax.tree.structure(state)
    for new, old in zip(jax.tree.leaves(out.state), jax.tree.leaves(state)):
      assert (new.shape, new.dtype) == (old.shape, old.dtype)
    state = out.state
  # A key given to init is used as is.
  _, state = method.init(4, key=jax.random.PRNGKey(9))
  np.testing.assert_array_equal(state.key, jax.random.PRNGKey(9))
  _asserts.assert_no_retrace(method.apply, params, state, [gramian] * 3)
  with pytest.raises(ValueError, match="initialised for 4 tasks"):
    method.apply(params, state, gramian[:3, :3])


@pytest.mark.parametrize("seed", range(4))
def test_two_tasks_equal_upgrad_with_unit_preferences(seed):
  # TorchJD's check: for two rows PCGrad is UPGrad with pref_vector = ones
  # (without UPGrad's ridge, which only perturbs it by ~reg_eps).
  from mtl_jax.aggregation.upgrad import upgrad_weights
  jac = _inputs.jacobian(seed, 2, 6, 2, dtype=np.float64)
  with jax.enable_x64():
    g = jnp.asarray(jac @ jac.T)
    np.testing.assert_allclose(
        pcgrad_weights(g, jax.random.PRNGKey(seed)),
        upgrad_weights(g, jnp.ones(2), reg_eps=0.0), rtol=1e-8, atol=1e-10)
