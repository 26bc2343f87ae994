"""Task losses: hand-computed values, ignored pixels and masks, dataset vectors."""
import functools
import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses

ATOL = 1e-6


def test_segmentation_cross_entropy_hand_values():
  logits = jnp.asarray([[[0.0, math.log(3.0)], [0.0, 0.0], [50.0, -50.0]]])
  labels = jnp.asarray([[1, 0, -1]])
  expected = (math.log(4 / 3) + math.log(2)) / 2  # third pixel ignored
  np.testing.assert_allclose(
      losses.segmentation_cross_entropy(logits, labels), expected, atol=ATOL)


def test_segmentation_cross_entropy_custom_ignore_and_all_ignored():
  logits = jnp.asarray([[0.0, 0.0], [9.0, -9.0]])
  np.testing.assert_allclose(losses.segmentation_cross_entropy(
      logits, jnp.asarray([0, 255]), ignore_index=255), math.log(2), atol=ATOL)
  loss, grad = jax.value_and_grad(losses.segmentation_cross_entropy)(
      logits, jnp.asarray([-1, -1]))
  assert loss == 0.0 and np.all(grad == 0.0)


IGNORED = np.array([[True, False, True, False, False, True]])


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, (1, 6, 4),
                             elements=st.floats(-30, 30, width=32)))
def test_segmentation_values_at_ignored_pixels_do_not_matter(junk):
  labels = jnp.asarray(np.where(IGNORED, -1, [[0, 1, 2, 3, 1, 0]]))
  base = np.zeros((1, 6, 4), np.float32)
  base[0, :, 0] = np.arange(6)
  mixed = np.where(IGNORED[..., None], junk, base)
  np.testing.assert_allclose(
      _seg_loss(jnp.asarray(mixed), labels),
      _seg_loss(jnp.asarray(base), labels), atol=ATOL)


_seg_loss = jax.jit(losses.segmentation_cross_entropy)
_l1 = jax.jit(losses.masked_l1)
_normal = jax.jit(losses.normal_cosine_loss)


def test_masked_l1_hand_values():
  pred = jnp.asarray([1.0, 2.0, 3.0, 4.0])
  target = jnp.asarray([0.0, 1.0, 5.0, 4.0])  # 0 = missing
  np.testing.assert_allclose(losses.masked_l1(pred, target), (1 + 2 + 0) / 3,
                             atol=ATOL)
  mask = jnp.asarray([True, True, False, False])
  np.testing.assert_allclose(losses.masked_l1(pred, target, mask), (1 + 1) / 2,
                             atol=ATOL)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, (2, 3, 1),
                             elements=st.floats(-1e3, 1e3, width=32)))
def test_depth_values_at_missing_pixels_do_not_matter(junk):
  target = np.array([[[0.0], [2.0], [3.0]], [[1.0], [0.0], [0.5]]], np.float32)
  pred = np.full_like(target, 1.5)
  missing = target == 0
  np.testing.assert_allclose(
      _l1(jnp.asarray(np.where(missing, junk, pred)), jnp.asarray(target)),
      _l1(jnp.asarray(pred), jnp.asarray(target)), atol=1e-5)


def test_normal_cosine_loss_hand_values():
  pred = jnp.asarray([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [0.6, 0.8, 0]])
  target = jnp.asarray([[2.0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0]])
  # 1 - cos: 0, 1, 2; the last pixel (zero target) is invalid.
  np.testing.assert_allclose(losses.normal_cosine_loss(pred, target), 1.0,
                             atol=ATOL)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, (5, 3),
                             elements=st.floats(-10, 10, width=32)))
