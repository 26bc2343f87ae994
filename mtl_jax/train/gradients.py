r"""From task losses to averaged gradients: the two paths of the train step.

The step (:func:`mtl_jax.train.make_train_step`) builds a :data:`LossesFn`
and hands it to a :data:`GradientFn`, built once with the step:

* :func:`weighted_sum_gradients` (loss-based methods, :mod:`mtl_jax.weighting`):
  one backward pass of the weighted total;
* :func:`jacobian_gradients` (gradient-space methods,
  :mod:`mtl_jax.aggregation`), in three stages::

    losses_fn ──1. task VJPs──▶ local losses (R,), vjp(cotangent (R,))
              ──2. aggregate──▶ rows of J (shared params or features)
                                → G or J → method → w → shared update
              ──3. heads──────▶ each task-specific parameter: its task's
                                gradient (× the method's head weights)

  with R = K rows, or ``splits * K`` (part-major) for a method that
  compares independent parts of the batch (``Aggregator.batch_splits``).

A custom ``gradient_fn`` with the same signature replaces both.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax.aggregation import (
    Aggregator,
    GradientMethod,
    JacobianAggregator,
    combine,
    gramian,
)
from mtl_jax.aggregation._base import apply_with_grads, check_method
from mtl_jax.train import jacobian as jac_lib
from mtl_jax.train.jacobian import JacobianOptions
from mtl_jax.weighting import Weighting

PyTree = Any

LossesFn = Callable[..., tuple[jax.Array, PyTree]]
"""``losses_fn(model_params, perturbations=None, part=None) -> (local losses
(K,) float32, new_model_state)``.

``perturbations`` are added to the features the model marks with
``self.perturb`` (``JacobianOptions(mode="features")``). ``part=(j, s)``
runs the model on part ``j`` of ``s`` of the batch (examples ``j, j + s,
...``, with their own dropout keys); the Jacobian path asks for it when the
method's ``batch_splits`` is ``s > 1``."""


class Gradients(NamedTuple):
  """What a :data:`GradientFn` returns."""
  grads: PyTree            # like params, already averaged over the devices
  total: jax.Array         # () the objective at the global losses
  losses: jax.Array        # (K,) float32 global (device-averaged) losses
  weights: jax.Array       # (K,) effective task weights, d total / d losses
  method_state: PyTree     # the method's new state
  model_state: PyTree      # the model's new state (local, not yet averaged)
  task_grads_finite: jax.Array | None = None  # (K,) per task, if known


GradientFn = Callable[[LossesFn, PyTree, PyTree, str | None, PyTree | None],
                      Gradients]
"""``gradient_fn(losses_fn, params, method_state, axis_name, perturbations)
-> Gradients``; ``perturbations`` are the zeros of the marked features in
``JacobianOptions(mode="features")``, ``None`` otherwise."""


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


def weighted_sum_gradients(weighting: Weighting) -> GradientFn:
  """The loss-based path: the gradient of ``weighting.apply(...).total``.

  The weighting sees the global losses (see :mod:`mtl_jax.train.step`), and
  the gradients of all parameters are averaged over ``axis_name`` in one
  ``pmean``.
  """
  if isinstance(weighting, GradientMethod):
    raise ValueError(
        "weighted_sum_gradients takes a loss-weighting method "
        "(mtl_jax.weighting), got a gradient-space method "
        "(mtl_jax.aggregation): its weights come from the per-task "
        "gradients, not from a weighted total. Pass it to make_train_step "
        "as the method (it takes the Jacobian path by itself), or use "
        "jacobian_gradients(method).")

  def gradient_fn(losses_fn: LossesFn, params: PyTree, method_state: PyTree,
                  axis_name: str | None, perturbations: PyTree = None
                  ) -> Gradients:
    del perturbations  # no Jacobian here

    def objective(p):
      local, model_state = losses_fn(p["model"])
      losses = global_losses(local, axis_name)
      out = weighting.apply(p["method"], method_state, losses)
      return out.total, (out, lax.stop_gradient(losses), model_state)

    grads, (out, losses, model_state) = jax.grad(objective, has_aux=True)(params)
    return Gradients(pmean(grads, axis_name), out.total, losses, out.weights,
                     out.state, model_state)

  return gradient_fn


# Stage 1: the task VJPs. -----------------------------------------------------


