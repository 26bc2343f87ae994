"""Evaluation metrics that accumulate on device, and Delta_m.

Every metric is a :class:`Metric`, a triple of pure functions in the style of
``optax.GradientTransformation``:

* ``init() -> state``: a pytree of zero-initialised *sums* (counts, error
  sums, a confusion matrix, a histogram);
* ``update(state, pred, target) -> state``: adds one batch, jit-able;
* ``compute(state) -> {name: scalar}``: the final values.

Because the state only holds sums, batches and devices merge by addition:
``merge(a, b)`` for two states, ``jax.lax.psum(state, axis_name)`` across
devices. Counts are int32 (exact up to 2**31 pixels); error sums are float32.

Pixel metrics are pooled over all valid pixels of the dataset. LibMTL and
MTAN instead average per-batch means weighted by batch size (and MTAN's mIoU
is a per-batch mean); pooling is the exact dataset value and merges across
devices, but can differ from those codes in the last digits.

Units: mIoU, pixel accuracy, the within-angle shares and CelebA error / F1
are fractions in [0, 1]; angles are in degrees. The published NYUv2
baselines below are stored in these units (38.30% -> 0.3830), as the
Nash-MTL code does; Delta_m does not depend on a common scale of M_i and B_i.

Delta_m (lower is better, negative beats single-task learning):

.. math::
  \\Delta_m = \\frac{100}{N} \\sum_{i=1}^N (-1)^{l_i} \\frac{M_i - B_i}{B_i}

where :math:`M_i` is the multi-task value of metric i, :math:`B_i` its
single-task baseline and :math:`l_i = 1` when higher is better.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

State = Any


class Metric(NamedTuple):
  """An accumulating metric as pure functions (init, update, compute)."""
  init: Callable[[], State]
  update: Callable[..., State]
  compute: Callable[[State], dict[str, jax.Array]]


def merge(a: State, b: State) -> State:
  """Merges two metric states (of disjoint data) by summation."""
  return jax.tree.map(jnp.add, a, b)


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den`` as float32, NaN when ``den == 0``."""
  num = jnp.asarray(num, jnp.float32)
  den = jnp.asarray(den, jnp.float32)
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)


# --------------------------------------------------------------------------
# Segmentation: confusion matrix -> mIoU, pixel accuracy.


class ConfusionState(NamedTuple):
  confusion: jax.Array  # (C, C) int32; rows true label, columns prediction


def segmentation_metric(num_classes: int, ignore_index: int = -1) -> Metric:
  """mIoU and pixel accuracy from a confusion matrix accumulated on device.

  .. math::
    \\mathrm{IoU}_c = \\frac{M_{cc}}{\\sum_j M_{cj} + \\sum_i M_{ic} - M_{cc}},
    \\quad \\mathrm{PixAcc} = \\frac{\\sum_c M_{cc}}{\\sum_{ij} M_{ij}}

  where :math:`M_{ij}` counts valid pixels of label i predicted as j. mIoU
  averages :math:`\\mathrm{IoU}_c` over classes that occur in the labels or
  the predictions (a class absent from both has no IoU).

  Args:
    num_classes: number of classes C.
    ignore_index: label excluded from the counts (-1 for NYUv2).

  Returns:
    A :class:`Metric`; ``update(state, logits (..., C), labels (...))``;
    ``compute`` gives ``{"miou", "pixel_acc"}``.
  """

  def init() -> ConfusionState:
    return ConfusionState(jnp.zeros((num_classes, num_classes), jnp.int32))

  def update(state: ConfusionState, logits: jax.Array,
             labels: jax.Array) -> ConfusionState:
    pred = jnp.argmax(logits, axis=-1).reshape(-1)
    labels = labels.reshape(-1).astype(jnp.int32)
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    idx = jnp.where(valid, labels * num_classes + pred, 0)
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[idx].add(
        valid.astype(jnp.int32))
    return ConfusionState(
        state.confusion + counts.reshape(num_classes, num_classes))

  def compute(state: ConfusionState) -> dict[str, jax.Array]:
    return confusion_scores(state.confusion)

  return Metric(init, update, compute)


