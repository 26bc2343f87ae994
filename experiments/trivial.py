"""Trivial baselines: what a model that ignores its input scores on each metric.

A benchmark only separates weighting methods if every task is learnt well
above what a constant prediction gets. This module scores, on any split,
the best constant predictor fitted on the *train* split, with the very
metric the runs are scored with (``spec.metric``):

* ``"class"`` tasks (segmentation, count): the majority class of the train
  targets (for segmentation, the most frequent pixel class: the background);
* ``"binary"`` tasks (binary attributes, one logit each): each attribute's
  majority value;
* ``"mean"`` tasks (depth): the mean train target;
* ``"unit_mean"`` tasks (surface normals): the mean train normal, normalised;
* ``"array_mean"`` (the synthetic regression, whose one ``(B, K, D)`` target
  ``"y"`` holds every task): the mean train target of every task and output.

``kinds(spec)`` says which kind each task is; :func:`trivial_metrics`
returns the metrics of that constant predictor. :func:`clearly_above`
decides whether a trained model beats it by the margins the comparison
checks (``PRIMARY``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Per dataset: the kind of constant predictor of every task.
KINDS = {
    "digit_scenes": {"segmentation": "class", "depth": "mean",
                     "normal": "unit_mean", "count": "class"},
    "nyuv2": {"segmentation": "class", "depth": "mean", "normal": "unit_mean"},
    "cityscapes": {"segmentation": "class", "depth": "mean"},
}

# The metric each task is judged on, the factor by which a trained model must
# beat the constant predictor, and how: "ratio": higher-is-better metrics
# must reach ``factor * trivial``, lower-is-better ones at most ``trivial /
# factor``; "error": an accuracy's error ``1 - value`` at most ``(1 -
# trivial) / factor``. mIoU's factor 3 is the evidence issue's bar ("at least
# 3 times that of predicting background everywhere").
PRIMARY = {
    "segmentation": ("segmentation/miou", 3.0, "ratio"),
    "depth": ("depth/abs_err", 2.0, "ratio"),
    "normal": ("normal/mean", 1.25, "ratio"),
    "count": ("count/accuracy", 1.5, "ratio"),
}


def kinds(spec: Any) -> dict[str, str]:
  """``{task: kind}`` of ``spec``'s dataset (``"binary"`` for attributes)."""
  if spec.name in KINDS:
    return dict(KINDS[spec.name])
  if spec.name == "qm9":  # the mean standardised target (each a (B,) column)
    return dict.fromkeys(spec.tasks, "mean")
  if spec.name == "synthetic":  # one target array holds every task
    return {"y": "array_mean"}
  if spec.name == "digit_attributes":  # digit attributes and digit strips
    from mtl_jax.data import digit_attributes  # pylint: disable=g-import-not-at-top
    kind = {"binary": "binary", "class": "class", "regression": "mean"}
    return {t: kind[digit_attributes.KINDS[t]] for t in spec.tasks}
  raise ValueError(f"no trivial baseline defined for dataset {spec.name!r}; "
                   f"add its task kinds to experiments.trivial.KINDS.")


