"""GradNorm's synthetic multi-task regression (Chen et al., ICML 2018).

.. math::

  f_i(x) = \\sigma_i \\tanh\\big((B + \\epsilon_i)\\, x\\big), \\qquad i = 1..K

where :math:`x \\in R^{250}`, :math:`f_i(x) \\in R^{100}`, :math:`B` has i.i.d.
:math:`N(0, 10)` entries shared by all tasks, :math:`\\epsilon_i` has i.i.d.
:math:`N(0, 3.5)` entries (10 and 3.5 read as variances), and the task scales
:math:`\\sigma_i` span orders of magnitude (default: log-spaced from 1 to 100),
so that an equally weighted squared error is dominated by the large tasks.
``B``, ``eps`` and ``sigma`` are fixed by ``problem_seed``. The paper leaves the
input distribution open; here :math:`x \\sim N(0, s^2 I)` with
:math:`s = 1 / \\sqrt{250 (10 + 3.5)}`, so that the pre-activations have unit
variance and ``tanh`` is neither linear nor saturated.

Example::

  from mtl_jax.data import synthetic
  ds = synthetic.load("train", batch_size=100, num_tasks=10)
  batch = next(iter(ds))   # x (100, 250), y (100, 10, 100)

  arrays = synthetic.generate(1000, num_tasks=2)   # in-memory numpy

Reference: Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient
Normalization for Adaptive Loss Balancing in Deep Multitask Networks",
ICML 2018, https://arxiv.org/abs/1711.02257.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import grain
import numpy as np

from mtl_jax.data import _pipeline

INPUT_DIM = 250
OUTPUT_DIM = 100
B_VARIANCE = 10.0
EPS_VARIANCE = 3.5
DEFAULT_NUM_TASKS = 10
SPLITS = ("train", "validation", "test")
SPLIT_SIZES = {"train": 10000, "validation": 1000, "test": 1000}


def task_names(num_tasks: int) -> tuple[str, ...]:
  """Names of the tasks, ``("task_0", ...)``; task i is ``y[:, i]``."""
  return tuple(f"task_{i}" for i in range(num_tasks))


TASKS = task_names(DEFAULT_NUM_TASKS)
LOSSES = dict.fromkeys(TASKS, "squared_error")


class Problem(NamedTuple):
  """The fixed parameters of one instance of the benchmark."""
  b: np.ndarray  # (OUTPUT_DIM, INPUT_DIM)
  eps: np.ndarray  # (K, OUTPUT_DIM, INPUT_DIM)
  sigmas: np.ndarray  # (K,)


def default_sigmas(num_tasks: int) -> np.ndarray:
  """Task scales log-spaced from 1 to 100."""
  return np.geomspace(1.0, 100.0, num_tasks) if num_tasks > 1 else np.ones(1)


def make_problem(num_tasks: int = DEFAULT_NUM_TASKS, sigmas: Sequence[float] | None = None,
                 problem_seed: int = 0) -> Problem:
  """Draws ``B`` and ``eps_i`` from ``problem_seed``."""
  if num_tasks < 1:
    raise ValueError(f"num_tasks must be >= 1, got {num_tasks}.")
  sig = default_sigmas(num_tasks) if sigmas is None else np.asarray(sigmas, np.float64)
  if sig.shape != (num_tasks,):
    raise ValueError(f"sigmas must have {num_tasks} entries, got shape {sig.shape}.")
  rng = np.random.default_rng(problem_seed)
  b = rng.normal(0.0, np.sqrt(B_VARIANCE), size=(OUTPUT_DIM, INPUT_DIM))
  eps = rng.normal(0.0, np.sqrt(EPS_VARIANCE), size=(num_tasks, OUTPUT_DIM, INPUT_DIM))
  return Problem(b=b, eps=eps, sigmas=sig)


def targets(problem: Problem, x: np.ndarray) -> np.ndarray:
  """``y[n, i] = sigma_i * tanh((B + eps_i) x_n)``, shape (N, K, OUTPUT_DIM)."""
  pre = np.einsum("kod,nd->nko", problem.b[None] + problem.eps, x)
  return (problem.sigmas[None, :, None] * np.tanh(pre)).astype(np.float32)


def generate(num_examples: int, *, num_tasks: int = DEFAULT_NUM_TASKS,
             sigmas: Sequence[float] | None = None, problem_seed: int = 0,
             seed: int = 0) -> dict[str, np.ndarray]:
  """In-memory samples: ``{"x": (N, 250) float32, "y": (N, K, 100) float32}``.

  Args:
    num_examples: N.
    num_tasks: K.
    sigmas: K task scales; default log-spaced from 1 to 100.
    problem_seed: seed of ``B`` and ``eps`` (the functions).
    seed: seed of the inputs ``x``.
  """
  problem = make_problem(num_tasks, sigmas, problem_seed)
  scale = 1.0 / np.sqrt(INPUT_DIM * (B_VARIANCE + EPS_VARIANCE))
  x = np.random.default_rng([problem_seed, seed]).normal(0.0, scale, (num_examples, INPUT_DIM))
  return {"x": x.astype(np.float32), "y": targets(problem, x)}


def load(
    split: str,
    *,
    batch_size: int,
    num_tasks: int = DEFAULT_NUM_TASKS,
    sigmas: Sequence[float] | None = None,
    num_examples: int | None = None,
    problem_seed: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    worker_count: int = 0,
    drop_remainder: bool = True,
) -> grain.IterDataset:
  """Batches of the synthetic regression, generated in memory.

  Args:
    split: ``"train"`` (10000), ``"validation"`` (1000) or ``"test"`` (1000);
      the splits draw disjoint inputs for the same functions.
    batch_size: examples per batch on this process.
    num_tasks: K.
    sigmas: K task scales; default log-spaced from 1 to 100.
    num_examples: size of the split (default from ``SPLIT_SIZES``).
    problem_seed: seed of the functions (``B``, ``eps``).
    seed: shuffle seed.
    shuffle: reshuffle every epoch.
    num_epochs: passes over the split; ``None`` repeats forever.
    shard_index: default ``jax.process_index()``.
    shard_count: default ``jax.process_count()``.
    worker_count: Grain worker processes (0 is fastest: the data is in memory).
    drop_remainder: drop the last incomplete batch.

  Returns:
    A ``grain.IterDataset`` of ``{"x": (B, 250), "y": (B, K, 100)}`` float32.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  n = SPLIT_SIZES[split] if num_examples is None else num_examples
  arrays = generate(n, num_tasks=num_tasks, sigmas=sigmas, problem_seed=problem_seed,
                    seed=1 + SPLITS.index(split))
  return _pipeline.make_pipeline(
      _pipeline.ArraySource(arrays), batch_size=batch_size, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs, shard_index=shard_index, shard_count=shard_count,
      worker_count=worker_count, drop_remainder=drop_remainder)