def confusion_scores(confusion: jax.Array) -> dict[str, jax.Array]:
  """``{"miou", "pixel_acc"}`` of a (C, C) confusion matrix (rows = labels)."""
  m = confusion.astype(jnp.float32)
  tp = jnp.diag(m)
  union = m.sum(0) + m.sum(1) - tp
  present = union > 0
  iou = tp / jnp.where(present, union, 1.0)
  miou = _ratio(jnp.sum(jnp.where(present, iou, 0.0)), jnp.sum(present))
  return {"miou": miou, "pixel_acc": _ratio(tp.sum(), m.sum())}


# --------------------------------------------------------------------------
# Depth: absolute and relative error over valid pixels.


class DepthState(NamedTuple):
  abs_sum: jax.Array  # () float32, sum of |pred - target|
  rel_sum: jax.Array  # () float32, sum of |pred - target| / target
  count: jax.Array    # () int32, valid pixels


def depth_metric() -> Metric:
  """Depth absolute and relative error over pixels with ``target != 0``.

  .. math::
    \\mathrm{AbsErr} = \\frac{1}{|V|} \\sum_{p \\in V} |\\hat d_p - d_p|,
    \\quad \\mathrm{RelErr} = \\frac{1}{|V|} \\sum_{p \\in V}
    \\frac{|\\hat d_p - d_p|}{d_p}

  Returns:
    A :class:`Metric`; ``update(state, pred, target)`` (same shapes, e.g.
    (B, H, W, 1)); ``compute`` gives ``{"abs_err", "rel_err"}``.
  """

  def init() -> DepthState:
    return DepthState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
                      jnp.zeros((), jnp.int32))

  def update(state: DepthState, pred: jax.Array,
             target: jax.Array) -> DepthState:
    pred = pred.astype(jnp.float32)
    target = target.astype(jnp.float32)
    valid = target != 0
    err = jnp.where(valid, jnp.abs(pred - target), 0.0)
    rel = err / jnp.where(valid, jnp.abs(target), 1.0)
    return DepthState(state.abs_sum + err.sum(), state.rel_sum + rel.sum(),
                      state.count + valid.sum(dtype=jnp.int32))

  def compute(state: DepthState) -> dict[str, jax.Array]:
    return {"abs_err": _ratio(state.abs_sum, state.count),
            "rel_err": _ratio(state.rel_sum, state.count)}

  return Metric(init, update, compute)


# --------------------------------------------------------------------------
# Surface normals: angle error mean, median, shares within thresholds.

NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)


class NormalState(NamedTuple):
  angle_sum: jax.Array  # () float32, sum of angle errors in degrees
  count: jax.Array      # () int32, valid pixels
  within: jax.Array     # (len(NORMAL_THRESHOLDS),) int32, pixels < threshold
  histogram: jax.Array  # (num_bins,) int32, angle counts per bin of [0, 180]


def normal_angles(pred: jax.Array, target: jax.Array) -> tuple[jax.Array,
                                                                jax.Array]:
  """Angle in degrees between normals, and the valid mask (target != 0).

  Both vectors are normalised first, so the angle is exact for any length.
  """
  pred = pred.astype(jnp.float32)
  target = target.astype(jnp.float32)
  valid = jnp.any(target != 0, axis=-1)
  norms = jnp.sqrt(jnp.maximum(jnp.sum(pred * pred, -1), 1e-24)
                   * jnp.maximum(jnp.sum(target * target, -1), 1e-24))
  cos = jnp.clip(jnp.sum(pred * target, -1) / norms, -1.0, 1.0)
  return jnp.degrees(jnp.arccos(cos)), valid


