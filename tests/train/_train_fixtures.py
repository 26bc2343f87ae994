"""Tiny model, synthetic data and helpers shared by the train tests.

Nothing here depends on mtl_jax.data or mtl_jax.models: a two-layer MLP with
three regression heads and seeded numpy batches keep every compile around a
second on CPU.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_jax
from mtl_jax import train

NUM_TASKS = 3
FEATURES = 5
BATCH = 24  # 4 fake devices; per device divisible by 3 (SDMGrad, MoDo split it)
TASK_NAMES = ("seg", "depth", "normal")
SCALES = np.array([1.0, 3.0, 0.3], np.float32)  # losses of different sizes


class TinyMLP(nn.Module):
  """A shared tanh layer and one linear head per task.

  The shared features are marked with ``perturb`` (outside ``init``), for
  the Jacobian's representation mode.
  """
  hidden: int = 8

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    h = nn.tanh(nn.Dense(self.hidden)(x))
    if not self.is_initializing():
      h = self.perturb("features", h)
    return {name: nn.Dense(1, name=name)(h)[:, 0] for name in TASK_NAMES}


# The heads of TinyMLP, for the Jacobian path of the gradient-space methods.
HEADS = TASK_NAMES


def task_losses(outputs, batch) -> jax.Array:
  """Per-task mean squared errors, strictly positive (GLS, UW-O need it)."""
  return jnp.stack([
      jnp.mean((outputs[name] - batch["y"][:, k]) ** 2) + 0.01
      for k, name in enumerate(TASK_NAMES)])


def make_batch(seed: int, batch_size: int = BATCH) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch_size, FEATURES)).astype(np.float32)
  y = (np.tanh(x[:, :NUM_TASKS]) * SCALES
       + 0.1 * rng.normal(size=(batch_size, NUM_TASKS))).astype(np.float32)
  return {"image": x, "y": y}


def hparams(name: str) -> dict[str, Any]:
  return {"dwa": {"steps_per_epoch": 2},
          "scalarization": {"weights": (0.2, 0.3, 0.5)},
          "uw_so": {"temperature": 2.0},
          # The moving-average form: its state must match across devices and
          # come back from a checkpoint (uw_so_rel keeps the stateless one).
          "uw_so_entropy": {"ema": 0.9},
          "cagrad": {"c": 0.5},
          "fairgrad": {"alpha": 1.0},
          "constant": {"weights": (0.2, 0.3, 0.5)},
          # A contractive inner step: the default (10) magnifies float32
          # rounding beyond 1e-5 (tests/train/test_batch_splits.py).
          "sdmgrad": {"lr": 0.5}}.get(name, {})


def get_weighting(name: str):
  """A method of either family (a Weighting or an Aggregator)."""
  return mtl_jax.get(name, **hparams(name))


def is_gradient_method(name: str) -> bool:
  return mtl_jax.family(name) == "aggregation"


def default_optimizer() -> optax.GradientTransformation:
  return train.make_optimizer(optax.adam(1e-2), method_learning_rate=5e-2)


def init_state(name: str, seed: int = 0,
               optimizer: optax.GradientTransformation | None = None):
  w = get_weighting(name)
  tx = optimizer or default_optimizer()
  # (K, P) buffers (MoCo, DB-MTL, ExcessMTL) are sized by the shared params.
  task_params = HEADS if is_gradient_method(name) else None
  state = train.create_train_state(jax.random.PRNGKey(seed), TinyMLP(),
                                   make_batch(0), w, tx, NUM_TASKS,
                                   task_params=task_params)
  return state, w, tx


def make_step(name: str, *, axis_name: str | None = None,
              compute_dtype=None, optimizer=None, model_apply=None, **jacobian):
  """The train step of method ``name``; a gradient-space method gets TinyMLP's
  heads as its task parameters unless ``jacobian`` (fields of :class:`mtl_jax.train.JacobianOptions`)
  says otherwise."""
  w = get_weighting(name)
  tx = optimizer or default_optimizer()
  options = None
  if is_gradient_method(name):
    jacobian.setdefault("task_params", HEADS)
    options = train.JacobianOptions(**jacobian)
  elif jacobian:
    options = train.JacobianOptions(**jacobian)
  return train.make_train_step(model_apply or train.module_apply_fn(TinyMLP()),
                               task_losses, w, tx, axis_name=axis_name,
                               compute_dtype=compute_dtype, jacobian=options)


@functools.cache
def jitted_step(name: str, donate: bool = True):
  """``jax.jit(make_step(name))``, one per method in a test process.

  Every call of :func:`make_step` builds a new function, which ``jax.jit``
  traces and compiles anew; the loop and checkpoint tests run the same
  method's step in several runs, and share its one compilation through this.
  With ``donate`` the state passed in is donated (as in a real loop): pass a
  fresh state to every run.
  """
  return jax.jit(make_step(name), donate_argnums=0 if donate else ())


class SeededBatches:
  """An endless iterator of seeded batches with Grain-like get/set_state.

  ``nan_at`` injects NaN into the targets of ``nan_task`` for those batch
  indices (0-based); ``consumed`` counts ``next`` calls of this object.
  """

  def __init__(self, seed: int = 1, nan_at=(), nan_task: int = 1):
    self.seed, self.index, self.consumed = seed, 0, 0
    self.nan_at, self.nan_task = set(nan_at), nan_task

  def __iter__(self):
    return self

  def __next__(self):
    batch = make_batch(self.seed * 100_003 + self.index)
    if self.index in self.nan_at:
      batch["y"][:, self.nan_task] = np.nan
    self.index += 1
    self.consumed += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {"index": self.index}

  def set_state(self, state: dict[str, int]) -> None:
    self.index = int(state["index"])


def max_abs_diff(a, b) -> float:
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64)
                                                        - np.asarray(y, np.float64)),
                                                 initial=0.0)), a, b)
  return max(jax.tree.leaves(diffs), default=0.0)