class TaskVJPs(NamedTuple):
  """One forward pass per part of the batch, and their VJPs.

  ``parts[j](cotangent (K,)) -> (shared, task, features)`` gradients of
  ``cotangent . losses`` of part ``j``; the rows of every part are
  concatenated part-major in ``losses``.
  """
  losses: jax.Array           # (R,) local losses, R = splits * K
  model_state: PyTree         # the parts' mean
  parts: list[Callable[[jax.Array], tuple[PyTree, PyTree, PyTree]]]

  def __call__(self, cotangent: jax.Array) -> tuple[PyTree, PyTree, PyTree]:
    """The gradients of ``cotangent . losses`` ((R,) cotangent)."""
    k = cotangent.shape[0] // len(self.parts)
    outs = [vjp(cotangent[j * k:(j + 1) * k])
            for j, vjp in enumerate(self.parts)]
    return tuple(jax.tree.map(lambda *xs: sum(xs), *[o[i] for o in outs])
                 for i in range(3))

  def rows(self, which: int, chunk_size: int | None) -> PyTree:
    """The (R, ...) Jacobian of the ``which``-th input (0: the shared
    parameters, 2: the perturbed features), part by part."""
    k = self.losses.shape[0] // len(self.parts)
    blocks = [jac_lib.batched_vjp(lambda c, vjp=vjp: vjp(c)[which], k,
                                  self.losses.dtype, chunk_size)
              for vjp in self.parts]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *blocks)


def task_vjps(losses_fn: LossesFn, split: jac_lib.ParamSplit,
              merge: Callable, splits: int,
              perturbations: PyTree) -> TaskVJPs:
  """Stage 1: ``losses_fn`` on each of the ``splits`` parts, with VJPs in
  the shared parameters, the task-specific ones and the perturbations."""
  features = () if perturbations is None else perturbations
  outs = []
  for j in range(splits):
    def f(shared, task, feats, part=None if splits == 1 else (j, splits)):
      return losses_fn(merge(shared, task), feats or None, part)
    outs.append(jax.vjp(f, split.shared, split.task, features, has_aux=True))
  return TaskVJPs(jnp.concatenate([o[0] for o in outs]),
                  jax.tree.map(_mean_floating, *[o[2] for o in outs]),
                  [o[1] for o in outs])


# Stage 2: the aggregation. -------------------------------------------------
# Each returns (shared update, weights (R,), (method output, method grads),
# finite (R,)); run(inputs) applies the method to G or J.


def _gramian_on_every_device(vjps, run, axis_name, chunk_size):
  """All-reduce of J, then G, w and d = J^T w on every device."""
  rows = pmean(vjps.rows(0, chunk_size), axis_name)
  gram = jac_lib.isolate(gramian(rows))
  weights, extra = run(gram)
  return combine(rows, weights), weights, extra, jac_lib.rows_finite(gram)


def _gramian_scattered(vjps, run, axis_name, chunk_size):
  """Reduce-scatter of J (:func:`mtl_jax.train.jacobian.scattered_gramian`)."""
  if axis_name is None:
    return _gramian_on_every_device(vjps, run, axis_name, chunk_size)
  return jac_lib.scattered_gramian(vjps.rows(0, chunk_size), run, axis_name)


def _jacobian_direction(vjps, run, axis_name, chunk_size):
  """The whole flat (R, P) J on every device; the method returns d."""
  rows = pmean(vjps.rows(0, chunk_size), axis_name)
  flat, unflatten = jac_lib.flatten_rows(rows)
  acc = jnp.promote_types(flat.dtype, jnp.float32)
  finite = jnp.isfinite(jnp.sum(jnp.square(flat.astype(acc)), axis=1))
  weights, extra = run(flat)
  direction = unflatten(lax.stop_gradient(extra[0].direction))
  return direction, weights, extra, finite


def _features_gramian(vjps, run, axis_name, chunk_size):
  """G of the feature gradients; d is one VJP of w through the trunk.

  dL/df_n = (1/N) dl_n/df_n on device n's examples: the Gramian of the
  whole batch is the mean of the local ones over N.
  """
  gram = gramian(vjps.rows(2, chunk_size))
  if axis_name is not None:
    gram = lax.pmean(gram, axis_name) / lax.axis_size(axis_name)
  gram = jac_lib.isolate(gram)
  weights, extra = run(gram)
  return (pmean(vjps(weights)[0], axis_name), weights, extra,
          jac_lib.rows_finite(gram))


def _aggregate_stage(method: GradientMethod, options: JacobianOptions):
  if options.mode == "features":
    return _features_gramian
  if isinstance(method, JacobianAggregator):
    return _jacobian_direction
  if options.reduction == "reduce_scatter":
    return _gramian_scattered
  return _gramian_on_every_device


# Stage 3: the heads. ---------------------------------------------------------