def normal_metric(bin_width: float = 0.05) -> Metric:
  """Normal angle error: mean, median, share within 11.25, 22.5, 30 degrees.

  .. math::
    \\theta_p = \\arccos\\Bigl(\\frac{\\hat n_p \\cdot n_p}{\\|\\hat n_p\\|
    \\|n_p\\|}\\Bigr), \\quad \\mathrm{within}_t = \\frac{|\\{p \\in V :
    \\theta_p < t\\}|}{|V|}

  over valid pixels V (target not the zero vector). The mean and the shares
  are exact. The median needs the whole distribution, so the state keeps a
  histogram of angles in ``bin_width``-degree bins over [0, 180] (3600 bins
  by default) and the median is interpolated linearly inside the bin where
  the cumulative count crosses half: its error is below ``bin_width``
  (0.05 degrees by default).

  Args:
    bin_width: histogram resolution in degrees; 180 / bin_width bins.

  Returns:
    A :class:`Metric`; ``update(state, pred (..., 3), target (..., 3))``;
    ``compute`` gives ``{"mean", "median", "within_11.25", "within_22.5",
    "within_30"}``.
  """
  if not 0 < bin_width <= 180:
    raise ValueError(f"bin_width must be in (0, 180] degrees, got {bin_width}.")
  num_bins = int(round(180.0 / bin_width))
  thresholds = jnp.asarray(NORMAL_THRESHOLDS, jnp.float32)

  def init() -> NormalState:
    return NormalState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32),
                       jnp.zeros(len(NORMAL_THRESHOLDS), jnp.int32),
                       jnp.zeros(num_bins, jnp.int32))

  def update(state: NormalState, pred: jax.Array,
             target: jax.Array) -> NormalState:
    angle, valid = normal_angles(pred, target)
    angle, valid = angle.reshape(-1), valid.reshape(-1)
    ones = valid.astype(jnp.int32)
    bins = jnp.clip(jnp.floor(angle / bin_width).astype(jnp.int32), 0,
                    num_bins - 1)
    hist = jnp.zeros(num_bins, jnp.int32).at[bins].add(ones)
    within = jnp.sum((angle[:, None] < thresholds) & valid[:, None], axis=0,
                     dtype=jnp.int32)
    return NormalState(state.angle_sum + jnp.sum(jnp.where(valid, angle, 0.)),
                       state.count + ones.sum(), state.within + within,
                       state.histogram + hist)

  def compute(state: NormalState) -> dict[str, jax.Array]:
    out = {"mean": _ratio(state.angle_sum, state.count),
           "median": histogram_median(state.histogram, bin_width)}
    for t, w in zip(NORMAL_THRESHOLDS, state.within):
      out[f"within_{t:g}"] = _ratio(w, state.count)
    return out

  return Metric(init, update, compute)


def histogram_median(histogram: jax.Array, bin_width: float) -> jax.Array:
  """Median of values binned in ``[i w, (i+1) w)``, linear inside the bin.

  With N values and cumulative counts :math:`C_i`, finds the first bin with
  :math:`C_i \\ge N / 2` and returns :math:`w (i + (N/2 - C_{i-1}) / h_i)`.
  NaN for an empty histogram.
  """
  h = histogram.astype(jnp.float32)
  cum = jnp.cumsum(h)
  half = cum[-1] / 2.0
  i = jnp.argmax(cum >= half)
  before = jnp.where(i > 0, cum[jnp.maximum(i - 1, 0)], 0.0)
  frac = (half - before) / jnp.maximum(h[i], 1.0)
  return jnp.where(cum[-1] > 0, bin_width * (i + frac), jnp.nan)


# --------------------------------------------------------------------------
# Classification: CelebA attributes (error, F1), digit count accuracy.


class AttributeState(NamedTuple):
  tp: jax.Array     # (K,) int32 true positives per attribute
  fp: jax.Array     # (K,) int32 false positives
  fn: jax.Array     # (K,) int32 false negatives
  count: jax.Array  # () int32 examples


