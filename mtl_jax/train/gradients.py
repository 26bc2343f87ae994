r"""From task losses to averaged gradients: the two paths of the train step.

The step (:func:`mtl_jax.train.make_train_step`) builds
``losses_fn(model_params, perturbations=None) -> (local losses (K,),
new_model_state)`` and hands it to a :data:`GradientFn`:

* :func:`weighted_sum_gradients` (loss-based methods, :mod:`mtl_jax.weighting`):
  one backward pass of the weighted total;
* :func:`jacobian_gradients` (gradient-space methods,
  :mod:`mtl_jax.aggregation`): the per-task Jacobian, the method's weights
  from its Gramian, and the combined update (:mod:`mtl_jax.train.jacobian`).

The step picks the path from the method's type; a custom
``gradient_fn`` with the same signature replaces both.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax.aggregation import Aggregator, combine, gramian
from mtl_jax.aggregation._base import apply_with_grads
from mtl_jax.train import jacobian as jac_lib
from mtl_jax.weighting import Weighting

PyTree = Any

LossesFn = Callable[..., tuple[jax.Array, PyTree]]
"""``losses_fn(model_params, perturbations=None) -> (local losses (K,)
float32, new_model_state)``; ``perturbations`` are added to the features the
model marks with ``self.perturb`` (representation mode)."""


class Gradients(NamedTuple):
  """What a :data:`GradientFn` returns."""
  grads: PyTree            # like params, already averaged over the devices
  total: jax.Array         # () the objective at the global losses
  losses: jax.Array        # (K,) float32 global (device-averaged) losses
  weights: jax.Array       # (K,) effective task weights, d total / d losses
  method_state: PyTree     # the method's new state
  model_state: PyTree      # the model's new state (local, not yet averaged)
  task_grads_finite: jax.Array | None = None  # (K,) per task, if known


GradientFn = Callable[[LossesFn, PyTree, PyTree, str | None], Gradients]
"""``gradient_fn(losses_fn, params, method_state, axis_name) -> Gradients``."""


def _mean_floating(*leaves: jax.Array) -> jax.Array:
  """The mean of floating leaves (the parts' BatchNorm statistics); the
  first of the others."""
  if jnp.issubdtype(leaves[0].dtype, jnp.inexact):
    return (sum(leaves) / len(leaves)).astype(leaves[0].dtype)
  return leaves[0]


def pmean(tree: PyTree, axis_name: str | None) -> PyTree:
  """``lax.pmean`` over ``axis_name``; the identity when it is ``None``."""
  return tree if axis_name is None else lax.pmean(tree, axis_name)


def global_losses(local: jax.Array, axis_name: str | None) -> jax.Array:
  """Value: the device-averaged losses; gradient: through the local ones."""
  frozen = lax.stop_gradient(local)
  return local - frozen + pmean(frozen, axis_name)


def _not_a_weighting(method: Any, where: str) -> None:
  if isinstance(method, Aggregator):
    raise ValueError(
        f"{where} takes a loss-weighting method (mtl_jax.weighting), got a "
        "gradient-space method (mtl_jax.aggregation): its weights come from "
        "the per-task gradients, not from a weighted total. Pass it to "
        "make_train_step as the method (it takes the Jacobian path by "
        "itself), or use jacobian_gradients(method).")


def weighted_sum_gradients(weighting: Weighting) -> GradientFn:
  """The loss-based path: the gradient of ``weighting.apply(...).total``.

  The weighting sees the global losses (see :mod:`mtl_jax.train.step`), and
  the gradients of all parameters are averaged over ``axis_name`` in one
  ``pmean``.
  """
  _not_a_weighting(weighting, "weighted_sum_gradients")

  def gradient_fn(losses_fn: LossesFn, params: PyTree, weighting_state: PyTree,
                  axis_name: str | None) -> Gradients:

    def objective(p):
      local, model_state = losses_fn(p["model"])
      losses = global_losses(local, axis_name)
      out = weighting.apply(p["weighting"], weighting_state, losses)
      return out.total, (out, lax.stop_gradient(losses), model_state)

    grads, (out, losses, model_state) = jax.grad(objective, has_aux=True)(params)
    return Gradients(pmean(grads, axis_name), out.total, losses, out.weights,
                     out.state, model_state)

  return gradient_fn


def jacobian_gradients(method: Aggregator, *,
                       task_params: jac_lib.TaskParamRule = None,
                       mode: str = "params",
                       chunk_size: int | None = None,
                       reduction: str = "reduce_scatter",
                       init_perturbations: Callable[[], PyTree] | None = None,
                       ) -> GradientFn:
  r"""The gradient-space path: Jacobian, Gramian, weights, combined update.

  Args:
    method: a gradient-space method from :func:`mtl_jax.aggregation.get`.
    task_params: which model parameters are task-specific (heads); see
      :data:`mtl_jax.train.jacobian.TaskParamRule`. ``None``: all shared.
    mode: ``"params"`` (the Jacobian of the shared parameters, exact) or
      ``"features"`` (of the shared features; needs ``init_perturbations``).
    chunk_size: compute the K VJPs this many at a time (``None``: all at
      once); trades speed for the memory of the backward pass.
    reduction: across devices in ``mode="params"``: ``"reduce_scatter"``
      (the default: each device keeps a slice of the global Jacobian, the
      K x K partial Gramians are summed, the update is all-gathered; about
      half the traffic, see :func:`mtl_jax.train.jacobian.scattered_gramian`)
      or ``"all_reduce"`` (every device gets the whole K x P Jacobian).
    init_perturbations: ``() -> zeros`` of the features the model marks with
      ``self.perturb`` (built by the step from ``model_apply``).

  Returns:
    A :data:`GradientFn`. Its ``weights`` are the method's :math:`w`, its
    ``total`` is :math:`\sum_k w_k L_k` (whose gradient in the shared
    parameters is the update, for the methods that weight the rows of
    :math:`J`), and the method's own params (GradNorm's logits) get the
    gradient of its ``aux_loss``, zero without one. A method that reads
    :math:`J` itself (``method.inputs == "jacobian"``) gets the flat
    ``(K, P)`` Jacobian, the same on every device (an all-reduce whatever
    ``reduction`` says), and returns the update.
  """
  if not isinstance(method, Aggregator):
    raise ValueError(
        "jacobian_gradients takes a gradient-space method "
        f"(mtl_jax.aggregation.get(...)), got {type(method).__name__}. A "
        "loss-weighting method goes to make_train_step directly (it takes the "
        "weighted-sum path); combining it with a gradient method is not "
        "defined here.")
  jac_lib.check_options(mode, chunk_size, reduction)
  if mode == "features" and init_perturbations is None:
    raise ValueError("mode='features' needs init_perturbations.")

  reads_jacobian = method.inputs == "jacobian"
  splits = method.batch_splits
  if splits > 1 and mode != "params":
    raise ValueError(
        f"This gradient-space method compares the gradients of {splits} "
        "parts of the batch; in jacobian_mode='features' the parts' feature "
        "gradients are orthogonal (disjoint examples), so it needs "
        f"jacobian_mode='params', got {mode!r}.")
  if reads_jacobian and mode != "params":
    raise ValueError(
        "This gradient-space method reads the Jacobian J itself (its "
        "per-coordinate rule or its (K, P) buffers are defined on the shared "
        "parameters), so it needs jacobian_mode='params', got "
        f"{mode!r}.")

  def gradient_fn(losses_fn: LossesFn, params: PyTree, method_state: PyTree,
                  axis_name: str | None) -> Gradients:
    mask = jac_lib.task_param_mask(params["model"], task_params)
    split, merge = jac_lib.split_params(params["model"], mask)
    has_heads = bool(split.task)

    if splits > 1:
      # One forward and one vjp per part: each part's K rows cost a K-row
      # Jacobian of a third of the batch, and BatchNorm's statistics are
      # the part's own (independent samples).
      parts = []
      for j in range(splits):
        def f(shared, task, j=j):
          return losses_fn(merge(shared, task), part=j)
        parts.append(jax.vjp(f, split.shared, split.task, has_aux=True))
      local = jnp.concatenate([p[0] for p in parts])
      model_state = jax.tree.map(_mean_floating, *[p[2] for p in parts])
      part_vjps = [p[1] for p in parts]

      def vjp_fn(cotangent):
        k = cotangent.shape[0] // splits
        outs = [fn(cotangent[j * k:(j + 1) * k])
                for j, fn in enumerate(part_vjps)]
        return tuple(jax.tree.map(lambda *xs: sum(xs), *[o[i] for o in outs])
                     for i in range(2))
    elif mode == "params":
      def f(shared, task):
        return losses_fn(merge(shared, task))
      local, vjp_fn, model_state = jax.vjp(f, split.shared, split.task,
                                           has_aux=True)
    else:
      def f(shared, task, perturbations):
        return losses_fn(merge(shared, task), perturbations)
      local, vjp_fn, model_state = jax.vjp(
          f, split.shared, split.task, init_perturbations(), has_aux=True)
    num_rows = local.shape[0]
    losses = pmean(lax.stop_gradient(local), axis_name)  # (splits * K,)

    def run_method(inputs):
      out, method_grads = apply_with_grads(method, params["weighting"],
                                           method_state, inputs, losses)
      weights = lax.stop_gradient(out.weights).astype(local.dtype)
      return weights, (out, method_grads)

    if splits > 1:
      num_tasks = num_rows // splits
      blocks = [jac_lib.batched_vjp(lambda c, fn=fn: fn(c)[0], num_tasks,
                                    local.dtype, chunk_size)
                for fn in part_vjps]
      rows = [jnp.concatenate(leaf_blocks) for leaf_blocks in zip(*blocks)]
    if mode == "params":
      if splits == 1:
        rows = jac_lib.batched_vjp(lambda c: vjp_fn(c)[0], num_rows,
                                   local.dtype, chunk_size)
      if reads_jacobian:
        # The whole Jacobian on every device: the method's per-coordinate
        # rule and its (K, P) buffers see the same J everywhere.
        rows = pmean(rows, axis_name)
        flat, unflatten = jac_lib.flatten_rows(rows)
        acc = jnp.promote_types(flat.dtype, jnp.float32)
        finite = jnp.isfinite(jnp.sum(jnp.square(flat.astype(acc)), axis=1))
        weights, (out, method_grads) = run_method(flat)
        if out.direction is None:
          raise ValueError("A method with inputs='jacobian' must return its "
                           "update in GradientWeights.direction.")
        shared_grads = unflatten(lax.stop_gradient(out.direction))
      elif axis_name is not None and reduction == "reduce_scatter":
        shared_grads, weights, (out, method_grads), finite = (
            jac_lib.scattered_gramian(rows, run_method, axis_name))
      else:
        rows = pmean(rows, axis_name)
        gram = jac_lib.isolate(gramian(rows))
        weights, (out, method_grads) = run_method(gram)
        shared_grads = combine(rows, weights)
        finite = jac_lib.rows_finite(gram)
    else:
      rows = jac_lib.batched_vjp(lambda c: vjp_fn(c)[2], num_rows,
                                 local.dtype, chunk_size)
      # dL/df_n = (1/N) dl_n/df_n on device n's examples: the Gramian of
      # the whole batch is the mean of the local ones over N.
      gram = gramian(rows)
      if axis_name is not None:
        gram = lax.pmean(gram, axis_name) / lax.axis_size(axis_name)
      gram = jac_lib.isolate(gram)
      finite = jac_lib.rows_finite(gram)
      weights, (out, method_grads) = run_method(gram)
      shared_grads = pmean(vjp_fn(weights)[0], axis_name)

    if has_heads:
      # Each head: its own task's gradient on the whole batch (the mean of
      # the parts' gradients when the batch is split).
      head_weights = (jnp.full_like(local, 1.0 / splits)
                      if out.head_weights is None else
                      lax.stop_gradient(out.head_weights).astype(local.dtype))
      task_grads = pmean(vjp_fn(head_weights)[1], axis_name)
    else:
      task_grads = []
    # The method's own parameters see the global losses and the global
    # Jacobian: their gradients agree on every device already.
    grads = {"model": merge(shared_grads, task_grads),
             "weighting": method_grads}
    total = jnp.sum(weights * losses)
    if splits > 1:  # per task: the whole batch's losses, summed weights
      losses = jnp.mean(losses.reshape(splits, -1), axis=0)
      weights = jnp.sum(weights.reshape(splits, -1), axis=0)
      finite = jnp.all(finite.reshape(splits, -1), axis=0)
    return Gradients(grads, total, losses, weights, out.state, model_state,
                     finite)

  return gradient_fn