def fit(spec: Any, batches: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
  """The constant of every task, fitted on ``batches`` (the train split)."""
  task_kinds = kinds(spec)
  counts: dict[str, np.ndarray] = {}
  sums: dict[str, np.ndarray] = {}
  sizes: dict[str, int] = {}
  for batch in batches:
    for task, kind in task_kinds.items():
      y = np.asarray(batch[task])
      if kind == "class":
        c = np.bincount(y.reshape(-1).astype(np.int64)[y.reshape(-1) >= 0])
        prev = counts.get(task, np.zeros(0, np.int64))
        n = max(len(prev), len(c))
        counts[task] = np.pad(prev, (0, n - len(prev))) + np.pad(
            c, (0, n - len(c)))
      elif kind == "array_mean":
        sums[task] = sums.get(task, 0.0) + y.astype(np.float64).sum(0)
        sizes[task] = sizes.get(task, 0) + y.shape[0]
      else:  # binary: per attribute (last axis); mean / unit_mean: channels
        flat = y.reshape(-1, y.shape[-1] if y.ndim > 1 and kind != "mean"
                         else 1).astype(np.float64)
        if kind == "binary" and y.ndim == 1:
          flat = y.reshape(-1, 1).astype(np.float64)
        sums[task] = sums.get(task, 0.0) + flat.sum(0)
        sizes[task] = sizes.get(task, 0) + flat.shape[0]
  out: dict[str, Any] = {}
  for task, kind in task_kinds.items():
    if kind == "class":
      out[task] = int(np.argmax(counts[task]))
    elif kind == "binary":
      out[task] = (sums[task] / sizes[task] >= 0.5).astype(np.float32)
    elif kind == "mean":
      out[task] = float(sums[task][0] / sizes[task])
    elif kind == "array_mean":
      out[task] = (sums[task] / sizes[task]).astype(np.float32)
    else:
      mean = sums[task] / sizes[task]
      out[task] = (mean / np.linalg.norm(mean)).astype(np.float32)
  return out


def constant_outputs(spec: Any, constants: Mapping[str, Any],
                     outputs: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Outputs shaped like ``outputs`` that predict the constants everywhere."""
  task_kinds = kinds(spec)
  out = {}
  for task, y in outputs.items():
    kind = task_kinds.get(task)
    if kind == "class":
      out[task] = jnp.broadcast_to(
          10.0 * jax.nn.one_hot(constants[task], y.shape[-1]), y.shape)
    elif kind == "binary":
      out[task] = jnp.broadcast_to(
          jnp.where(jnp.asarray(constants[task]) > 0.5, 10.0, -10.0), y.shape)
    elif kind == "mean":
      out[task] = jnp.full(y.shape, constants[task], jnp.float32)
    elif kind in ("unit_mean", "array_mean"):
      out[task] = jnp.broadcast_to(jnp.asarray(constants[task]), y.shape)
    else:
      out[task] = y
  return out


def trivial_metrics(spec: Any, constants: Mapping[str, Any],
                    batches: Iterable[Mapping[str, Any]],
                    output_shapes: Mapping[str, tuple[int, ...]]
                    ) -> dict[str, float]:
  """``spec.metric`` of the constant predictor over ``batches``.

  ``output_shapes``: every task's output shape without the batch axis (the
  model's, e.g. ``(32, 32, 11)`` for segmentation logits).
  """
  state = spec.metric.init()
  for batch in batches:
    n = np.asarray(jax.tree.leaves(batch)[0]).shape[0]
    shaped = {t: jnp.zeros((n,) + tuple(s), jnp.float32)
              for t, s in output_shapes.items()}
    state = spec.metric.update(state, constant_outputs(spec, constants, shaped),
                               batch)
  return {k: float(v) for k, v in spec.metric.compute(state).items()}


def primary(spec: Any) -> dict[str, tuple[str, float, str]]:
  """``{task: (metric, factor, mode)}`` the benchmark check judges each task
  on (see ``PRIMARY``); accuracies of the digit strips halve the error."""
  out = {}
  for task in spec.tasks:
    if task in PRIMARY:
      out[task] = PRIMARY[task]
    elif f"{task}/accuracy" in spec.higher_is_better:
      out[task] = (f"{task}/accuracy", 2.0, "error")
    else:
      lower = [m for m, hib in spec.higher_is_better.items()
               if m.startswith(f"{task}/") and not hib]
      if lower:
        out[task] = (lower[0], 2.0, "ratio")
  return out


def bar(trivial: float, higher_is_better: bool, factor: float,
        mode: str = "ratio") -> float:
  """The value a trained model must reach (see ``PRIMARY``)."""
  if mode == "error":
    return 1.0 - (1.0 - trivial) / factor
  return factor * trivial if higher_is_better else trivial / factor


def clearly_above(value: float, trivial: float, higher_is_better: bool,
                  factor: float, mode: str = "ratio") -> bool:
  """Whether ``value`` reaches the :func:`bar` of ``trivial``."""
  target = bar(trivial, higher_is_better, factor, mode)
  tol = 1e-9 * max(abs(target), 1.0)
  if higher_is_better:
    return value >= target - tol
  return value <= target + tol


def for_program(program: Any, split: str) -> dict[str, float]:
  """The trivial metrics of ``program``'s dataset on ``split``: constants fitted
  on ``data.train_split`` (one pass), output shapes from the model."""
  from experiments import run as run_lib  # pylint: disable=g-import-not-at-top
  spec, data = program.spec, program.config.data
  train_iter = spec.load(data, data.train_split, batch_size=data.eval_batch_size,
                         shuffle=False, num_epochs=1, drop_remainder=False,
                         seed=0, shard_index=0, shard_count=1)
  constants = fit(spec, train_iter)
  sample = next(iter(run_lib.eval_batches(program, split)))
  x = jax.tree.map(lambda a: jnp.asarray(a)[:1], sample[spec.input_key])
  variables = jax.eval_shape(
      lambda: program.model.init(jax.random.PRNGKey(0), x, train=False))
  shapes = jax.eval_shape(
      lambda v: program.model.apply(v, x, train=False), variables)
  output_shapes = {t: s.shape[1:] for t, s in shapes.items()}
  return trivial_metrics(spec, constants, run_lib.eval_batches(program, split),
                         output_shapes)
