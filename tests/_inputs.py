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
      "stch": {"mu": 0.5},   # TorchJD's stateless form; warm-up: test_stch
  }.get(name, {})


METHODS = ("dwa", "ew", "famo", "gls", "imtl_l", "rlw", "scalarization", "stch",
           "uw", "uw_o", "uw_so", "uw_so_entropy", "uw_so_norm", "uw_so_rel")


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


@functools.cache
def _method(name: str, num_tasks: int) -> weighting.Weighting:
  # One Weighting per method and K: its apply is then the same function from
  # test to test, and jax.jit's cache (keyed on the function) is reused.
  return weighting.get(name, **hparams(name, num_tasks))


@functools.cache
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
  if name == "famo":  # logits off 0: weights other than 1/K
    state = state._replace(logits=jnp.asarray(
        rng.uniform(-1.0, 1.0, (num_tasks,)), state.logits.dtype))
  if name == "uw_so_norm":  # a first step on record, other than these losses
    state = state._replace(
        initial=jnp.asarray(positive_losses(seed + 7, num_tasks, low=0.5,
                                            high=4.0), state.initial.dtype),
        count=jnp.ones_like(state.count))
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


# --- Jacobians for the gradient-space methods (after TorchJD's _inputs.py) ---

# (num_tasks, num_params, rank): full-rank, rank-deficient and single rows.
JACOBIAN_SHAPES = ((1, 1, 1), (2, 5, 2), (2, 5, 1), (4, 3, 1), (4, 3, 2),
                   (4, 3, 3), (9, 11, 5), (9, 11, 9))
# Scales applied to a whole Jacobian (0 gives the zero matrix).
JACOBIAN_SCALES = (0.0, 1e-10, 1.0, 1e3, 1e5)


def conflicting_jacobian(seed: int, num_tasks: int,
                         num_params: int = 300) -> np.ndarray:
  """Float64 rows that share 8 directions plus noise: many tasks conflict and
  ``J J^T`` is ill-conditioned (benchmarks/solver_scaling.py's Gramians)."""
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((num_tasks, 8))
          @ rng.standard_normal((8, num_params))
          + 0.1 * rng.standard_normal((num_tasks, num_params)))


def jacobian(seed: int, num_tasks: int, num_params: int, rank: int, *,
             dtype=np.float32) -> np.ndarray:
  """A random ``(num_tasks, num_params)`` matrix of the given rank."""
  rng = np.random.default_rng(seed)
  left = rng.normal(size=(num_tasks, rank))
  right = rng.normal(size=(rank, num_params))
  return (left @ right).astype(dtype)


def all_jacobians(seed: int = 0, dtype=np.float32) -> list[np.ndarray]:
  """One Jacobian per entry of :data:`JACOBIAN_SHAPES`, plus zero ones."""
  out = [jacobian(seed + i, *shape, dtype=dtype)
         for i, shape in enumerate(JACOBIAN_SHAPES)]
  out += [np.zeros((3, 4), dtype), np.zeros((1, 2), dtype)]
  return out


def strongly_stationary(seed: int, num_tasks: int = 20, num_params: int = 10,
                        dtype=np.float32) -> np.ndarray:
  """A ``J`` with ``J^T w = 0`` for some ``w > 0`` (a Pareto-stationary point
  where every task takes part)."""
  rng = np.random.default_rng(seed)
  w = rng.uniform(0.5, 1.5, size=num_tasks)
  j = rng.normal(size=(num_tasks, num_params))
  j -= np.outer(w, w @ j) / (w @ w)
  return j.astype(dtype)


def non_stationary(seed: int, num_tasks: int = 20, num_params: int = 10,
                   dtype=np.float32) -> np.ndarray:
  """A ``J`` with ``J x > 0`` for some ``x``: no ``w >= 0, w != 0`` has
  ``J^T w = 0`` (Gordan), so a direction improving every task exists."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=num_params)
  j = rng.normal(size=(num_tasks, num_params))
  j *= np.sign(j @ x)[:, None]
  j += 0.1 * np.outer(np.ones(num_tasks), x) / np.linalg.norm(x)
  return j.astype(dtype)


def weakly_stationary(seed: int, num_tasks: int = 20, num_params: int = 10,
                      dtype=np.float32) -> np.ndarray:
  """A ``J`` whose first half of rows has ``A^T w_A = 0`` with ``w_A > 0``,
  and whose other half has ``B x > 0`` for an ``x`` with ``A x = 0``: some
  ``w >= 0`` has ``J^T w = 0`` but none with every entry positive."""
  rng = np.random.default_rng(seed)
  half = num_tasks // 2
  x = rng.normal(size=num_params)
  x /= np.linalg.norm(x)
  a = rng.normal(size=(half, num_params))
  a -= np.outer(a @ x, x)                       # A x = 0
  w = rng.uniform(0.5, 1.5, size=half)
  a -= np.outer(w, w @ a) / (w @ w)             # A^T w = 0 (keeps A x = 0)
  b = rng.normal(size=(num_tasks - half, num_params))
  b *= np.sign(b @ x)[:, None]
  b += 0.5 * np.outer(np.ones(num_tasks - half), x)  # B x > 0
  return np.concatenate([a, b]).astype(dtype)