def attribute_metric(num_attributes: int = 40) -> Metric:
  """Mean error and mean F1 over binary attributes, from TP/FP/FN counts.

  A logit > 0 predicts the attribute. Per attribute k:

  .. math::
    \\mathrm{err}_k = \\frac{FP_k + FN_k}{n}, \\quad
    F1_k = \\frac{2 TP_k}{2 TP_k + FP_k + FN_k}

  and the reported values are their means over attributes (F1 of an
  attribute with no positive label or prediction, 0/0, counts as 1).

  Returns:
    A :class:`Metric`; ``update(state, logits (B, K), labels (B, K))``;
    ``compute`` gives ``{"error", "f1"}``.
  """

  def init() -> AttributeState:
    z = jnp.zeros(num_attributes, jnp.int32)
    return AttributeState(z, z, z, jnp.zeros((), jnp.int32))

  def update(state: AttributeState, logits: jax.Array,
             labels: jax.Array) -> AttributeState:
    logits = logits.reshape(-1, num_attributes)
    pred = logits > 0
    true = labels.reshape(-1, num_attributes).astype(bool)
    s = lambda m: jnp.sum(m, axis=0, dtype=jnp.int32)
    return AttributeState(state.tp + s(pred & true), state.fp + s(pred & ~true),
                          state.fn + s(~pred & true),
                          state.count + logits.shape[0])

  def compute(state: AttributeState) -> dict[str, jax.Array]:
    tp, fp, fn = (x.astype(jnp.float32) for x in (state.tp, state.fp,
                                                  state.fn))
    den = 2 * tp + fp + fn
    f1 = jnp.where(den > 0, 2 * tp / jnp.where(den > 0, den, 1.0), 1.0)
    error = _ratio(jnp.mean(fp + fn), state.count)
    return {"error": error, "f1": jnp.mean(f1)}

  return Metric(init, update, compute)


class AccuracyState(NamedTuple):
  correct: jax.Array  # () int32
  count: jax.Array    # () int32


def accuracy_metric() -> Metric:
  """Top-1 accuracy ``mean(argmax(logits) == labels)`` (digit count).

  Returns:
    A :class:`Metric`; ``update(state, logits (..., C), labels (...))``;
    ``compute`` gives ``{"accuracy"}``.
  """

  def init() -> AccuracyState:
    return AccuracyState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def update(state: AccuracyState, logits: jax.Array,
             labels: jax.Array) -> AccuracyState:
    hit = jnp.argmax(logits, -1) == labels
    return AccuracyState(state.correct + hit.sum(dtype=jnp.int32),
                         state.count + hit.size)

  def compute(state: AccuracyState) -> dict[str, jax.Array]:
    return {"accuracy": _ratio(state.correct, state.count)}

  return Metric(init, update, compute)


def binary_accuracy_metric() -> Metric:
  """Accuracy of a binary task's logits: ``mean((logits > 0) == labels)``.

  .. math:: \\mathrm{acc} = \\frac{1}{n} \\sum_b [\\,[z_b > 0] = y_b\\,]

  Returns:
    A :class:`Metric`; ``update(state, logits (...), labels (...))`` with
    labels in {0, 1} (bool or numeric) and logits of the same shape;
    ``compute`` gives ``{"accuracy"}``.
  """

  def init() -> AccuracyState:
    return AccuracyState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def update(state: AccuracyState, logits: jax.Array,
             labels: jax.Array) -> AccuracyState:
    hit = (logits > 0) == labels.astype(bool)
    return AccuracyState(state.correct + hit.sum(dtype=jnp.int32),
                         state.count + hit.size)

  def compute(state: AccuracyState) -> dict[str, jax.Array]:
    return {"accuracy": _ratio(state.correct, state.count)}

  return Metric(init, update, compute)


class ErrorState(NamedTuple):
  abs_sum: jax.Array  # () float32, sum of |pred - target|
  sq_sum: jax.Array   # () float32, sum of (pred - target)^2
  count: jax.Array    # () int32


