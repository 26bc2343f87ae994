r"""The pure train and eval steps, identical on one device and across many.

Data-parallel maths. Each device computes its local per-task losses
:math:`\ell` (K,) on its shard of the batch. Inside the differentiated
function the step replaces them by

.. math::

  \tilde L = \ell - \mathrm{sg}(\ell) + \mathrm{pmean}(\mathrm{sg}(\ell)),

whose *value* is the global (device-averaged) loss :math:`L` and whose
*gradient* flows through the local losses. The method sees
:math:`\tilde L`, so its weights, learnable parameters and state updates are
those of the whole batch, and the same on every device (RLW draws the same
weights, DWA's epoch means agree). Every method computes its weights from
stop-gradient losses, so

.. math::

  \frac{\partial\,\mathrm{total}}{\partial\theta}
    = \sum_k f_k'(L)\,\frac{\partial \ell_k}{\partial\theta},

and one ``pmean`` of the gradients gives
:math:`\sum_k f_k'(L)\,\partial L_k/\partial\theta`: exactly the gradient of
one device holding the whole batch, for linear methods (EW, UW, DWA...) and
nonlinear ones (GLS) alike. This holds when every device has the same number
of examples and each task loss is a mean over them. Caveat: a masked mean
(e.g. depth over valid pixels) whose valid count differs across devices is
averaged per device, which weights the devices' pixels unequally; the result
is then close to, not equal to, the whole-batch loss.

Collectives per step: one all-reduce of the K losses (before the weights),
one of the gradients (all params, the model's and the method's), and one of the
floating model state (e.g. batch statistics) when there is any. XLA may
combine them into fewer ops; :func:`mtl_jax.train.count_collectives` reads
them from the compiled HLO.

Mixed precision. With ``compute_dtype=jnp.bfloat16`` the model params,
model state and the floating inputs are cast to bfloat16 for the forward
pass; the model outputs are cast back to float32 before the task losses, so
the losses, the weights, the method's parameters, the master params and the
optimiser state all stay float32.

Two paths from losses to gradients (:mod:`mtl_jax.train.gradients`): a
loss-weighting method (:mod:`mtl_jax.weighting`) takes the weighted-sum path,
one backward pass of its total; a gradient-space method
(:mod:`mtl_jax.aggregation`) takes the Jacobian path, the per-task gradients
of the shared parameters in one batched backward pass
(:mod:`mtl_jax.train.jacobian`). Both see the global losses and give every
device the gradients of the whole batch.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mtl_jax._registry import Method
from mtl_jax.aggregation import GradientMethod
from mtl_jax.train.gradients import (
  GradientFn,
  Gradients,
  LossesFn,
  global_losses,
  jacobian_gradients,
  pmean,
  weighted_sum_gradients,
)
from mtl_jax.train.jacobian import JacobianOptions
from mtl_jax.train.state import TrainState
from mtl_jax.weighting import Weighting

PyTree = Any
Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]

ModelApply = Callable[..., tuple[PyTree, PyTree]]
"""``model_apply(variables, batch, *, train, rngs) -> (outputs, new_model_state)``.

