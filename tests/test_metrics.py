"""Metrics: hand-made predictions, accumulation in parts, Delta_m by hand."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import metrics

ATOL = 1e-6


def _run(metric, *batches):
  """init, update over the batches, compute."""
  state, update = metric.init(), jax.jit(metric.update)
  for b in batches:
    state = update(state, *b)
  return state, jax.jit(metric.compute)(state)


# ------------------------------------------------------------ segmentation

# Rows: true label, columns: prediction.
CONFUSION = np.array([[2, 1, 0], [0, 3, 1], [1, 0, 2]])


def _pixels_from_confusion(confusion, num_classes, rng):
  labels, preds = [], []
  for i, row in enumerate(confusion):
    for j, n in enumerate(row):
      labels += [i] * n
      preds += [j] * n
  # Ignored pixels with arbitrary predictions.
  labels += [-1] * 5
  preds += list(rng.integers(0, num_classes, 5))
  order = rng.permutation(len(labels))
  labels = np.asarray(labels)[order]
  logits = np.eye(num_classes)[np.asarray(preds)[order]] * 3.0
  return jnp.asarray(logits), jnp.asarray(labels)


def test_confusion_matrix_miou_and_pixel_accuracy():
  rng = np.random.default_rng(0)
  logits, labels = _pixels_from_confusion(CONFUSION, 3, rng)
  state, out = _run(metrics.segmentation_metric(3), (logits, labels))
  np.testing.assert_array_equal(state.confusion, CONFUSION)
  # IoU: 2/(3+3-2), 3/(4+4-3), 2/(3+3-2).
  np.testing.assert_allclose(out["miou"], (0.5 + 0.6 + 0.5) / 3, atol=ATOL)
  np.testing.assert_allclose(out["pixel_acc"], 7 / 10, atol=ATOL)


def test_miou_skips_classes_absent_from_labels_and_predictions():
  rng = np.random.default_rng(1)
  confusion = np.zeros((4, 4), int)
  confusion[:3, :3] = CONFUSION
  logits, labels = _pixels_from_confusion(confusion, 4, rng)
  # The ignored pixels must not predict class 3 for it to be absent.
  logits = jnp.where(labels[:, None] == -1, jnp.eye(4)[0], logits)
  _, out = _run(metrics.segmentation_metric(4), (logits, labels))
  np.testing.assert_allclose(out["miou"], (0.5 + 0.6 + 0.5) / 3, atol=ATOL)


def test_segmentation_two_halves_equal_one_pass_and_merge():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(4, 6, 6, 5)))
  labels = jnp.asarray(rng.integers(-1, 5, (4, 6, 6)))
  m = metrics.segmentation_metric(5)
  one, _ = _run(m, (logits, labels))
  halves, _ = _run(m, (logits[:2], labels[:2]), (logits[2:], labels[2:]))
  np.testing.assert_array_equal(one.confusion, halves.confusion)
  a, _ = _run(m, (logits[:1], labels[:1]))
  b, _ = _run(m, (logits[1:], labels[1:]))
  np.testing.assert_array_equal(metrics.merge(a, b).confusion, one.confusion)
  assert int(one.confusion.sum()) == int((labels != -1).sum())


# -------------------------------------------------------------------- depth


def test_depth_abs_and_rel_error_masked():
  pred = jnp.asarray([[1.0], [2.0], [3.0]])
  target = jnp.asarray([[2.0], [0.0], [4.0]])  # middle pixel missing
  _, out = _run(metrics.depth_metric(), (pred, target))
  np.testing.assert_allclose(out["abs_err"], (1 + 1) / 2, atol=ATOL)
  np.testing.assert_allclose(out["rel_err"], (1 / 2 + 1 / 4) / 2, atol=ATOL)


def test_depth_pools_pixels_across_batches():
  m = metrics.depth_metric()
  b1 = (jnp.asarray([1.0]), jnp.asarray([2.0]))             # 1 pixel, err 1
  b2 = (jnp.asarray([4.0, 4.0, 4.0]), jnp.asarray([4.0] * 3))  # 3, err 0
  _, out = _run(m, b1, b2)
  np.testing.assert_allclose(out["abs_err"], 1 / 4, atol=ATOL)


# ------------------------------------------------------------------ normals


def _tilted(angles_deg):
  """Unit vectors at the given angles from +z."""
  a = np.radians(np.asarray(angles_deg, np.float64))
  return np.stack([np.sin(a), np.zeros_like(a), np.cos(a)], -1).astype(
      np.float32)


def test_normal_angles_hand_values():
  angles = [5.0, 10.0, 20.0, 25.0, 40.0]
  pred = np.concatenate([_tilted(angles), [[1.0, 0.0, 0.0]]])
  target = np.concatenate([np.tile([[0.0, 0.0, 2.0]], (5, 1)),
                           [[0.0, 0.0, 0.0]]]).astype(np.float32)
  _, out = _run(metrics.normal_metric(), (jnp.asarray(pred),
                                          jnp.asarray(target)))
  np.testing.assert_allclose(out["mean"], 20.0, atol=1e-3)
  assert abs(float(out["median"]) - 20.0) <= 0.05
  np.testing.assert_allclose(out["within_11.25"], 2 / 5, atol=ATOL)
  np.testing.assert_allclose(out["within_22.5"], 3 / 5, atol=ATOL)
  np.testing.assert_allclose(out["within_30"], 4 / 5, atol=ATOL)


def test_normal_median_within_bin_width_of_numpy():
  rng = np.random.default_rng(3)
  angles = rng.gamma(2.0, 10.0, size=2001).clip(0, 179.9)
  pred, target = _tilted(angles), _tilted(np.zeros_like(angles))
  m = metrics.normal_metric(bin_width=0.05)
  update = jax.jit(m.update)
  state = m.init()
  for part in np.array_split(np.arange(2001), 3):   # accumulation in parts
    state = update(state, jnp.asarray(pred[part]), jnp.asarray(target[part]))
  out = m.compute(state)
  assert abs(float(out["median"]) - np.median(angles)) <= 0.05
  np.testing.assert_allclose(out["mean"], angles.mean(), rtol=1e-4)
  for t in (11.25, 22.5, 30):
    np.testing.assert_allclose(out[f"within_{t:g}"], (angles < t).mean(),
                               atol=1e-3)
  assert int(state.histogram.sum()) == 2001


def test_normal_metric_halves_equal_one_pass():
  rng = np.random.default_rng(4)
  pred = jnp.asarray(rng.normal(size=(2, 4, 4, 3)))
  target = jnp.asarray(rng.normal(size=(2, 4, 4, 3)))
  m = metrics.normal_metric()
  one, _ = _run(m, (pred, target))
  two, _ = _run(m, (pred[:1], target[:1]), (pred[1:], target[1:]))
  for a, b in zip(one, two):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_histogram_median_interpolates_inside_bin():
  hist = jnp.asarray([1, 0, 3, 0], jnp.int32)   # N = 4, half = 2
  # Crosses in bin 2: 1 before, needs 1 of its 3 -> 2 + 1/3 bins.
  np.testing.assert_allclose(metrics.histogram_median(hist, 0.5),
                             0.5 * (2 + 1 / 3), atol=ATOL)


def test_normal_metric_rejects_bad_bin_width():
  with pytest.raises(ValueError, match="bin_width"):
    metrics.normal_metric(bin_width=0.0)


# --------------------------------------------------------- classification


def test_attribute_error_and_f1_from_counts():
  logits = jnp.asarray([[2.0, 1.0], [3.0, 1.0], [-1.0, 1.0], [-2.0, 1.0]])
  labels = jnp.asarray([[1, 1], [0, 1], [1, 1], [0, 1]])
  state, out = _run(metrics.attribute_metric(2), (logits, labels))
  np.testing.assert_array_equal(state.tp, [1, 4])
  np.testing.assert_array_equal(state.fp, [1, 0])
  np.testing.assert_array_equal(state.fn, [1, 0])
  np.testing.assert_allclose(out["error"], (2 / 4 + 0) / 2, atol=ATOL)
  np.testing.assert_allclose(out["f1"], (2 / 4 + 1) / 2, atol=ATOL)


def test_count_accuracy_in_halves():
  logits = jnp.eye(5)[jnp.asarray([0, 1, 2, 3])]
  labels = jnp.asarray([0, 1, 0, 0])
  m = metrics.accuracy_metric()
  _, out = _run(m, (logits[:3], labels[:3]), (logits[3:], labels[3:]))
  np.testing.assert_allclose(out["accuracy"], 0.5, atol=ATOL)


def test_binary_accuracy_thresholds_logits_at_zero():
  logits = jnp.asarray([2.0, -1.0, 0.5, -3.0, 0.0])
  labels = jnp.asarray([1, 1, 0, 0, 0])  # hit, miss, miss, hit, hit (0 -> "no")
  m = metrics.binary_accuracy_metric()
  state, out = _run(m, (logits[:2], labels[:2]), (logits[2:], labels[2:]))
  assert int(state.correct) == 3 and int(state.count) == 5
  np.testing.assert_allclose(out["accuracy"], 0.6, atol=ATOL)


def test_digit_attribute_metrics_per_task_and_mean():
  tasks = ("a", "b")
  outputs = {"a": jnp.asarray([1.0, 1.0, -1.0, -1.0]),
             "b": jnp.asarray([1.0, -1.0, -1.0, -1.0])}
  batch = {"a": jnp.asarray([1, 1, 0, 0]), "b": jnp.asarray([0, 0, 0, 0]),
           "image": jnp.zeros((4, 8, 24, 1))}
  m = metrics.digit_attribute_metrics(tasks)
  out = m.compute(jax.jit(m.update)(m.init(), outputs, batch))
  np.testing.assert_allclose(out["a/accuracy"], 1.0, atol=ATOL)
  np.testing.assert_allclose(out["b/accuracy"], 0.75, atol=ATOL)
  np.testing.assert_allclose(out["mean/accuracy"], 0.875, atol=ATOL)
  directions = metrics.digit_attribute_higher_is_better(tasks)
  assert directions == {"a/accuracy": True, "b/accuracy": True}  # no "mean/"
  assert set(directions) < set(out)


def test_regression_error_mae_and_rmse_in_halves():
  m = metrics.regression_error_metric()
  pred, target = jnp.asarray([1.0, 5.0, 2.0, 0.0]), jnp.asarray([2.0, 2.0, 2.0, 4.0])
  _, out = _run(m, (pred[:1], target[:1]), (pred[1:], target[1:]))
  np.testing.assert_allclose(out["mae"], (1 + 3 + 0 + 4) / 4, atol=ATOL)
  np.testing.assert_allclose(out["rmse"], np.sqrt((1 + 9 + 0 + 16) / 4), atol=ATOL)


def test_digit_strip_metrics_mix_kinds():
  tasks = ("centre", "sum", "left_smaller")
  logits = (-jnp.ones((4, 10))).at[jnp.arange(4), jnp.asarray([1, 2, 3, 3])].set(1.0)
  outputs = {"centre": logits, "sum": jnp.asarray([10.0, 12.0, 13.0, 13.0]),
             "left_smaller": jnp.asarray([1.0, -1.0, -1.0, -1.0])}
  batch = {"centre": jnp.asarray([1, 2, 3, 4]), "sum": jnp.asarray([10.0, 10.0, 13.0, 15.0]),
           "left_smaller": jnp.asarray([1, 1, 0, 0])}
  m = metrics.digit_attribute_metrics(tasks)
  out = m.compute(jax.jit(m.update)(m.init(), outputs, batch))
  np.testing.assert_allclose(out["centre/accuracy"], 0.75, atol=ATOL)
  np.testing.assert_allclose(out["sum/mae"], 1.0, atol=ATOL)
  np.testing.assert_allclose(out["sum/rmse"], np.sqrt(2.0), atol=ATOL)
  np.testing.assert_allclose(out["mean/accuracy"], 0.75, atol=ATOL)  # (0.75 + 0.75) / 2
  assert metrics.digit_attribute_higher_is_better(tasks) == {
      "centre/accuracy": True, "sum/mae": False, "left_smaller/accuracy": True}


def test_dataset_bundle_jits_and_names_match_baselines():
  rng = np.random.default_rng(5)
  outputs = {"segmentation": jnp.asarray(rng.normal(size=(2, 4, 4, 13))),
             "depth": jnp.asarray(rng.uniform(size=(2, 4, 4, 1))),
             "normal": jnp.asarray(rng.normal(size=(2, 4, 4, 3)))}
  batch = {"segmentation": jnp.asarray(rng.integers(-1, 13, (2, 4, 4))),
           "depth": jnp.asarray(rng.uniform(size=(2, 4, 4, 1))),
           "normal": jnp.asarray(rng.normal(size=(2, 4, 4, 3))),
           "image": jnp.zeros((2, 4, 4, 3))}
  m = metrics.nyuv2_metrics()
  state = jax.jit(m.update)(m.init(), outputs, batch)
  out = m.compute(state)
  assert set(out) == set(metrics.NYUV2_STL_BASELINES)
  assert set(metrics.CITYSCAPES_STL_BASELINES) <= set(out)
  assert set(metrics.NYUV2_HIGHER_IS_BETTER) == set(out)
  direct = metrics.depth_metric()
  _, d = _run(direct, (outputs["depth"], batch["depth"]))
  np.testing.assert_allclose(out["depth/abs_err"], d["abs_err"], atol=ATOL)


def test_state_psum_over_devices_equals_one_pass():
  """The sum-only state merges across devices with psum."""
  rng = np.random.default_rng(6)
  logits = jnp.asarray(rng.normal(size=(4, 3, 3, 4)))
  labels = jnp.asarray(rng.integers(-1, 4, (4, 3, 3)))
  m = metrics.segmentation_metric(4)

  @functools.partial(jax.vmap, axis_name="devices")
  def per_device(l, y):
    return jax.lax.psum(m.update(m.init(), l[None], y[None]), "devices")

  summed = per_device(logits, labels)
  one, _ = _run(m, (logits, labels))
  np.testing.assert_array_equal(summed.confusion[0], one.confusion)


# ------------------------------------------------------------------ Delta_m


def test_published_baselines():
  b = metrics.NYUV2_STL_BASELINES
  published = [38.30, 63.76, 0.6754, 0.2780, 25.01, 19.21, 30.14, 57.20,
               69.15]
  in_percent = {"segmentation/miou", "segmentation/pixel_acc",
                "normal/within_11.25", "normal/within_22.5",
                "normal/within_30"}
  np.testing.assert_allclose(
      [100 * v if k in in_percent else v for k, v in b.items()], published)
  assert metrics.CITYSCAPES_STL_BASELINES == {
      "segmentation/miou": 0.7401, "segmentation/pixel_acc": 0.9316,
      "depth/abs_err": 0.0125, "depth/rel_err": 27.77}


ROW = {  # a made-up NYUv2 result
    "segmentation/miou": 0.4000, "segmentation/pixel_acc": 0.6500,
    "depth/abs_err": 0.6000, "depth/rel_err": 0.2500,
    "normal/mean": 24.00, "normal/median": 18.00,
    "normal/within_11.25": 0.3200, "normal/within_22.5": 0.5900,
    "normal/within_30": 0.7000,
}
# (-1)^l (M - B) / B, written out by hand: higher-is-better terms negated.
TERMS = {
    "segmentation": [-(0.4000 - 0.3830) / 0.3830,
                     -(0.6500 - 0.6376) / 0.6376],
    "depth": [(0.6000 - 0.6754) / 0.6754, (0.2500 - 0.2780) / 0.2780],
    "normal": [(24.00 - 25.01) / 25.01, (18.00 - 19.21) / 19.21,
               -(0.3200 - 0.3014) / 0.3014, -(0.5900 - 0.5720) / 0.5720,
               -(0.7000 - 0.6915) / 0.6915],
}


def test_delta_m_average_over_metrics():
  all_terms = [t for ts in TERMS.values() for t in ts]
  expected = 100 * sum(all_terms) / 9
  got = metrics.delta_m(ROW, metrics.NYUV2_STL_BASELINES,
                        metrics.NYUV2_HIGHER_IS_BETTER, mode="metric")
  np.testing.assert_allclose(got, expected, rtol=1e-9)
  assert got < 0  # this row beats single-task learning everywhere


def test_delta_m_average_within_tasks_then_over_tasks():
  expected = 100 * np.mean([np.mean(ts) for ts in TERMS.values()])
  got = metrics.delta_m(ROW, metrics.NYUV2_STL_BASELINES,
                        metrics.NYUV2_HIGHER_IS_BETTER, mode="task")
  np.testing.assert_allclose(got, expected, rtol=1e-9)
  flat = metrics.delta_m(ROW, metrics.NYUV2_STL_BASELINES,
                         metrics.NYUV2_HIGHER_IS_BETTER, mode="metric")
  assert abs(got - flat) > 0.1  # the two conventions really differ here
  # An explicit mapping gives the same grouping as the "task/" prefixes.
  mapping = {k: k.split("/")[0] for k in ROW}
  assert metrics.delta_m(ROW, metrics.NYUV2_STL_BASELINES,
                         metrics.NYUV2_HIGHER_IS_BETTER, mode="task",
                         task_of_metric=mapping) == got
  one_task = metrics.delta_m(ROW, metrics.NYUV2_STL_BASELINES,
                             metrics.NYUV2_HIGHER_IS_BETTER, mode="task",
                             task_of_metric=lambda k: "all")
  np.testing.assert_allclose(one_task, flat, rtol=1e-9)


def test_delta_m_of_baseline_is_zero_and_sign_follows_direction():
  b, hib = metrics.CITYSCAPES_STL_BASELINES, metrics.CITYSCAPES_HIGHER_IS_BETTER
  assert metrics.delta_m(b, b, hib) == 0.0
  better_miou = {**b, "segmentation/miou": b["segmentation/miou"] * 1.04}
  np.testing.assert_allclose(metrics.delta_m(better_miou, b, hib), -1.0,
                             rtol=1e-9)   # -4% on one of four metrics
  worse_depth = {**b, "depth/abs_err": b["depth/abs_err"] * 1.04}
  np.testing.assert_allclose(metrics.delta_m(worse_depth, b, hib), 1.0,
                             rtol=1e-9)


def test_delta_m_errors():
  b, hib = metrics.CITYSCAPES_STL_BASELINES, metrics.CITYSCAPES_HIGHER_IS_BETTER
  with pytest.raises(ValueError, match="mode"):
    metrics.delta_m(b, b, hib, mode="tasks")
  with pytest.raises(ValueError, match="depth/rel_err"):
    metrics.delta_m({k: v for k, v in b.items() if k != "depth/rel_err"},
                    b, hib)