def regression_error_metric() -> Metric:
  r"""Mean absolute and root mean squared error of a real-valued target.

  .. math::
    \mathrm{MAE} = \frac{1}{n} \sum_b |\hat y_b - y_b|, \quad
    \mathrm{RMSE} = \sqrt{\frac{1}{n} \sum_b (\hat y_b - y_b)^2}

  Returns:
    A :class:`Metric`; ``update(state, pred, target)`` (same shapes);
    ``compute`` gives ``{"mae", "rmse"}`` (lower is better).
  """

  def init() -> ErrorState:
    return ErrorState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
                      jnp.zeros((), jnp.int32))

  def update(state: ErrorState, pred: jax.Array,
             target: jax.Array) -> ErrorState:
    err = pred.astype(jnp.float32) - target.astype(jnp.float32)
    return ErrorState(state.abs_sum + jnp.abs(err).sum(),
                      state.sq_sum + jnp.square(err).sum(),
                      state.count + err.size)

  def compute(state: ErrorState) -> dict[str, jax.Array]:
    return {"mae": _ratio(state.abs_sum, state.count),
            "rmse": jnp.sqrt(_ratio(state.sq_sum, state.count))}

  return Metric(init, update, compute)


# --------------------------------------------------------------------------
# Per-dataset bundles: update(state, outputs, batch), names "task/metric".


def task_metrics(metrics: Mapping[str, Metric]) -> Metric:
  """Bundles per-task metrics over a model's output dict and a batch.

  Args:
    metrics: ``{task: metric}``; task names are keys of both the model's
      outputs and the batch.

  Returns:
    A :class:`Metric` with ``update(state, outputs, batch)``; ``compute``
    returns ``{"task/name": value}``.
  """
  metrics = dict(metrics)

  def init() -> dict[str, State]:
    return {t: m.init() for t, m in metrics.items()}

  def update(state: dict[str, State], outputs: Mapping[str, jax.Array],
             batch: Mapping[str, jax.Array]) -> dict[str, State]:
    return {t: m.update(state[t], outputs[t], batch[t])
            for t, m in metrics.items()}

  def compute(state: dict[str, State]) -> dict[str, jax.Array]:
    return {f"{t}/{k}": v for t, m in metrics.items()
            for k, v in m.compute(state[t]).items()}

  return Metric(init, update, compute)


def nyuv2_metrics(bin_width: float = 0.05) -> Metric:
  """NYUv2: segmentation (13 classes), depth, normal; keys as the baselines."""
  return task_metrics({"segmentation": segmentation_metric(13),
                       "depth": depth_metric(),
                       "normal": normal_metric(bin_width)})


def cityscapes_metrics(num_classes: int = 7) -> Metric:
  """Cityscapes: segmentation and depth; keys as the baselines."""
  return task_metrics({"segmentation": segmentation_metric(num_classes),
                       "depth": depth_metric()})


def celeba_metrics(num_attributes: int = 40) -> Metric:
  """CelebA: ``attributes/error`` and ``attributes/f1``."""
  return task_metrics({"attributes": attribute_metric(num_attributes)})


def digit_scene_metrics(num_classes: int = 11,
                        bin_width: float = 0.05) -> Metric:
  """Digit scenes: segmentation, depth, normal and ``count/accuracy``.

  The scenes have depth everywhere; pixels with depth exactly 0 are still
  skipped by :func:`depth_metric` (relative error is undefined there).
  """
  return task_metrics({"segmentation": segmentation_metric(num_classes),
                       "depth": depth_metric(),
                       "normal": normal_metric(bin_width),
                       "count": accuracy_metric()})


# The digit-strip tasks that are not binary (mtl_jax.data.digit_attributes.KINDS).
_DIGIT_CLASS_TASKS = ("centre",)
_DIGIT_REGRESSION_TASKS = ("sum", "number", "product")