``variables = {"params": params["model"], **model_state}`` (plus
``"perturbations"`` in the Jacobian's representation mode); the returned
state has the structure of ``model_state`` (``{}`` when there is none).
"""

TaskLossFn = Callable[[PyTree, Batch], jax.Array]
"""``task_loss_fn(outputs, batch) -> (K,)`` per-task losses, batch means."""

__all__ = (
  "GradientFn",
  "Gradients",
  "LossesFn",
  "global_losses",
  "jacobian_gradients",
  "pmean",
  "weighted_sum_gradients",
)


def _is_float(x: Any) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def cast_floating(tree: PyTree, dtype: jnp.dtype | None) -> PyTree:
  """Casts the floating leaves of ``tree`` to ``dtype`` (no-op for None)."""
  if dtype is None:
    return tree
  return jax.tree.map(lambda x: x.astype(dtype) if _is_float(x) else x, tree)


def _pmean_floating(tree: PyTree, axis_name: str | None) -> PyTree:
  return jax.tree.map(
      lambda x: pmean(x, axis_name) if _is_float(x) else x, tree)


def _all_finite(tree: PyTree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if _is_float(x)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _select(ok: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _step_rngs(rng: jax.Array, rng_names: Sequence[str],
               axis_name: str | None) -> dict[str, jax.Array]:
  if axis_name is not None:  # different dropout masks on different shards
    rng = jax.random.fold_in(rng, lax.axis_index(axis_name))
  return {name: jax.random.fold_in(rng, i) for i, name in enumerate(rng_names)}


def _forward(model_apply: ModelApply, task_loss_fn: TaskLossFn,
             model_params: PyTree, model_state: PyTree, batch: Batch, *,
             train: bool, rngs: Mapping[str, jax.Array],
             compute_dtype: jnp.dtype | None,
             perturbations: PyTree | None = None,
             ) -> tuple[jax.Array, PyTree, PyTree]:
  """Model then task losses; returns (float32 losses, outputs, model state)."""
  variables = {"params": cast_floating(model_params, compute_dtype),
               **cast_floating(model_state, compute_dtype)}
  if perturbations is not None:
    variables["perturbations"] = perturbations
  outputs, new_model_state = model_apply(
      variables, cast_floating(batch, compute_dtype), train=train, rngs=rngs)
  outputs = cast_floating(outputs, jnp.float32)
  losses = jnp.asarray(task_loss_fn(outputs, batch), jnp.float32)
  if losses.ndim != 1:
    raise ValueError(
        f"task_loss_fn must return a (num_tasks,) vector of batch-mean "
        f"losses, got shape {losses.shape}.")
  new_model_state = jax.tree.map(lambda new, old: new.astype(old.dtype),
                                 new_model_state, model_state)
  return losses, outputs, new_model_state


def batch_part(batch: Batch, part: int, splits: int) -> Batch:
  """Examples ``part, part + splits, ...`` of a (per-device) batch.

  Interleaved parts make N devices split a global batch exactly as one
  device does, when each device's batch is divisible by ``splits``.
  """
  size = jax.tree.leaves(batch)[0].shape[0]
  if size % splits:
    raise ValueError(
        f"this method splits each device's batch into {splits} parts "
        f"(independent gradient samples), but the batch per device has "
        f"{size} examples. Use a per-device batch size divisible by "
        f"{splits}.")
  return jax.tree.map(lambda x: x[part::splits], batch)


def _gradient_path(method: Method, gradient_fn: GradientFn | None,
                   jacobian: JacobianOptions | None) -> GradientFn:
  """The :data:`GradientFn` of ``method``, built once with the step."""
  if gradient_fn is not None:
    if jacobian is not None:
      raise ValueError(
          "jacobian= configures the built-in Jacobian path; a custom "
          "gradient_fn replaces it. Pass one or the other.")
    return gradient_fn
  if isinstance(method, GradientMethod):
    return jacobian_gradients(method, jacobian)
  if not isinstance(method, Weighting):
    raise ValueError(
        f"the method must come from mtl_jax.get(...) (a Weighting or an "
        f"a gradient-space method), got {type(method).__name__}.")
  if jacobian is not None:
    raise ValueError(
        "jacobian= only applies to gradient-space methods "
        "(mtl_jax.aggregation); this method is a loss weighting, which needs "
        "one backward pass of its total. Drop it, or pick a gradient-space "
        "method.")
  return weighted_sum_gradients(method)


def _perturbations_fn(model_apply: ModelApply,
                      jacobian: JacobianOptions | None,
                      compute_dtype: jnp.dtype | None):
  """``(state, batch) -> zeros`` of the marked features in the Jacobian's
  features mode; ``None`` otherwise."""
  if jacobian is None or jacobian.mode != "features":
    return None
  if not hasattr(model_apply, "init_perturbations"):
    raise ValueError(
        "JacobianOptions(mode='features') needs a model_apply that can list "
        "the shared features the model marks with self.perturb(name, x): "
        "build it with mtl_jax.train.module_apply_fn(module) (linen) or "
        "mtl_jax.nnx.model_apply_fn(model) (NNX), or give model_apply an "
        "init_perturbations(variables, batch) attribute.")

  def perturbations(state: TrainState, batch: Batch) -> PyTree:
    variables = {"params": cast_floating(state.params["model"], compute_dtype),
                 **cast_floating(state.model_state, compute_dtype)}
    return model_apply.init_perturbations(
        variables, cast_floating(batch, compute_dtype))

  return perturbations


def _guarded(state: TrainState, rng: jax.Array, out: Gradients,
             params: PyTree, opt_state: PyTree, model_state: PyTree,
             method_state: PyTree) -> tuple[TrainState, Metrics]:
  """The non-finite guard: the new state where the step is finite, the old
  one (with ``step``, ``rng`` and the skip counters advanced) where it is
  not; and the step's metrics."""
  losses_finite = jnp.isfinite(out.losses)
  grads_finite = _all_finite(out.grads)
  task_grads_finite = (jnp.broadcast_to(grads_finite, losses_finite.shape)
                       if out.task_grads_finite is None
                       else out.task_grads_finite)
  ok = jnp.all(losses_finite) & jnp.isfinite(out.total) & grads_finite
  consecutive = jnp.where(ok, 0, state.consecutive_skips + 1)
  new_state = state.replace(
      step=state.step + 1,
      params=_select(ok, params, state.params),
      opt_state=_select(ok, opt_state, state.opt_state),
      model_state=_select(ok, model_state, state.model_state),
      method_state=_select(ok, method_state, state.method_state),
      rng=rng,
      consecutive_skips=consecutive.astype(jnp.int32),
      total_skips=state.total_skips + (~ok).astype(jnp.int32))
  metrics = {
      "step": new_state.step,
      "total": out.total.astype(jnp.float32),
      "losses": out.losses,
      "weights": out.weights.astype(jnp.float32),
      "losses_finite": losses_finite,
      "task_grads_finite": task_grads_finite,
      "grads_finite": grads_finite,
      "skipped": ~ok,
      "consecutive_skips": new_state.consecutive_skips,
      "total_skips": new_state.total_skips,
      "grad_norm": optax.tree.norm(out.grads),
      "param_norm": optax.tree.norm(new_state.params),
  }
  return new_state, metrics


def make_train_step(model_apply: ModelApply, task_loss_fn: TaskLossFn,
                    method: Method,
                    optimizer: optax.GradientTransformation, *,
                    axis_name: str | None = None,
                    compute_dtype: jnp.dtype | None = None,
                    gradient_fn: GradientFn | None = None,
                    rng_names: Sequence[str] = ("dropout",),
                    jacobian: JacobianOptions | None = None,
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Builds the pure ``train_step(state, batch) -> (state, metrics)``.

  Run it under ``jax.jit`` (``axis_name=None``), ``jax.pmap(...,
  axis_name=axis_name)`` or ``jax.jit(jax.shard_map(...))`` over a mesh axis
  named ``axis_name``; :func:`pmap_step` and :func:`mesh_step` do the
  wrapping. The maths is the same in all three (module docstring).

  The method decides the path: a loss weighting (``mtl_jax.weighting``)
  differentiates its weighted total; a gradient-space method
  (``mtl_jax.aggregation``) computes the per-task Jacobian of the shared
  parameters, its weights from the Gramian and the combined update, while
  every task-specific parameter (``jacobian.task_params``) gets its own
  task's gradient (:func:`mtl_jax.train.jacobian_gradients`).

  Non-finite guard: when a global task loss, the total or a gradient is not
  finite (the check runs after the averaging, so all devices agree), the
  params, optimiser, model and method states are left unchanged,
  ``consecutive_skips`` and ``total_skips`` grow, and ``metrics`` say which
  task was bad. ``step`` and ``rng`` advance either way (the batch was
  consumed). The host loop decides when to stop (:func:`train`).

  Args:
    model_apply: see :data:`ModelApply`; :func:`module_apply_fn` adapts a
      Flax linen module, :func:`mtl_jax.nnx.model_apply_fn` an NNX model.
    task_loss_fn: ``(outputs, batch) -> (K,)`` batch-mean task losses,
      computed in float32 (outputs arrive as float32).
    method: a method of either family, from :func:`mtl_jax.get`.
    optimizer: trains ``{"model": ..., "method": ...}``
      (:func:`make_optimizer`).
    axis_name: the device axis, or ``None`` on one device / under GSPMD jit.
    compute_dtype: e.g. ``jnp.bfloat16`` to run the model in bfloat16;
      ``None`` keeps the params' dtype.
    gradient_fn: replaces the built-in path from losses to gradients (see
      :mod:`mtl_jax.train.gradients`).
    rng_names: Flax rng streams given to the model in training.
    jacobian: gradient-space methods only: the task-specific parameters,
      the mode, the chunk size and the cross-device reduction
      (:class:`~mtl_jax.train.JacobianOptions`); ``None``: the defaults
      (every parameter shared, exact, all tasks at once, reduce-scatter).

  Returns:
    ``train_step(state, batch) -> (state, metrics)`` with metrics
    ``step`` (steps done, this one included), ``total``, ``losses`` (K,),
    ``weights`` (K,), ``losses_finite`` (K,), ``task_grads_finite`` (K,),
    ``grads_finite``, ``skipped``, ``consecutive_skips``, ``total_skips``,
    ``grad_norm``, ``param_norm``; all global, identical on every device.
  """
  to_gradients = _gradient_path(method, gradient_fn, jacobian)
  perturbations_fn = _perturbations_fn(model_apply, jacobian, compute_dtype)

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng, step_rng = jax.random.split(state.rng)
    rngs = _step_rngs(step_rng, rng_names, axis_name)

    def losses_fn(model_params, perturbations=None, part=None):
      data, keys = batch, rngs
      if part is not None:  # (j, s): part j of s (SDMGrad, MoDo)
        data = batch_part(batch, *part)
        keys = {n: jax.random.fold_in(k, part[0]) for n, k in rngs.items()}
      losses, _, model_state = _forward(
          model_apply, task_loss_fn, model_params, state.model_state, data,
          train=True, rngs=keys, compute_dtype=compute_dtype,
          perturbations=perturbations)
      return losses, model_state

    perturbations = (None if perturbations_fn is None
                     else perturbations_fn(state, batch))
    out = to_gradients(losses_fn, state.params, state.method_state,
                       axis_name, perturbations)
    updates, opt_state = optimizer.update(out.grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    method_state = out.method_state
    after_update = getattr(method, "after_update", None)
    if after_update is not None:
      # FAMO's extra step: the losses of the same batch (same dropout) at
      # the updated parameters, one forward pass, no gradient.
      after, _ = losses_fn(lax.stop_gradient(params["model"]))
      after = pmean(lax.stop_gradient(after), axis_name)
      method_state = after_update(params["method"], method_state,
                                  out.losses, after)

    return _guarded(state, rng, out, params, opt_state,
                    _pmean_floating(out.model_state, axis_name), method_state)

  return train_step


def make_eval_step(model_apply: ModelApply, task_loss_fn: TaskLossFn, *,
                   weighting: Weighting | None = None,
                   axis_name: str | None = None,
                   compute_dtype: jnp.dtype | None = None,
                   ) -> Callable[[TrainState, Batch], tuple[Metrics, PyTree]]:
  """Builds ``eval_step(state, batch) -> (metrics, outputs)``.

  The model runs with ``train=False``. ``metrics["losses"]`` are the
  device-averaged task losses; with ``weighting`` also ``total`` and
  ``weights`` at the current method state (which is not advanced).
  ``outputs`` are the local float32 model outputs, for task metrics.
  A gradient-space method has no weights without the task gradients, which
  evaluation does not compute: pass ``weighting=None`` for those.
  """
  if isinstance(weighting, GradientMethod):
    raise ValueError(
        "make_eval_step(weighting=...) takes a loss-weighting method; a "
        "gradient-space method's weights need the per-task gradients, which "
        "evaluation does not compute. Pass weighting=None (the losses are "
        "still reported).")

  def eval_step(state: TrainState, batch: Batch) -> tuple[Metrics, PyTree]:
    local, outputs, _ = _forward(
        model_apply, task_loss_fn, state.params["model"], state.model_state,
        batch, train=False, rngs={}, compute_dtype=compute_dtype)
    losses = pmean(local, axis_name)
    metrics = {"losses": losses}
    if weighting is not None:
      out = weighting.apply(state.params["method"], state.method_state,
                            losses)
      metrics["total"] = out.total
      metrics["weights"] = out.weights
    return metrics, outputs

  return eval_step


PERTURBATIONS = "perturbations"


def module_apply_fn(module: Any, *, input_key: str = "image",
                    **call_kwargs: Any) -> ModelApply:
  """Adapts a Flax linen module to :data:`ModelApply`.

  The module is called as ``module.apply(variables, batch[input_key],
  train=train, **call_kwargs)`` and must return its outputs (e.g. a dict of
  per-task predictions). In training, every collection but ``params`` and
  ``perturbations`` (e.g. ``batch_stats``) is mutable and returned as the
  new model state.

  The returned function also has ``init_perturbations(variables, batch)``:
  zeros shaped like the features the module marks with
  ``self.perturb(name, x)`` for this batch, which the Jacobian's
  representation mode differentiates (computed from shapes only, no extra
  forward pass at run time).
  """

  def model_apply(variables, batch, *, train, rngs):
    collections = [name for name in variables
                   if name not in ("params", PERTURBATIONS)]
    x = batch[input_key]
    if train and collections:
      outputs, new_state = module.apply(variables, x, train=True, rngs=rngs,
                                        mutable=collections, **call_kwargs)
      return outputs, {name: new_state[name] for name in collections}
    outputs = module.apply(variables, x, train=train, rngs=rngs, **call_kwargs)
    return outputs, {name: variables[name] for name in collections}

  def perturbed(variables, batch):
    _, state = module.apply(variables, batch[input_key], train=False,
                            mutable=[PERTURBATIONS], **call_kwargs)
    return state.get(PERTURBATIONS, {})

  model_apply.init_perturbations = make_init_perturbations(perturbed, module)
  return model_apply


def make_init_perturbations(perturbed: Callable[[PyTree, Batch], PyTree],
                            model: Any) -> Callable[[PyTree, Batch], PyTree]:
  """``init_perturbations(variables, batch)`` of a :data:`ModelApply`.

  ``perturbed(variables, batch)`` runs the model (without the
  ``perturbations`` collection) and returns the features it marks with
  ``self.perturb(name, x)``; only their shapes are taken
  (``jax.eval_shape``), so no forward pass runs.

  Raises:
    ValueError: the model marks no feature (at the call).
  """

  def init_perturbations(variables, batch):
    variables = {k: v for k, v in variables.items() if k != PERTURBATIONS}
    template = jax.eval_shape(lambda: perturbed(variables, batch))
    if not jax.tree.leaves(template):
      raise ValueError(
          f"{type(model).__name__} marks no shared features: the Jacobian's "
          "representation mode (JacobianOptions(mode='features')) differentiates the "
          "outputs the model passes through self.perturb(name, x). Mark the "
          "trunk's output that way (a linen model: "
          "mtl_jax.models.mark_features), or use JacobianOptions(mode='params').")
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), template)

  return init_perturbations
