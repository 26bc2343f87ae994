"""Shared pieces of the benchmarks: models, fixed batches, steps, timing.

Timing rule of every benchmark here: compile everything first, then
interleave the candidates in one process (``for r in range(R): for c in
shuffled(candidates): time c``) and report medians of the per-repeat ratios,
so that the noise of a shared machine hits every candidate alike.
"""
from __future__ import annotations

import datetime
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# Every registered loss-based method, with the hyperparameters the
# benchmarks use, and one variant: ``stch`` is STCH in LibMTL's form (warm-up
# of 4 epochs of 10 steps, then the nadir-normalised smooth max, mu = 1; its
# step computes both phases and selects one, so its cost does not depend on
# the phase), ``stch_stateless`` the stateless form (TorchJD's ``STCH``,
# mu = 1).
METHODS = ("ew", "uw", "uw_o", "uw_so", "dwa", "rlw", "gls", "imtl_l",
           "scalarization", "famo", "stch", "stch_stateless")

# Benchmark names that are a registered method with other hyperparameters.
VARIANTS = {"stch_stateless": "stch"}


def method_hparams(name: str, num_tasks: int) -> dict[str, Any]:
  """Hyperparameters of ``name`` for ``num_tasks`` tasks (paper defaults)."""
  return {
      "uw_so": {"temperature": 2.0},
      "dwa": {"temperature": 2.0, "steps_per_epoch": 10},
      "scalarization": {"weights": tuple([1.0 / num_tasks] * num_tasks)},
      "stch": {"mu": 1.0, "warmup_epochs": 4, "steps_per_epoch": 10},
      "stch_stateless": {"mu": 1.0},
  }.get(name, {})


def make_weighting(name: str, num_tasks: int):
  import mtl_jax  # pylint: disable=g-import-not-at-top
  return mtl_jax.get(VARIANTS.get(name, name),
                     **method_hparams(name, num_tasks))


# Hyperparameters the benchmarks give the gradient-space methods that need
# one (the others run with their paper defaults).
GRADIENT_HPARAMS = {"cagrad": {"c": 0.4}, "fairgrad": {"alpha": 1.0}}


def gradient_methods() -> tuple[str, ...]:
  """Every registered gradient-space method, read at run time, but
  ``constant`` (its step is the ``jacobian (w = 1)`` row's)."""
  import mtl_jax  # pylint: disable=g-import-not-at-top
  return tuple(n for n in mtl_jax.aggregation.names() if n != "constant")


def make_gradient_method(name: str, num_tasks: int | None = None):
  """``mtl_jax.get(name)`` with :data:`GRADIENT_HPARAMS`; ``constant`` (not
  in :func:`gradient_methods`, but accepted by name) gets weights of ones,
  which needs ``num_tasks``."""
  import mtl_jax  # pylint: disable=g-import-not-at-top
  if name == "constant":
    if num_tasks is None:
      raise ValueError("constant needs num_tasks (its weights are K ones)")
    return mtl_jax.get(name, weights=(1.0,) * num_tasks)
  return mtl_jax.get(name, **GRADIENT_HPARAMS.get(name, {}))


def batch_splits(method) -> int:
  """How many parts the train step splits a batch into for ``method`` (a
  gradient-space ``Aggregator`` with ``batch_splits``, e.g. SDMGrad and MoDo:
  3; everything else 1)."""
  return int(getattr(method, "batch_splits", 1) or 1)


def truncate_batch(batch: Mapping[str, np.ndarray], size: int
                   ) -> dict[str, np.ndarray]:
  """The first ``size`` examples of every array of ``batch``."""
  return {k: np.asarray(v)[:size] for k, v in batch.items()}