def digit_attribute_metrics(tasks: Sequence[str]) -> Metric:
  """Digit attributes and strips: one metric per task, and a mean accuracy.

  Binary attributes and ``centre`` (the centre digit's class, argmax of 10
  logits) give ``<task>/accuracy``; ``sum`` gives ``sum/mae`` and
  ``sum/rmse``. ``compute`` also gives ``mean/accuracy``, the unweighted
  mean over the classification tasks (a summary only; it is not a task, so
  it is not in :func:`digit_attribute_higher_is_better` and not in Delta_m).
  """
  tasks = tuple(tasks)

  def metric(t: str) -> Metric:
    if t in _DIGIT_CLASS_TASKS:
      return accuracy_metric()
    if t in _DIGIT_REGRESSION_TASKS:
      return regression_error_metric()
    return binary_accuracy_metric()

  bundle = task_metrics({t: metric(t) for t in tasks})
  classified = [t for t in tasks if t not in _DIGIT_REGRESSION_TASKS]

  def compute(state: State) -> dict[str, jax.Array]:
    out = bundle.compute(state)
    if classified:
      out["mean/accuracy"] = jnp.mean(jnp.stack(
          [out[f"{t}/accuracy"] for t in classified]))
    return out

  return Metric(bundle.init, bundle.update, compute)


def digit_attribute_higher_is_better(tasks: Sequence[str]) -> dict[str, bool]:
  """The Delta_m metrics: ``<task>/accuracy`` (higher is better) per
  classification task, ``sum/mae`` (lower is better) for the sum."""
  return {(f"{t}/mae" if t in _DIGIT_REGRESSION_TASKS else f"{t}/accuracy"):
          t not in _DIGIT_REGRESSION_TASKS for t in tasks}


# --------------------------------------------------------------------------
# Delta_m and the published single-task baselines.

# SegNet single-task baselines on NYUv2 (Nash-MTL repository), in the units of
# the metrics above: percentages divided by 100.
NYUV2_STL_BASELINES = {
    "segmentation/miou": 0.3830,
    "segmentation/pixel_acc": 0.6376,
    "depth/abs_err": 0.6754,
    "depth/rel_err": 0.2780,
    "normal/mean": 25.01,
    "normal/median": 19.21,
    "normal/within_11.25": 0.3014,
    "normal/within_22.5": 0.5720,
    "normal/within_30": 0.6915,
}
NYUV2_HIGHER_IS_BETTER = {
    "segmentation/miou": True,
    "segmentation/pixel_acc": True,
    "depth/abs_err": False,
    "depth/rel_err": False,
    "normal/mean": False,
    "normal/median": False,
    "normal/within_11.25": True,
    "normal/within_22.5": True,
    "normal/within_30": True,
}

# Single-task baselines on Cityscapes (FAMO repository).
CITYSCAPES_STL_BASELINES = {
    "segmentation/miou": 0.7401,
    "segmentation/pixel_acc": 0.9316,
    "depth/abs_err": 0.0125,
    "depth/rel_err": 27.77,
}
CITYSCAPES_HIGHER_IS_BETTER = {
    "segmentation/miou": True,
    "segmentation/pixel_acc": True,
    "depth/abs_err": False,
    "depth/rel_err": False,
}

CELEBA_HIGHER_IS_BETTER = {"attributes/error": False, "attributes/f1": True}

DIGIT_SCENE_HIGHER_IS_BETTER = {
    **NYUV2_HIGHER_IS_BETTER,
    "count/accuracy": True,
}


def _task_prefix(name: str) -> str:
  return name.split("/", 1)[0]