def test_normal_values_at_invalid_pixels_do_not_matter(junk):
  target = np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]],
                    np.float32)
  pred = np.tile(np.array([[0.0, 0.6, 0.8]], np.float32), (5, 1))
  invalid = ~target.any(-1, keepdims=True)
  loss = _normal(jnp.asarray(np.where(invalid, junk, pred)),
                 jnp.asarray(target))
  np.testing.assert_allclose(loss, _normal(jnp.asarray(pred),
                                           jnp.asarray(target)), atol=ATOL)
  np.testing.assert_allclose(loss, 1 - (0.8 + 0 + 0.6) / 3, atol=ATOL)


def test_normal_loss_gradient_is_finite_at_zero_prediction():
  g = jax.grad(losses.normal_cosine_loss)(jnp.zeros((2, 3)),
                                          jnp.asarray([[0, 0, 1.0]] * 2))
  assert np.all(np.isfinite(g))


def test_binary_cross_entropy_per_attribute():
  logits = jnp.asarray([[0.0, 2.0], [0.0, -2.0]])
  labels = jnp.asarray([[True, True], [False, True]])
  expected = [math.log(2),
              (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 2]
  out = losses.binary_cross_entropy_with_logits(logits, labels)
  assert out.shape == (2,) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, atol=ATOL)


def test_softmax_cross_entropy_and_mse():
  logits = jnp.asarray([[0.0, 0.0, 0.0], [0.0, math.log(2.0), 0.0]])
  np.testing.assert_allclose(
      losses.softmax_cross_entropy(logits, jnp.asarray([2, 1])),
      (math.log(3) + math.log(2)) / 2, atol=ATOL)
  np.testing.assert_allclose(
      losses.mse(jnp.asarray([1.0, 2.0]), jnp.asarray([0.0, 4.0])), 2.5,
      atol=ATOL)


def test_bf16_inputs_give_float32_losses():
  x = jnp.ones((2, 3), jnp.bfloat16)
  assert losses.mse(x, 2 * x).dtype == jnp.float32
  assert losses.normal_cosine_loss(x, x).dtype == jnp.float32
  assert losses.segmentation_cross_entropy(
      x, jnp.asarray([0, 1])).dtype == jnp.float32


# ---------------------------------------------------------- dataset vectors


def _dense_batch(rng, b=2, h=4, w=4, classes=3):
  seg = rng.integers(-1, classes, (b, h, w)).astype(np.int32)
  depth = rng.uniform(0.5, 2.0, (b, h, w, 1)).astype(np.float32)
  depth[0, 0, 0] = 0.0
  normal = rng.normal(size=(b, h, w, 3)).astype(np.float32)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  normal[1, 1, 1] = 0.0
  return {"image": np.zeros((b, h, w, 3), np.float32), "segmentation": seg,
          "depth": depth, "normal": normal}


def _dense_outputs(rng, b=2, h=4, w=4, classes=3):
  normal = rng.normal(size=(b, h, w, 3)).astype(np.float32)
  return {"segmentation": rng.normal(size=(b, h, w, classes)).astype(
      np.float32),
          "depth": rng.uniform(0, 2, (b, h, w, 1)).astype(np.float32),
          "normal": normal / np.linalg.norm(normal, axis=-1, keepdims=True)}


def test_nyuv2_and_cityscapes_losses_order():
  rng = np.random.default_rng(0)
  batch, out = _dense_batch(rng), _dense_outputs(rng)
  seg = losses.segmentation_cross_entropy(out["segmentation"],
                                          batch["segmentation"])
  depth = losses.masked_l1(out["depth"], batch["depth"])
  normal = losses.normal_cosine_loss(out["normal"], batch["normal"])
  nyu = jax.jit(losses.nyuv2_losses)(out, batch)
  assert nyu.shape == (3,) and nyu.dtype == jnp.float32
  np.testing.assert_allclose(nyu, [seg, depth, normal], atol=ATOL)
  assert len(set(np.round(np.asarray(nyu), 6))) == 3  # order is observable
  del batch["normal"], out["normal"]
  np.testing.assert_allclose(losses.cityscapes_losses(out, batch),
                             [seg, depth], atol=ATOL)


