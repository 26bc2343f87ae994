r"""The pure train and eval steps, identical on one device and across many.

Data-parallel maths. Each device computes its local per-task losses
:math:`\ell` (K,) on its shard of the batch. Inside the differentiated
function the step replaces them by

.. math::

  \tilde L = \ell - \mathrm{sg}(\ell) + \mathrm{pmean}(\mathrm{sg}(\ell)),

whose *value* is the global (device-averaged) loss :math:`L` and whose
*gradient* flows through the local losses. The weighting method sees
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
one of the gradients (all params, model and weighting), and one of the
floating model state (e.g. batch statistics) when there is any. XLA may
combine them into fewer ops; :func:`mtl_jax.train.count_collectives` reads
them from the compiled HLO.

Mixed precision. With ``compute_dtype=jnp.bfloat16`` the model params,
model state and the floating inputs are cast to bfloat16 for the forward
pass; the model outputs are cast back to float32 before the task losses, so
the losses, the weights, the weighting parameters, the master params and the
optimiser state all stay float32.

Seam for gradient-space methods (PCGrad, MGDA, CAGrad, Nash-MTL). The step
is split in two:

(a) ``losses_fn(model_params) -> (local_losses (K,), new_model_state)``,
    built by the step from the model and the task loss function;
(b) an :data:`Aggregator`, ``aggregator(losses_fn, params, weighting_state,
    axis_name) -> Aggregated`` that turns it into averaged gradients.

The default, :func:`weighted_sum_aggregator`, differentiates the weighted
total. A Jacobian aggregator would plug in with the same signature and no
change to the engine::

  def jacobian_aggregator(weighting, combine):  # combine: (K, ...) -> (...)
    def aggregate(losses_fn, params, weighting_state, axis_name):
      def with_value(p):
        local, model_state = losses_fn(p)
        return local, (local, model_state)
      jac, (local, model_state) = jax.jacrev(with_value, has_aux=True)(
          params["model"])                     # per-task grads, (K, ...)
      jac, losses = pmean((jac, local), axis_name)
      out = weighting.apply(params["weighting"], weighting_state, losses)
      grads = {"model": combine(jac, out.weights),
               "weighting": ...}               # grad of out.total, as now
      return Aggregated(grads, out.total, losses, out.weights, out.state,
                        model_state)
    return aggregate

(not implemented; it costs K backward passes and a K times larger
all-reduce, which is why the loss-based methods use the default.)
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mtl_jax.train.state import TrainState
from mtl_jax.weighting import Weighting

PyTree = Any
Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]

ModelApply = Callable[..., tuple[PyTree, PyTree]]
"""``model_apply(variables, batch, *, train, rngs) -> (outputs, new_model_state)``.

