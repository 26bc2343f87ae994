"""Shared types and input checks of the loss-weighting methods.

Every method of :mod:`mtl_jax.weighting` comes in two forms:

* a pure function of the per-task losses (``uw_so_weights``, ``gls_loss``...),
  for users who want the formula and nothing else;
* a factory (``uw_so(temperature=2.0)``) returning a :class:`Weighting`, a pair
  of pure functions in the style of ``optax.GradientTransformation``:

  - ``init(num_tasks, *, key=None) -> (params, state)``: ``params`` is the pytree
    of learnable parameters (``{}`` when there are none; UW's ``log_vars``),
    meant to live in the Flax param tree under its own key, for example
    ``params["method"]``, so the optimiser trains it with the model;
    ``state`` is the non-learnable state (DWA's epoch averages, RLW's key),
    a NamedTuple that always records :math:`K` in its shapes
    (:class:`StatelessState` for a method that carries nothing);
  - ``apply(params, state, losses) -> WeightedLoss(total, weights, state)``,
    which rejects, at trace time, losses whose count is not that :math:`K`.

The factories check the hyperparameters, once, when the method is built; the
pure functions check the shapes of their array inputs and trust their
hyperparameters.

``WeightedLoss.weights`` is always the effective multiplier of each task loss,
``d total / d losses``, with no gradient attached. For the linear methods it is
the weight vector itself; for GLS it is ``GLS(L) / (K L_k)``. This makes the
weights comparable across methods in logs and plots, and it is what a
data-parallel train step needs to linearise a method around the globally
averaged losses.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import _checks

Params = Any   # a pytree of learnable weighting parameters
State = Any    # a pytree of non-learnable weighting state


class WeightedLoss(NamedTuple):
  """What :attr:`Weighting.apply` returns."""
  total: jax.Array    # () scalar to differentiate
  weights: jax.Array  # (K,) d total / d losses, stop-gradient
  state: State        # the new non-learnable state


class StatelessState(NamedTuple):
  """State of a method that carries nothing from step to step.

  It records :math:`K` in the shape of ``tasks`` so that ``apply`` can reject
  losses (or a Gramian) of the wrong size at trace time. Both families use it
  (:mod:`mtl_jax.aggregation` re-exports it).
  """
  tasks: jax.Array  # (K,) int8 zeros


class InitFn(Protocol):

  def __call__(self, num_tasks: int, *,
               key: jax.Array | None = None) -> tuple[Params, State]:
    ...


class ApplyFn(Protocol):

  def __call__(self, params: Params, state: State,
               losses: jax.Array) -> WeightedLoss:
    ...


class AfterUpdateFn(Protocol):

  def __call__(self, params: Params, state: State, losses_before: jax.Array,
               losses_after: jax.Array) -> State:
    ...


def method_repr(method: Any) -> str:
  """``name(hp=value, ...)``: how a method of either family was built (by
  :func:`mtl_jax.get`); a method built otherwise shows its type."""
  if not method.name:
    return f"{type(method).__name__}(<{len(method.hparams)} hparams>)"
  args = ", ".join(f"{k}={v!r}" for k, v in method.hparams)
  return f"{method.name}({args})"


class Weighting(NamedTuple):
  """A loss-weighting method as a pair of pure functions (optax style).

  ``after_update`` is optional: a method that learns from the effect of the
  step it weighted (FAMO) gives ``after_update(params, state, losses_before,
  losses_after) -> state``. The train step then recomputes the losses on
  the same batch at the updated parameters (one extra forward pass, no
  backward) and passes both loss vectors; ``None`` (every other method)
  costs nothing.

  ``name`` and ``hparams`` record how :func:`mtl_jax.get` built the method
  (every argument of its factory, defaults included), for logs and results;
  ``repr`` shows them: ``uw_so(temperature=2.0, eps=1e-08, ...)``.
  """
  init: InitFn
  apply: ApplyFn
  after_update: AfterUpdateFn | None = None
  name: str = ""                            # the registry name
  hparams: tuple[tuple[str, Any], ...] = ()  # every factory argument

  __repr__ = method_repr


def check_num_tasks(num_tasks: Any) -> int:
  """Returns ``num_tasks`` as an int, or raises a ValueError naming it."""
  return _checks.integer(num_tasks, "num_tasks", "init", low=1)


def check_losses_shape(losses: jax.Array, num_tasks: int | None,
                       method: str) -> None:
  """Raises a ValueError unless ``losses`` holds one loss per task.

  Shapes are static under jit, so this runs in Python at trace time.
  """
  shape = jnp.shape(losses)
  if len(shape) != 1:
    raise ValueError(
        f"{method}: losses must be a vector of shape (num_tasks,), got shape "
        f"{shape}. Reduce each task loss to a scalar and stack them; use "
        "jax.vmap for a batch of loss vectors.")
  if num_tasks is not None and shape[0] != num_tasks:
    raise ValueError(
        f"{method}: got {shape[0]} losses but the method was initialised for "
        f"{num_tasks} tasks. Pass one loss per task, in the order of init, or "
        f"init the method with num_tasks={shape[0]}.")


def recorded_num_tasks(state: Any, method: str) -> int:
  """The :math:`K` that ``init`` recorded in ``state`` (``state.tasks``)."""
  try:
    return jnp.shape(state.tasks)[-1]
  except (AttributeError, IndexError):
    raise ValueError(
        f"{method}: apply got a state of type {type(state).__name__} with no "
        "record of the number of tasks; pass the state that this method's "
        "init(num_tasks) returned (or the one the last apply returned)."
    ) from None


def check_temperature(temperature: Any, method: str) -> None:
  """Raises a ValueError for a temperature that is known and not > 0.

  ``inf`` is allowed: the limit of equal weights. A traced temperature
  (swept with ``jax.vmap``) cannot be checked and passes.
  """
  _checks.number(
      temperature, "temperature", method, low=0, low_open=True,
      allow_inf=True,
      hint="Small T concentrates the weight on one task; large T tends to "
      "equal weights (the paper's best: 2 to 3 on NYUv2, 20 to 48 on "
      "Cityscapes).")


def check_eps(eps: Any, method: str) -> None:
  _checks.number(eps, "eps", method, low=0,
                 hint="It guards 1 / (L + eps) against division by zero; "
                 "the authors use 1e-8.")


def _raise_on_bad_losses(losses: np.ndarray, method: str) -> None:
  losses = np.asarray(losses)
  bad = ~(np.isfinite(losses) & (losses > 0))
  if bad.any():
    idx = np.flatnonzero(bad.reshape(-1)).tolist()
    raise ValueError(
        f"{method} needs positive, finite losses (it weights tasks by 1/L), "
        f"got {losses.tolist()}; bad tasks at flat index {idx}. Make each task "
        "loss strictly positive (e.g. add a constant offset to losses that can "
        "reach zero) and look for the NaN or Inf upstream.")


def check_positive_losses(losses: jax.Array, method: str) -> None:
  """Raises when a loss is zero, negative or non-finite.

  Works eagerly and under ``jit``/``vmap``: traced values are checked on the
  host through ``jax.debug.callback``, so the error surfaces as a
  ``JaxRuntimeError`` carrying this message. That costs one host round trip
  per call, which is why the check is off unless asked for
  (``check_losses=True`` in the factories).
  """
  jax.debug.callback(_raise_on_bad_losses, losses, method=method)


def weighted_total(weights: jax.Array, losses: jax.Array) -> jax.Array:
  """``sum_k sg(w_k) L_k``: the total whose gradient in ``L`` is ``w``."""
  return jnp.sum(jax.lax.stop_gradient(weights) * losses, axis=-1)


def fixed_weighting(weights_fn: Callable[[Params, State, jax.Array],
                                         tuple[jax.Array, State]],
                    init_state: Callable[[int, jax.Array | None], State],
                    method: str,
                    num_tasks: int | None = None,
                    check: Callable[[jax.Array], None] | None = None,
                    num_tasks_of: Callable[[State], int] | None = None,
                    ) -> Weighting:
  """Builds a :class:`Weighting` with no learnable parameters.

  ``weights_fn(params, state, losses) -> (weights, new_state)`` computes the
  weights; the total is ``sum_k sg(w_k) L_k``. ``apply`` checks the losses
  against the :math:`K` recorded in the state (``num_tasks_of(state)``;
  by default ``state.tasks``), at trace time.
  """
  fixed_num_tasks = num_tasks

  def recorded(state: State) -> int:
    if num_tasks_of is None:
      return recorded_num_tasks(state, method)
    return num_tasks_of(state)

  def init(num_tasks: int, *, key: jax.Array | None = None):
    num_tasks = check_num_tasks(num_tasks)
    if fixed_num_tasks is not None and num_tasks != fixed_num_tasks:
      raise ValueError(
          f"{method}: init got num_tasks={num_tasks} but the method was built "
          f"for {fixed_num_tasks} tasks (one per weight). Init it with "
          f"num_tasks={fixed_num_tasks}, or build it with {num_tasks} weights.")
    return {}, init_state(num_tasks, key)

  def apply(params, state, losses):
    check_losses_shape(losses, recorded(state), method)
    if check is not None:
      check(losses)
    weights, new_state = weights_fn(params, state, losses)
    weights = jax.lax.stop_gradient(weights.astype(jnp.result_type(losses)))
    return WeightedLoss(weighted_total(weights, losses), weights, new_state)

  return Weighting(init, apply)


def stateless(num_tasks: int, key: jax.Array | None) -> StatelessState:
  del key
  return StatelessState(jnp.zeros((num_tasks,), jnp.int8))