def test_digit_scene_losses_use_all_depth_pixels():
  rng = np.random.default_rng(1)
  batch, out = _dense_batch(rng, classes=11), _dense_outputs(rng, classes=11)
  batch["segmentation"] = np.abs(batch["segmentation"])
  batch["count"] = np.asarray([0, 3], np.int32)
  out["count"] = rng.normal(size=(2, 5)).astype(np.float32)
  vec = losses.digit_scene_losses(out, batch)
  assert vec.shape == (4,) and vec.dtype == jnp.float32
  plain_l1 = np.abs(out["depth"] - batch["depth"]).mean()
  np.testing.assert_allclose(vec[1], plain_l1, atol=ATOL)
  np.testing.assert_allclose(
      vec[3], losses.softmax_cross_entropy(out["count"], batch["count"]),
      atol=ATOL)


def test_celeba_losses_one_per_attribute():
  logits = np.zeros((3, 40), np.float32)
  logits[:, 7] = 5.0
  labels = np.zeros((3, 40), np.float32)
  vec = losses.celeba_losses({"attributes": logits}, {"attributes": labels})
  assert vec.shape == (40,)
  np.testing.assert_allclose(vec[0], math.log(2), atol=ATOL)
  np.testing.assert_allclose(vec[7], math.log1p(math.exp(5)), atol=1e-5)


def test_digit_attribute_losses_one_bce_per_task_in_order():
  tasks = losses.DIGIT_ATTRIBUTE_TASKS
  z = np.linspace(-3.0, 3.0, len(tasks)).astype(np.float32)
  outputs = {t: np.asarray([z[k], -z[k]], np.float32) for k, t in enumerate(tasks)}
  batch = {t: np.asarray([1, 0], np.int32) for t in tasks}
  vec = jax.jit(losses.digit_attribute_losses)(outputs, batch)
  assert vec.shape == (len(tasks),) and vec.dtype == jnp.float32
  # y = 1 at logit z and y = 0 at logit -z both cost log(1 + exp(-z)).
  np.testing.assert_allclose(vec, np.log1p(np.exp(-z)), rtol=1e-5)
  subset = losses.digit_attribute_losses(outputs, batch,
                                         tasks=(tasks[7], tasks[2]))
  np.testing.assert_allclose(subset, vec[np.asarray([7, 2])], rtol=1e-6)
  with pytest.raises(ValueError, match="at least one task"):
    losses.binary_task_losses(outputs, batch, ())


def test_digit_strip_losses_mix_ce_mse_and_bce():
  tasks = ("left_smaller", "centre", "sum")
  logits = np.zeros((2, 10), np.float32)
  logits[0, 3] = 2.0  # class 3 at logit 2, the other nine at 0
  outputs = {"centre": logits, "sum": np.asarray([10.0, 14.0], np.float32),
             "left_smaller": np.asarray([0.0, 0.0], np.float32)}
  batch = {"centre": np.asarray([3, 7], np.int32),
           "sum": np.asarray([13.0, 14.0], np.float32),
           "left_smaller": np.asarray([1, 0], np.int32)}
  vec = jax.jit(functools.partial(losses.digit_attribute_losses, tasks=tasks))(
      outputs, batch)
  # Strip 0: class 3 at logit 2 among nine zeros; strip 1: ten zero logits.
  ce = 0.5 * ((math.log(math.exp(2.0) + 9.0) - 2.0) + math.log(10.0))
  np.testing.assert_allclose(vec, [math.log(2.0), ce, 0.5 * 9.0], rtol=1e-5)
  assert vec.shape == (3,)


def test_synthetic_losses_per_task_mse():
  y = np.zeros((2, 3, 100), np.float32)
  y[:, 1] = 2.0
  y[:, 2] = 10.0
  vec = losses.synthetic_losses({"y": np.zeros_like(y)}, {"y": y})
  np.testing.assert_allclose(vec, [0.0, 4.0, 100.0], atol=ATOL)