``variables = {"params": params["model"], **model_state}``; the returned
state has the structure of ``model_state`` (``{}`` when there is none).
"""

TaskLossFn = Callable[[PyTree, Batch], jax.Array]
"""``task_loss_fn(outputs, batch) -> (K,)`` per-task losses, batch means."""

LossesFn = Callable[[PyTree], tuple[jax.Array, PyTree]]
"""``losses_fn(model_params) -> (local losses (K,) float32, new_model_state)``."""


class Aggregated(NamedTuple):
  """What an :data:`Aggregator` returns."""
  grads: PyTree            # like params, already averaged over the devices
  total: jax.Array         # () the objective at the global losses
  losses: jax.Array        # (K,) float32 global (device-averaged) losses
  weights: jax.Array       # (K,) effective task weights, d total / d losses
  weighting_state: PyTree  # the weighting's new state
  model_state: PyTree      # the model's new state (local, not yet averaged)


Aggregator = Callable[[LossesFn, PyTree, PyTree, Optional[str]], Aggregated]
"""``aggregator(losses_fn, params, weighting_state, axis_name) -> Aggregated``."""


def pmean(tree: PyTree, axis_name: Optional[str]) -> PyTree:
  """``lax.pmean`` over ``axis_name``; the identity when it is ``None``."""
  return tree if axis_name is None else lax.pmean(tree, axis_name)


def global_losses(local: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """Value: the device-averaged losses; gradient: through the local ones."""
  frozen = lax.stop_gradient(local)
  return local - frozen + pmean(frozen, axis_name)


def weighted_sum_aggregator(weighting: Weighting) -> Aggregator:
  """The default aggregator: the gradient of ``weighting.apply(...).total``.

  The weighting sees the global losses (see the module docstring), and the
  gradients of all parameters are averaged over ``axis_name`` in one
  ``pmean``.
  """

  def aggregate(losses_fn: LossesFn, params: PyTree, weighting_state: PyTree,
                axis_name: Optional[str]) -> Aggregated:

    def objective(p):
      local, model_state = losses_fn(p["model"])
      losses = global_losses(local, axis_name)
      out = weighting.apply(p["weighting"], weighting_state, losses)
      return out.total, (out, lax.stop_gradient(losses), model_state)

    grads, (out, losses, model_state) = jax.grad(objective, has_aux=True)(params)
    return Aggregated(pmean(grads, axis_name), out.total, losses, out.weights,
                      out.state, model_state)

  return aggregate


def _is_float(x: Any) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def cast_floating(tree: PyTree, dtype: Optional[jnp.dtype]) -> PyTree:
  """Casts the floating leaves of ``tree`` to ``dtype`` (no-op for None)."""
  if dtype is None:
    return tree
  return jax.tree.map(lambda x: x.astype(dtype) if _is_float(x) else x, tree)


def _pmean_floating(tree: PyTree, axis_name: Optional[str]) -> PyTree:
  return jax.tree.map(
      lambda x: pmean(x, axis_name) if _is_float(x) else x, tree)


def _all_finite(tree: PyTree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if _is_float(x)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _select(ok: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _step_rngs(rng: jax.Array, rng_names: Sequence[str],
               axis_name: Optional[str]) -> dict[str, jax.Array]:
  if axis_name is not None:  # different dropout masks on different shards
    rng = jax.random.fold_in(rng, lax.axis_index(axis_name))
  return {name: jax.random.fold_in(rng, i) for i, name in enumerate(rng_names)}


def _forward(model_apply: ModelApply, task_loss_fn: TaskLossFn,
             model_params: PyTree, model_state: PyTree, batch: Batch, *,
             train: bool, rngs: Mapping[str, jax.Array],
             compute_dtype: Optional[jnp.dtype]) -> tuple[jax.Array, PyTree, PyTree]:
  """Model then task losses; returns (float32 losses, outputs, model state)."""
  variables = {"params": cast_floating(model_params, compute_dtype),
               **cast_floating(model_state, compute_dtype)}
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


def make_train_step(model_apply: ModelApply, task_loss_fn: TaskLossFn,
                    weighting: Weighting,
                    optimizer: optax.GradientTransformation, *,
                    axis_name: Optional[str] = None,
                    compute_dtype: Optional[jnp.dtype] = None,
                    aggregator: Optional[Aggregator] = None,
                    rng_names: Sequence[str] = ("dropout",),
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Builds the pure ``train_step(state, batch) -> (state, metrics)``.

  Run it under ``jax.jit`` (``axis_name=None``), ``jax.pmap(...,
  axis_name=axis_name)`` or ``jax.jit(jax.shard_map(...))`` over a mesh axis
  named ``axis_name``; :func:`pmap_step` and :func:`mesh_step` do the
  wrapping. The maths is the same in all three (module docstring).

  Non-finite guard: when a global task loss, the total or a gradient is not
  finite (the check runs after the averaging, so all devices agree), the
  params, optimiser, model and weighting states are left unchanged,
  ``consecutive_skips`` and ``total_skips`` grow, and ``metrics`` say which
  task was bad. ``step`` and ``rng`` advance either way (the batch was
  consumed). The host loop decides when to stop (:func:`train`).

  Args:
    model_apply: see :data:`ModelApply`; :func:`module_apply_fn` adapts a
      Flax linen module.
    task_loss_fn: ``(outputs, batch) -> (K,)`` batch-mean task losses,
      computed in float32 (outputs arrive as float32).
    weighting: a method from :func:`mtl_jax.weighting.get`.
    optimizer: trains ``{"model": ..., "weighting": ...}``
      (:func:`make_optimizer`).
    axis_name: the device axis, or ``None`` on one device / under GSPMD jit.
    compute_dtype: e.g. ``jnp.bfloat16`` to run the model in bfloat16;
      ``None`` keeps the params' dtype.
    aggregator: turns losses into gradients; default
      :func:`weighted_sum_aggregator` of ``weighting``.
    rng_names: Flax rng streams given to the model in training.

  Returns:
    ``train_step(state, batch) -> (state, metrics)`` with metrics
    ``step`` (steps done, this one included), ``total``, ``losses`` (K,),
    ``weights`` (K,), ``losses_finite`` (K,), ``grads_finite``, ``skipped``,
    ``consecutive_skips``, ``total_skips``, ``grad_norm``, ``param_norm``;
    all global, identical on every device.
  """
  aggregate = aggregator or weighted_sum_aggregator(weighting)

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng, step_rng = jax.random.split(state.rng)
    rngs = _step_rngs(step_rng, rng_names, axis_name)

    def losses_fn(model_params):
      losses, _, model_state = _forward(
          model_apply, task_loss_fn, model_params, state.model_state, batch,
          train=True, rngs=rngs, compute_dtype=compute_dtype)
      return losses, model_state

    agg = aggregate(losses_fn, state.params, state.weighting_state, axis_name)
    updates, opt_state = optimizer.update(agg.grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    model_state = _pmean_floating(agg.model_state, axis_name)

    losses_finite = jnp.isfinite(agg.losses)
    grads_finite = _all_finite(agg.grads)
    ok = jnp.all(losses_finite) & jnp.isfinite(agg.total) & grads_finite
    consecutive = jnp.where(ok, 0, state.consecutive_skips + 1)
    new_state = state.replace(
        step=state.step + 1,
        params=_select(ok, params, state.params),
        opt_state=_select(ok, opt_state, state.opt_state),
        model_state=_select(ok, model_state, state.model_state),
        weighting_state=_select(ok, agg.weighting_state, state.weighting_state),
        rng=rng,
        consecutive_skips=consecutive.astype(jnp.int32),
        total_skips=state.total_skips + (~ok).astype(jnp.int32))
    metrics = {
        "step": new_state.step,
        "total": agg.total.astype(jnp.float32),
        "losses": agg.losses,
        "weights": agg.weights.astype(jnp.float32),
        "losses_finite": losses_finite,
        "grads_finite": grads_finite,
        "skipped": ~ok,
        "consecutive_skips": new_state.consecutive_skips,
        "total_skips": new_state.total_skips,
        "grad_norm": optax.tree.norm(agg.grads),
        "param_norm": optax.tree.norm(new_state.params),
    }
    return new_state, metrics

  return train_step


def make_eval_step(model_apply: ModelApply, task_loss_fn: TaskLossFn, *,
                   weighting: Optional[Weighting] = None,
                   axis_name: Optional[str] = None,
                   compute_dtype: Optional[jnp.dtype] = None,
                   ) -> Callable[[TrainState, Batch], tuple[Metrics, PyTree]]:
  """Builds ``eval_step(state, batch) -> (metrics, outputs)``.

  The model runs with ``train=False``. ``metrics["losses"]`` are the
  device-averaged task losses; with ``weighting`` also ``total`` and
  ``weights`` at the current weighting state (which is not advanced).
  ``outputs`` are the local float32 model outputs, for task metrics.
  """

  def eval_step(state: TrainState, batch: Batch) -> tuple[Metrics, PyTree]:
    local, outputs, _ = _forward(
        model_apply, task_loss_fn, state.params["model"], state.model_state,
        batch, train=False, rngs={}, compute_dtype=compute_dtype)
    losses = pmean(local, axis_name)
    metrics = {"losses": losses}
    if weighting is not None:
      out = weighting.apply(state.params["weighting"], state.weighting_state,
                            losses)
      metrics["total"] = out.total
      metrics["weights"] = out.weights
    return metrics, outputs

  return eval_step


def module_apply_fn(module: Any, *, input_key: str = "image",
                    **call_kwargs: Any) -> ModelApply:
  """Adapts a Flax linen module to :data:`ModelApply`.

  The module is called as ``module.apply(variables, batch[input_key],
  train=train, **call_kwargs)`` and must return its outputs (e.g. a dict of
  per-task predictions). In training, every non-``params`` collection (e.g.
  ``batch_stats``) is mutable and returned as the new model state.
  """

  def model_apply(variables, batch, *, train, rngs):
    collections = [name for name in variables if name != "params"]
    x = batch[input_key]
    if train and collections:
      outputs, new_state = module.apply(variables, x, train=True, rngs=rngs,
                                        mutable=collections, **call_kwargs)
      return outputs, {name: new_state[name] for name in collections}
    outputs = module.apply(variables, x, train=train, rngs=rngs, **call_kwargs)
    return outputs, {name: variables[name] for name in collections}

  return model_apply
