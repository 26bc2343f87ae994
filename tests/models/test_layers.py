"""Max-pool with indices, unpooling and align-corners upsampling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.models import _layers


def _numpy_pool(x):
  """Reference 2x2 max-pool with row-major first-max indices, loops only."""
  b, h, w, c = x.shape
  vals = np.zeros((b, h // 2, w // 2, c), x.dtype)
  idx = np.zeros((b, h // 2, w // 2, c), int)
  for n in range(b):
    for i in range(h // 2):
      for j in range(w // 2):
        for k in range(c):
          win = [x[n, 2 * i, 2 * j, k], x[n, 2 * i, 2 * j + 1, k],
                 x[n, 2 * i + 1, 2 * j, k], x[n, 2 * i + 1, 2 * j + 1, k]]
          idx[n, i, j, k] = int(np.argmax(win))
          vals[n, i, j, k] = max(win)
  return vals, idx


def test_max_pool_with_indices_matches_loops():
  x = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype(np.float32)
  vals, idx = _layers.max_pool_with_indices(jnp.asarray(x))
  ref_vals, ref_idx = _numpy_pool(x)
  np.testing.assert_array_equal(vals, ref_vals)
  np.testing.assert_array_equal(idx, ref_idx)


def test_unpool_puts_values_back_at_the_max_and_zeros_elsewhere():
  x = np.random.default_rng(1).normal(size=(1, 4, 4, 2)).astype(np.float32)
  vals, idx = _layers.max_pool_with_indices(jnp.asarray(x))
  up = np.asarray(_layers.max_unpool(vals, idx))
  is_max = x == np.repeat(np.repeat(np.asarray(vals), 2, 1), 2, 2)
  np.testing.assert_array_equal(up, np.where(is_max, x, 0.0))
  assert (up != 0).sum() == vals.size


def test_pool_gradient_goes_to_first_maximum_on_ties():
  # All-zero windows (common after ReLU): PyTorch routes the gradient to the
  # first position, not a quarter to each.
  x = jnp.zeros((1, 2, 2, 1))
  g = jax.grad(lambda x: _layers.max_pool_with_indices(x)[0].sum())(x)
  np.testing.assert_array_equal(g[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_upsample_bilinear_align_corners_hand_values():
  # n = 2 -> 4: source positions 0, 1/3, 2/3, 1.
  x = jnp.asarray([[0.0, 3.0], [6.0, 9.0]]).reshape(1, 2, 2, 1)
  y = _layers.upsample_bilinear_2x(x)[0, :, :, 0]
  row = np.array([0.0, 1.0, 2.0, 3.0])
  np.testing.assert_allclose(y, row[None, :] + 2 * row[:, None], atol=1e-6)


def test_unit_normalize_has_finite_gradient_at_zero():
  g = jax.grad(lambda v: _layers.unit_normalize(v).sum())(jnp.zeros(3))
  assert np.all(np.isfinite(g))
  np.testing.assert_allclose(
      jnp.linalg.norm(_layers.unit_normalize(jnp.asarray([3.0, 4.0, 0.0]))),
      1.0, rtol=1e-6)


def test_check_divisible_raises_with_shape():
  with pytest.raises(ValueError, match="divisible by 8"):
    _layers.check_divisible(jnp.zeros((1, 12, 16, 3)), 3, "SegNet")