def _head_gradients(vjps: TaskVJPs, head_weights: jax.Array | None,
                    axis_name: str | None) -> PyTree:
  """Each task-specific parameter: its own task's gradient on the whole
  batch (the mean over the parts), times the method's head weights."""
  losses = vjps.losses
  if head_weights is None:
    head_weights = jnp.full_like(losses, 1.0 / len(vjps.parts))
  cotangent = lax.stop_gradient(head_weights).astype(losses.dtype)
  return pmean(vjps(cotangent)[1], axis_name)


def _check_compatible(method: GradientMethod, options: JacobianOptions
                      ) -> None:
  """Raises, when the step is built, for a method the path cannot run."""
  check_method(method)
  if options.mode == "params":
    return
  if isinstance(method, Aggregator) and method.batch_splits > 1:
    raise ValueError(
        f"This gradient-space method compares the gradients of "
        f"{method.batch_splits} parts of the batch; in mode='features' the "
        "parts' feature gradients are orthogonal (disjoint examples), so it "
        "needs JacobianOptions(mode='params').")
  if isinstance(method, JacobianAggregator):
    raise ValueError(
        "This gradient-space method reads the Jacobian J itself (its "
        "per-coordinate rule or its (K, P) buffers are defined on the shared "
        "parameters), so it needs JacobianOptions(mode='params').")


def jacobian_gradients(method: GradientMethod,
                       options: JacobianOptions | None = None
                       ) -> GradientFn:
  r"""The gradient-space path: Jacobian, Gramian, weights, combined update.

  Args:
    method: a gradient-space method from :func:`mtl_jax.aggregation.get`.
    options: the task-specific parameters, the mode, the chunk size and the
      cross-device reduction (:class:`~mtl_jax.train.JacobianOptions`);
      ``None``: the defaults.

  Returns:
    A :data:`GradientFn`. Its ``weights`` are the method's :math:`w`, its
    ``total`` is :math:`\sum_k w_k L_k` (whose gradient in the shared
    parameters is the update, for the methods that weight the rows of
    :math:`J`), and the method's own params (GradNorm's logits) get the
    gradient of its ``aux_loss``, zero without one. A
    :class:`~mtl_jax.aggregation.JacobianAggregator` gets the flat ``(K, P)``
    Jacobian, the same on every device (an all-reduce whatever the
    reduction), and returns the update.
  """
  if not isinstance(method, GradientMethod):
    raise ValueError(
        "jacobian_gradients takes a gradient-space method "
        f"(mtl_jax.aggregation.get(...)), got {type(method).__name__}. A "
        "loss-weighting method goes to make_train_step directly (it takes the "
        "weighted-sum path); combining it with a gradient method is not "
        "defined here.")
  options = JacobianOptions() if options is None else options
  if not isinstance(options, JacobianOptions):
    raise ValueError(f"options must be a JacobianOptions, got "
                     f"{type(options).__name__}.")
  _check_compatible(method, options)
  aggregate = _aggregate_stage(method, options)
  splits = method.batch_splits if isinstance(method, Aggregator) else 1

  def gradient_fn(losses_fn: LossesFn, params: PyTree, method_state: PyTree,
                  axis_name: str | None, perturbations: PyTree = None
                  ) -> Gradients:
    mask = jac_lib.task_param_mask(params["model"], options.task_params)
    split, merge = jac_lib.split_params(params["model"], mask)
    vjps = task_vjps(losses_fn, split, merge, splits, perturbations)
    losses = pmean(lax.stop_gradient(vjps.losses), axis_name)  # (R,)

    def run(inputs):
      out, method_grads = apply_with_grads(method, params["method"],
                                           method_state, inputs, losses)
      weights = lax.stop_gradient(out.weights).astype(vjps.losses.dtype)
      return weights, (out, method_grads)

    shared, weights, (out, method_grads), finite = aggregate(
        vjps, run, axis_name, options.chunk_size)
    heads = (_head_gradients(vjps, out.head_weights, axis_name)
             if split.task else [])
    # The method's own parameters see the global losses and the global
    # Jacobian: their gradients agree on every device already.
    grads = {"model": merge(shared, heads), "method": method_grads}
    total = jnp.sum(weights * losses)
    if splits > 1:  # per task: the whole batch's losses, summed weights
      losses = jnp.mean(losses.reshape(splits, -1), axis=0)
      weights = jnp.sum(weights.reshape(splits, -1), axis=0)
      finite = jnp.all(finite.reshape(splits, -1), axis=0)
    return Gradients(grads, total, losses, weights, out.state,
                     vjps.model_state, finite)

  return gradient_fn