def constant_weights(num_tasks: int, value: float = 1.0):
  """A gradient-space method whose weights are always ``value``: with the
  Jacobian path it gives EW's update, so its step costs the engine's
  Jacobian path and no solver."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from mtl_jax import aggregation  # pylint: disable=g-import-not-at-top

  def init(k, *, key=None):
    del key
    assert k == num_tasks, (k, num_tasks)
    return {}, aggregation.StatelessState(jnp.zeros((k,), jnp.int8))

  def apply(params, state, gramian, *, losses=None):
    del params, losses
    return aggregation.GradientWeights(
        jnp.full((gramian.shape[0],), value, gramian.dtype), state)

  return aggregation.Aggregator(init, apply)


# ---------------------------------------------------------------- models

def mlp_problem(num_tasks: int, batch_size: int, seed: int = 0):
  """GradNorm's MLP trunk (250 -> 4 x 100, K heads of 100), a fixed batch.

  Returns ``(model, batch, task_losses)``.
  """
  from mtl_jax import losses  # pylint: disable=g-import-not-at-top
  from mtl_jax.models import MLPTrunk  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  batch = {"image": rng.normal(size=(batch_size, 250)).astype(np.float32),
           "y": rng.normal(size=(batch_size, num_tasks, 100)).astype(np.float32)}
  return MLPTrunk(num_tasks=num_tasks), batch, losses.synthetic_losses


def digit_problem(batch_size: int, image_size: int = 32, seed: int = 0):
  """DigitSceneNet (widths 8, 16, 32; 4 tasks), a fixed random batch shaped
  like the digit scenes. Returns ``(model, batch, task_losses)``."""
  from mtl_jax import losses  # pylint: disable=g-import-not-at-top
  from mtl_jax.models import DigitSceneNet  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  normal = rng.normal(size=(batch_size, image_size, image_size, 3))
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  s = (batch_size, image_size, image_size)
  batch = {
      "image": rng.random(s + (3,), dtype=np.float32),
      "segmentation": rng.integers(0, 11, s).astype(np.int32),
      "depth": rng.uniform(70, 410, s + (1,)).astype(np.float32),
      "normal": normal.astype(np.float32),
      "count": rng.integers(1, 5, (batch_size,)).astype(np.int32),
  }
  return DigitSceneNet(), batch, losses.digit_scene_losses


def segnet_problem(batch_size: int, height: int = 288, width: int = 384,
                   seed: int = 0):
  """SegNet with NYUv2's heads (13 classes, depth, normals) and a fixed
  random NYUv2-shaped batch. Returns ``(model, batch, task_losses)``."""
  from mtl_jax import losses  # pylint: disable=g-import-not-at-top
  from mtl_jax.models import NYUV2_HEADS, SegNet  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  s = (batch_size, height, width)
  normal = rng.normal(size=s + (3,))
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  batch = {"image": rng.random(s + (3,), dtype=np.float32),
           "segmentation": rng.integers(-1, 13, s).astype(np.int32),
           "depth": rng.uniform(0.5, 10, s + (1,)).astype(np.float32),
           "normal": normal.astype(np.float32)}
  return SegNet(heads=NYUV2_HEADS), batch, losses.nyuv2_losses


def jit_step(model, batch: Mapping[str, np.ndarray], task_losses: Callable,
             weighting, num_tasks: int, *, learning_rate: float = 1e-3,
             seed: int = 0, **jacobian):
  """The engine's jitted train step with Adam, and its state at step 0.

  ``weighting`` is a method of either family; ``jacobian`` holds the fields
  of a gradient-space method's ``mtl_jax.train.JacobianOptions``
  (``task_params``, ``mode``, ``chunk_size``); ``task_params`` also goes to
  ``create_train_state``, which sizes the ``(K, P)`` buffers of the methods
  that read the Jacobian (MoCo, DB-MTL, ExcessMTL) from it. Returns
  ``(step, state, batch_on_device)``; the step is compiled.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from mtl_jax import train  # pylint: disable=g-import-not-at-top
  optimizer = train.make_optimizer(optax.adam(learning_rate),
                                   method_learning_rate=learning_rate)
  state = train.create_train_state(
      jax.random.PRNGKey(seed), model, batch, weighting, optimizer,
      num_tasks=num_tasks, task_params=jacobian.get("task_params"))
  options = train.JacobianOptions(**jacobian) if jacobian else None
  step = jax.jit(train.make_train_step(train.module_apply_fn(model),
                                       task_losses, weighting, optimizer,
                                       jacobian=options),
                 donate_argnums=0)
  batch = jax.device_put(dict(batch))
  state, _ = step(state, batch)  # compile, and leave the donated input behind
  jax.block_until_ready(state)
  return step, state, batch


class JaxRunner:
  """Runs ``n`` steps of a jitted step on a fixed batch and waits for them."""

  def __init__(self, step, state, batch):
    self.step, self.state, self.batch = step, state, batch

  def __call__(self, n: int) -> None:
    import jax  # pylint: disable=g-import-not-at-top
    state = self.state
    for _ in range(n):
      state, _ = self.step(state, self.batch)
    jax.block_until_ready(state)
    self.state = state


# ---------------------------------------------------------------- timing

def interleaved(runners: Mapping[str, Callable[[int], None]], *, repeats: int,
                steps: int, warmup: int = 3, seed: int = 0
                ) -> dict[str, list[float]]:
  """Seconds per step of every runner, ``repeats`` times, interleaved.

  Each repeat times ``steps`` steps of every runner, in a fresh random order
  (so no runner always follows the same one). Returns ``{name: [seconds per
  step, one per repeat]}``.
  """
  for run in runners.values():
    run(warmup)
  order = list(runners)
  rng = np.random.default_rng(seed)
  times = {name: [] for name in runners}
  for _ in range(repeats):
    rng.shuffle(order)
    for name in order:
      start = time.perf_counter()
      runners[name](steps)
      times[name].append((time.perf_counter() - start) / steps)
  return times


def adjacent_pairs(runners: Mapping[str, Callable[[int], None]], ref: str, *,
                   repeats: int, steps: int, warmup: int = 3, seed: int = 0
                   ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
  """Each runner timed right next to the reference, ``repeats`` times.

  Every repeat visits the other runners in a fresh random order; each visit
  times ``steps`` steps of the reference and ``steps`` of the runner, in a
  random order of the two, so that a ratio compares two measurements a few
  milliseconds apart (the noise of a shared machine comes in bursts).
  Returns ``({name: [t(name) / t(ref) per repeat]}, {name: [seconds per step]})``.
  """
  for run in runners.values():
    run(warmup)
  others = [name for name in runners if name != ref]
  rng = np.random.default_rng(seed)
  ratios = {name: [] for name in others}
  times = {name: [] for name in runners}
  for _ in range(repeats):
    rng.shuffle(others)
    for name in others:
      pair = [ref, name] if rng.random() < 0.5 else [name, ref]
      took = {}
      for which in pair:
        start = time.perf_counter()
        runners[which](steps)
        took[which] = (time.perf_counter() - start) / steps
        times[which].append(took[which])
      ratios[name].append(took[name] / took[ref])
  return ratios, times


def median(xs: Sequence[float]) -> float:
  return float(statistics.median(xs))


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
  q = np.percentile(np.asarray(xs), [25, 75])
  return float(q[0]), float(q[1])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]
                   ) -> str:
  lines = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def machine_line() -> str:
  """Date, device and CPU count, for the header of a printed table."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
  return (f"{date}; jax {jax.__version__}; device {device.platform}: "
          f"{device.device_kind} x{jax.device_count()}; "
          f"{os.cpu_count()} CPU cores; python {platform.python_version()}")