def delta_m(metrics: Mapping[str, Any], baselines: Mapping[str, float],
            higher_is_better: Mapping[str, bool], mode: str = "metric",
            task_of_metric: Mapping[str, str] | Callable[[str], str] | None
            = None) -> float:
  """Relative multi-task performance against single-task baselines, in %.

  .. math::
    \\Delta_m = \\frac{100}{N} \\sum_{i=1}^N (-1)^{l_i} \\frac{M_i - B_i}{B_i}

  where the sum runs over the metrics of ``baselines``, :math:`M_i` is
  ``metrics[i]``, :math:`B_i` is ``baselines[i]`` and :math:`l_i = 1` when
  ``higher_is_better[i]``. Lower is better.

  Args:
    metrics: ``{name: value}``, e.g. the output of a dataset metric's
      ``compute``; extra names are ignored.
    baselines: ``{name: single-task value}``; defines the metrics used.
    higher_is_better: ``{name: bool}`` for every baseline name.
    mode: ``"metric"`` averages the N terms (Nash-MTL, FAMO); ``"task"``
      averages within each task first, then over tasks (LibMTL).
    task_of_metric: the task of each metric, a mapping or a function; by
      default the part of the name before ``"/"``. Used by ``mode="task"``.

  Returns:
    Delta_m as a Python float (percent).
  """
  if mode not in ("metric", "task"):
    raise ValueError(f"mode must be 'metric' or 'task', got {mode!r}.")
  missing = [k for k in baselines if k not in metrics
             or k not in higher_is_better]
  if missing:
    raise ValueError(f"No metric value or direction for {missing}.")
  terms = {}
  for name, base in baselines.items():
    sign = -1.0 if higher_is_better[name] else 1.0
    terms[name] = sign * (float(metrics[name]) - base) / base
  if mode == "metric":
    return 100.0 * sum(terms.values()) / len(terms)
  if task_of_metric is None:
    task_of = _task_prefix
  elif callable(task_of_metric):
    task_of = task_of_metric
  else:
    task_of = task_of_metric.__getitem__
  per_task: dict[str, list[float]] = {}
  for name, term in terms.items():
    per_task.setdefault(task_of(name), []).append(term)
  return 100.0 * sum(sum(v) / len(v) for v in per_task.values()) / len(
      per_task)


class QM9State(NamedTuple):
  abs_sum: jax.Array  # (K,) float32, sum of |pred - target| in standardised units
  count: jax.Array    # () int32


def qm9_metrics(scale: Sequence[float], tasks: Sequence[str] | None = None) -> Metric:
  r"""QM9: each target's MAE in the papers' units, ``<target>/mae``.

  .. math:: \mathrm{MAE}_k = \frac{\sigma_k}{n} \sum_b |\hat y_{bk} - y_{bk}|

  where predictions and targets are standardised and :math:`\sigma_k` is
  target k's standard deviation in the papers' units (``scale``: D, a0^3,
  meV, a0^2, cal/mol K; :func:`mtl_jax.data.qm9.statistics`).

  Args:
    scale: (K,) standard deviations, in the order of ``tasks``.
    tasks: target names (default: the papers' 11, ``losses.QM9_TASKS``).
  """
  from mtl_jax.losses import QM9_TASKS
  tasks = tuple(tasks or QM9_TASKS)
  scale_arr = jnp.asarray(scale, jnp.float32)
  if scale_arr.shape != (len(tasks),):
    raise ValueError(f"qm9_metrics needs one scale per task ({len(tasks)}), got shape "
                     f"{scale_arr.shape}.")

  def init() -> QM9State:
    return QM9State(jnp.zeros((len(tasks),), jnp.float32), jnp.zeros((), jnp.int32))

  def update(state: QM9State, outputs: Mapping[str, jax.Array],
             batch: Mapping[str, jax.Array]) -> QM9State:
    pred = jnp.stack([outputs[t].astype(jnp.float32) for t in tasks], axis=-1)
    err = jnp.abs(pred - batch["targets"].astype(jnp.float32))
    return QM9State(state.abs_sum + err.sum(axis=0), state.count + err.shape[0])

  def compute(state: QM9State) -> dict[str, jax.Array]:
    mae = scale_arr * _ratio(state.abs_sum, state.count)
    return {f"{t}/mae": mae[k] for k, t in enumerate(tasks)}

  return Metric(init, update, compute)
