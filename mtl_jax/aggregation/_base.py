r"""Shared types and input checks of the gradient-space methods.

Notation: :math:`K` tasks, :math:`J \in \mathbb{R}^{K \times P}` the Jacobian
of the task losses with respect to the :math:`P` shared parameters (row
:math:`g_k = \nabla L_k`), :math:`G = J J^\top` its :math:`K \times K` Gramian.

Every method of :mod:`mtl_jax.aggregation` comes in two forms:

* a pure function of the Gramian returning the ``(K,)`` weights :math:`w` of
  the update direction :math:`d = J^\top w` (TorchJD's ``Weighting``
  convention): ``mgda_weights(G)``, ``upgrad_weights(G)``... A user who has a
  Jacobian gets the direction with :func:`combine`;
* a factory (``upgrad()``, ``cagrad(c=0.4)``) returning a pair of pure
  functions in the style of ``optax.GradientTransformation`` and of
  :class:`mtl_jax.weighting.Weighting`, of one of two types:

  - :class:`Aggregator` (almost every method): ``apply(params, state, G, *,
    losses=None) -> GradientWeights(weights, state)``;
  - :class:`JacobianAggregator` (GradDrop, MoCo, DB-MTL, ExcessMTL):
    ``apply(params, state, J, *, losses=None) -> GradientDirection(direction,
    weights, state)``.

  ``init(num_tasks, *, key=None) -> (params, state)``: ``params`` is ``{}``
  except for the methods that learn (GradNorm's logits, IMTL's loss scales);
  ``state`` is a NamedTuple that records :math:`K` and whatever the method
  carries from step to step (Nash-MTL's warm start, GradVac's averages, the
  PRNG key of PCGrad).

The factories check the hyperparameters, once, when the method is built; the
pure functions check the shapes of their array inputs and trust their
hyperparameters.

The methods never see the model: the engine (:mod:`mtl_jax.train`) computes
:math:`J` of the shared parameters in the compiled step, averages it over the
devices, forms :math:`G`, calls ``apply`` and combines :math:`d = J^\top w`
(or takes the direction of a :class:`JacobianAggregator`).
The weights carry no gradient.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import _checks

# One stateless state for both families, re-exported here.
from mtl_jax.weighting._base import (
  StatelessState,  # noqa: F401
  check_num_tasks,
  method_repr,
  stateless,  # noqa: F401
)

Params = Any  # a pytree of learnable parameters ({} for every method here)
State = Any   # a NamedTuple of non-learnable state


class GradientWeights(NamedTuple):
  """What :attr:`Aggregator.apply` returns.

  ``weights`` and ``state`` are always there. The two optional fields are the
  method's hooks into the rest of the step, ``None`` when unused:

  * ``head_weights``: the ``(K,)`` multiplier of each task's own gradient in
    the task-specific parameters (1 when ``None``, as TorchJD's
    ``mtl_backward``; LibMTL's IMTL scales the heads by :math:`e^{s_k}`);
  * ``aux_loss``: a scalar, differentiable in ``params``, whose gradient
    trains the method's own parameters (GradNorm's logits, IMTL's loss
    scales) with the model's optimiser; ``None`` gives them zero gradients.
  """
  weights: jax.Array  # (K,) w: the update direction is d = J^T w; no gradient
  state: State        # the new state
  head_weights: jax.Array | None = None  # (K,) on the heads' gradients
  aux_loss: jax.Array | None = None      # () trains params


class GradientDirection(NamedTuple):
  """What :attr:`JacobianAggregator.apply` returns: the update itself.

  ``weights`` are what the method reports per task (the step logs them);
  ``head_weights`` is the optional hook of :class:`GradientWeights`.
  """
  direction: jax.Array  # (P,) the update of the shared parameters
  weights: jax.Array    # (K,) reported per task; no gradient
  state: State          # the new state
  head_weights: jax.Array | None = None  # (K,) on the heads' gradients


class InitFn(Protocol):

  def __call__(self, num_tasks: int, *,
               key: jax.Array | None = None) -> tuple[Params, State]:
    ...


class ApplyFn(Protocol):

  def __call__(self, params: Params, state: State, gramian: jax.Array, *,
               losses: jax.Array | None = None) -> GradientWeights:
    ...


class Aggregator(NamedTuple):
  r"""A gradient-space method that reads the Gramian and returns weights.

  A pair of pure functions (optax style): ``init(num_tasks, *, key)`` and
  ``apply(params, state, G, *, losses) -> GradientWeights``; the engine
  combines :math:`d = J^\top w`.

  ``batch_splits``: a method that needs gradients from independent batches
  (SDMGrad, MoDo: three) asks for the batch to be split. The train step
  splits each batch into ``batch_splits`` interleaved parts (example
  :math:`i` goes to part :math:`i \bmod s`), computes the :math:`sK` losses
  (part-major: part 0's K tasks, then part 1's...) and gives ``apply`` the
  :math:`sK \times sK` Gramian of their gradients; ``apply`` returns
  :math:`sK` weights.

  ``name`` and ``hparams`` record how :func:`mtl_jax.get` built the method
  (every argument of its factory, defaults included); ``repr`` shows them.
  """
  init: InitFn
  apply: ApplyFn
  batch_splits: int = 1
  name: str = ""                            # the registry name
  hparams: tuple[tuple[str, Any], ...] = ()  # every factory argument

  __repr__ = method_repr


class JacobianAggregator(NamedTuple):
  r"""A gradient-space method that reads the Jacobian and returns a direction.

  ``apply(params, state, J, *, losses) -> GradientDirection`` takes the flat
  ``(K, P)`` Jacobian of the shared parameters (GradDrop's per-coordinate
  rule, the ``(K, P)`` buffers of MoCo, DB-MTL and ExcessMTL); the train step
  gives every device the whole :math:`J`, in ``mode="params"`` only. ``init``
  also takes ``num_params=P`` when the method keeps ``(K, P)`` buffers.
  """
  init: InitFn
  apply: Callable[..., GradientDirection]
  name: str = ""
  hparams: tuple[tuple[str, Any], ...] = ()

  __repr__ = method_repr


GradientMethod = Aggregator | JacobianAggregator
"""Either kind of gradient-space method (usable in ``isinstance``)."""


def check_method(method: Any) -> None:
  """Raises a ValueError for a gradient-space method built wrongly (a
  ``batch_splits`` that is not a positive integer, ``init``/``apply`` that
  are not callable); :func:`mtl_jax.get` and the train step call it."""
  if not isinstance(method, GradientMethod):
    raise ValueError(
        "expected a gradient-space method (mtl_jax.aggregation.Aggregator or "
        f"JacobianAggregator), got {type(method).__name__}.")
  if not (callable(method.init) and callable(method.apply)):
    raise ValueError(f"{type(method).__name__}: init and apply must be "
                     "functions.")
  splits = getattr(method, "batch_splits", 1)
  if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
    raise ValueError(f"Aggregator.batch_splits must be a positive integer, "
                     f"got {splits!r}.")


def _concrete(x: Any) -> np.ndarray | None:
  """``x`` as a numpy array, or None when it is traced."""
  try:
    return np.asarray(x)
  except (TypeError, jax.errors.ConcretizationTypeError,
          jax.errors.TracerArrayConversionError):
    return None


def check_gramian(gramian: jax.Array, num_tasks: int | None,
                  method: str) -> None:
  """Raises a ValueError unless ``gramian`` is a (K, K) floating matrix.

  Shapes are static under jit, so this runs in Python at trace time.
  """
  shape = jnp.shape(gramian)
  if len(shape) != 2 or shape[0] != shape[1]:
    raise ValueError(
        f"{method}: the Gramian must be a square (num_tasks, num_tasks) "
        f"matrix G = J J^T, got shape {shape}. From a (num_tasks, P) "
        "Jacobian J, pass J @ J.T (mtl_jax.aggregation.gramian(J)).")
  if num_tasks is not None and shape[0] != num_tasks:
    raise ValueError(
        f"{method}: got a {shape[0]}x{shape[0]} Gramian but the method was "
        f"initialised for {num_tasks} tasks. Give one Jacobian row per task, "
        "in the order of init, or init the method with the right num_tasks.")
  if not jnp.issubdtype(jnp.result_type(gramian), jnp.floating):
    raise ValueError(
        f"{method}: the Gramian must be floating point, got dtype "
        f"{jnp.result_type(gramian)}.")


def require_losses(losses: Any, num_tasks: int | None,
                   method: str) -> jax.Array:
  """``losses`` as a ``(K,)`` array with no gradient, or a ValueError saying
  how to pass them (the methods that need them: MoCo, DB-MTL, GradNorm,
  IMTL)."""
  if losses is None:
    raise ValueError(
        f"{method} needs the task losses: apply(params, state, inputs, "
        "losses=L) with L of shape (num_tasks,). The train step of "
        "mtl_jax.train passes them.")
  shape = jnp.shape(losses)
  if len(shape) != 1 or (num_tasks is not None and shape[0] != num_tasks):
    raise ValueError(
        f"{method}: losses must have shape ({num_tasks},), one loss per task, "
        f"got shape {shape}.")
  return jax.lax.stop_gradient(jnp.asarray(losses))


def check_split_gramian(gramian: jax.Array, splits: int, num_tasks: int,
                        method: str) -> None:
  """Like :func:`check_gramian` for a method on ``splits`` parts of the batch
  (``Aggregator.batch_splits``): the Gramian has ``splits * K`` rows."""
  shape = jnp.shape(gramian)
  if len(shape) == 2 and shape[0] == shape[1] != splits * num_tasks:
    raise ValueError(
        f"{method} reads the Gramian of the task gradients on {splits} "
        f"independent parts of the batch: {splits} x {num_tasks} tasks = "
        f"{splits * num_tasks} rows (part-major), got {shape[0]}x{shape[1]}. "
        "The train step splits the batch by itself (batch_splits); by hand, "
        f"stack the Jacobians of {splits} independent batches.")
  check_gramian(gramian, splits * num_tasks, method)


def check_nonnegative(value: Any, name: str, method: str,
                      hint: str = "") -> None:
  """Raises a ValueError for a known hyperparameter that is not >= 0."""
  _checks.number(value, name, method, low=0, hint=hint)


def check_seed(seed: Any, method: str) -> Any:
  """``seed`` as an int (the seed of ``jax.random.PRNGKey``), or a
  ValueError."""
  return _checks.integer(seed, "seed", method,
                         hint="It seeds jax.random.PRNGKey(seed).")


def check_pref_vector(pref_vector: Any, num_tasks: int | None,
                      method: str) -> None:
  """Raises a ValueError for a preference vector that is not (K,) and >= 0."""
  if pref_vector is None:
    return
  _checks.numeric(pref_vector, "pref_vector", method,
                  "None or a vector of finite numbers >= 0, one per task")
  shape = np.shape(pref_vector) if isinstance(pref_vector, (list, tuple)) \
      else jnp.shape(pref_vector)
  if len(shape) != 1:
    raise ValueError(
        f"{method}: pref_vector must be a vector with one entry per task, got "
        f"shape {shape}.")
  if num_tasks is not None and shape[0] != num_tasks:
    raise ValueError(
        f"{method}: pref_vector has {shape[0]} entries but there are "
        f"{num_tasks} tasks. Give one non-negative entry per task, or None "
        "for the default 1/K.")
  concrete = _concrete(pref_vector)
  if concrete is not None and not np.all(np.isfinite(concrete) &
                                         (concrete >= 0)):
    raise ValueError(
        f"{method}: pref_vector must be finite and >= 0, got "
        f"{concrete.tolist()}. A preference is a non-negative share per task.")


def pref_or_mean(pref_vector: Any, num_tasks: int,
                 dtype: jnp.dtype) -> jax.Array:
  """``pref_vector`` as an array, or the uniform preference ``1/K``."""
  if pref_vector is None:
    return jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
  return jnp.asarray(pref_vector, dtype)


def float_dtype(gramian: jax.Array) -> jnp.dtype:
  return jnp.result_type(gramian)


def check_jacobian(jacobian: jax.Array, num_tasks: int | None,
                   num_params: int | None, method: str) -> None:
  """Raises a ValueError unless ``jacobian`` is a floating (K, P) matrix."""
  shape = jnp.shape(jacobian)
  if len(shape) != 2:
    raise ValueError(
        f"{method}: the Jacobian must be a (num_tasks, num_params) matrix, "
        f"got shape {shape}. Flatten each task's gradient into one row.")
  if num_tasks is not None and shape[0] != num_tasks:
    raise ValueError(
        f"{method}: got a Jacobian of {shape[0]} rows but the method was "
        f"initialised for {num_tasks} tasks. Give one row per task, in the "
        "order of init.")
  if num_params is not None and shape[1] != num_params:
    raise ValueError(
        f"{method}: got a Jacobian of {shape[1]} columns but the method's "
        f"buffers were built for num_params={num_params}. Build the train "
        "state with the same task_params as the train step (the shared "
        "parameters are the columns), or init with the right num_params.")
  if not jnp.issubdtype(jnp.result_type(jacobian), jnp.floating):
    raise ValueError(f"{method}: the Jacobian must be floating point, got "
                     f"dtype {jnp.result_type(jacobian)}.")


def check_num_params(num_params: Any, method: str) -> int:
  """``num_params`` as an int, or a ValueError saying where it comes from."""
  if num_params is None:
    raise ValueError(
        f"{method} keeps (num_tasks, num_params) buffers: its init needs "
        "num_params, the number of shared parameters. "
        "mtl_jax.train.create_train_state passes it (give it the same "
        "task_params as make_train_step); by hand: "
        "init(num_tasks, num_params=P).")
  return _checks.integer(num_params, "num_params", method, low=1)


def apply_with_grads(method: GradientMethod, params: Params, state: State,
                     inputs: jax.Array, losses: jax.Array | None
                     ) -> tuple[GradientWeights | GradientDirection, Params]:
  """``method.apply`` and the gradient of its ``aux_loss`` in ``params``.

  The gradient is zero where the method has no ``aux_loss``.
  """

  def objective(p):
    out = method.apply(p, state, inputs, losses=losses)
    aux = getattr(out, "aux_loss", None)
    aux = jnp.zeros((), jnp.float32) if aux is None else aux
    return jnp.asarray(aux, jnp.float32), out

  if not jax.tree.leaves(params):
    return method.apply(params, state, inputs, losses=losses), params
  (_, out), grads = jax.value_and_grad(objective, has_aux=True)(params)
  return out, grads


def gramian(jacobian: Any) -> jax.Array:
  r"""``J J^T`` of a ``(K, ...)`` Jacobian, or of a pytree of ``(K, ...)``
  blocks (one per parameter), summed block by block without concatenating
  them; every axis after the first is flattened. Accumulated in float32 (or
  float64)."""
  leaves = jax.tree.leaves(jacobian)
  num_tasks = jnp.shape(leaves[0])[0]
  out = jnp.zeros((num_tasks, num_tasks),
                  jnp.promote_types(jnp.result_type(leaves[0]), jnp.float32))
  for leaf in leaves:
    flat = jnp.reshape(leaf, (num_tasks, -1)).astype(out.dtype)
    out = out + flat @ flat.T
  return out


def combine(jacobian: Any, weights: jax.Array) -> Any:
  r"""The update direction :math:`d = J^\top w` of a ``(K, ...)`` Jacobian,
  or block by block of a pytree of them (each ``(K, ...)`` leaf becomes
  ``(...)``, in its own dtype)."""
  return jax.tree.map(
      lambda leaf: jnp.tensordot(weights.astype(leaf.dtype), leaf, axes=1),
      jacobian)


def gramian_aggregator(weights_fn: Callable[[State, jax.Array],
                                            tuple[jax.Array, State]],
                       init_state: Callable[[int, jax.Array | None], State],
                       method: str,
                       num_tasks_of: Callable[[State], int] = (
                           lambda state: state.tasks.shape[-1]),
                       check_init: Callable[[int], None] | None = None,
                       ) -> Aggregator:
  """Builds an :class:`Aggregator` from ``weights_fn(state, G) -> (w, state)``.

  ``apply`` checks the Gramian against the :math:`K` recorded in the state
  (``num_tasks_of``), stops its gradient and casts the weights to its dtype.
  ``check_init(num_tasks)`` validates hyperparameters that depend on K (a
  preference vector's length) and raises at ``init``.
  """

  def init(num_tasks: int, *, key: jax.Array | None = None):
    num_tasks = check_num_tasks(num_tasks)
    if check_init is not None:
      check_init(num_tasks)
    return {}, init_state(num_tasks, key)

  def apply(params, state, gramian, *, losses=None):
    del params, losses
    check_gramian(gramian, num_tasks_of(state), method)
    gramian = jax.lax.stop_gradient(gramian)
    weights, new_state = weights_fn(state, gramian)
    weights = jax.lax.stop_gradient(weights.astype(float_dtype(gramian)))
    return GradientWeights(weights, new_state)

  return Aggregator(init, apply)
