"""Shared, seeded inputs for the weighting tests.

Everything here is deterministic: numpy ``default_rng(seed)`` arrays, fixed
degenerate cases and hypothesis strategies with bounded sizes, so that a
failure reproduces and the whole suite stays fast.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from mtl_jax import weighting


def hparams(name: str, num_tasks: int) -> dict[str, Any]:
  """Keyword arguments for ``weighting.get(name, ...)`` with K tasks.

  Scalarization needs one weight per task (here 1..K, normalised); the
  others take the same hyperparameters for every K.
  """
  if name == "scalarization":
    raw = np.arange(1, num_tasks + 1, dtype=np.float64)
    return {"weights": tuple(raw / raw.sum())}
  return {
      "dwa": {"steps_per_epoch": 2},
      "uw_so": {"temperature": 2.0},
      "rlw": {"seed": 3},
  }.get(name, {})


METHODS = ("dwa", "ew", "gls", "imtl_l", "rlw", "scalarization", "uw", "uw_o",
           "uw_so")


def positive_losses(seed: int, num_tasks: int, *, low: float = 1e-2,
                    high: float = 1e2, batch: tuple[int, ...] = (),
                    dtype=np.float32) -> np.ndarray:
  """Log-uniform positive losses of shape ``batch + (num_tasks,)``."""
  rng = np.random.default_rng(seed)
  logs = rng.uniform(np.log(low), np.log(high), size=batch + (num_tasks,))
  return np.exp(logs).astype(dtype)


# Degenerate cases every method must handle without NaN or Inf when the
# losses are positive: one task, equal losses, and losses spanning 16 orders
# of magnitude (1 / (1e-8 + eps) = 5e7 must not overflow a softmax).
DEGENERATE = {
    "one_task": np.array([0.7]),
    "equal": np.array([1.3, 1.3, 1.3]),
    "wide_range": np.array([1e-8, 1e-4, 1.0, 1e4, 1e8]),
    "tiny": np.array([1e-8, 1e-8]),
    "huge": np.array([1e8, 1e8, 1e8]),
}


@functools.lru_cache(maxsize=None)
def _method(name: str, num_tasks: int) -> weighting.Weighting:
  # One Weighting per method and K: its apply is then the same function from
  # test to test, and jax.jit's cache (keyed on the function) is reused.
  return weighting.get(name, **hparams(name, num_tasks))


@functools.lru_cache(maxsize=None)
def _jitted(fn):
  return jax.jit(fn)


def build(name: str, num_tasks: int, *, seed: int = 0, warm: bool = True,
          dtype=jnp.float32):
  """``(weighting, params, state)`` for a registered method with K tasks.

  With ``warm=True`` the learnable parameters are moved off their init (so a
  weight equal to 1 everywhere cannot hide a bug) and DWA is run through its
  first two epochs, so that its weights come from the ratio rule.
  """
  method = _method(name, num_tasks)
  params, state = method.init(num_tasks)
  if not warm:
    return method, params, state
  rng = np.random.default_rng(seed + 1000)
  params = jax.tree.map(
      lambda p: jnp.asarray(rng.uniform(-1.0, 1.0, p.shape), p.dtype), params)
  if name == "dwa":
    for step in range(2 * hparams(name, num_tasks)["steps_per_epoch"]):
      losses = positive_losses(seed + step, num_tasks, low=0.5, high=2.0)
      state = _jitted(method.apply)(params, state,
                                    jnp.asarray(losses, dtype)).state
  return method, params, state


# Hypothesis: per-task loss vectors with bounded size and range.
def loss_vectors(min_tasks: int = 1, max_tasks: int = 4, low: float = 1e-3,
                 high: float = 1e3) -> st.SearchStrategy[np.ndarray]:
  """Strategy of float32 positive loss vectors of length min..max_tasks."""
  element = st.floats(low, high, allow_nan=False, allow_infinity=False)
  return st.lists(element, min_size=min_tasks, max_size=max_tasks).map(
      lambda xs: np.asarray(xs, np.float32))


def permutations_of(vector: np.ndarray) -> st.SearchStrategy[np.ndarray]:
  """Strategy of index permutations for ``vector``."""
  return st.permutations(list(range(len(vector)))).map(np.asarray)
