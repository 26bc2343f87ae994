r"""The Jacobian path of the train step: per-task gradients for gradient-space methods.

A gradient-space method (:mod:`mtl_jax.aggregation`) needs the gradient of
every task loss with respect to the shared parameters, the rows of the
Jacobian :math:`J \in \mathbb{R}^{K \times P}`, and returns the weights
:math:`w` of the update :math:`d = J^\top w`. :func:`jacobian_gradients`
computes them inside the compiled step:

* **One forward, one batched backward.** ``jax.vjp`` runs the model and the
  task losses once; the :math:`K` rows of :math:`J` come from the same VJP
  applied to the :math:`K` unit cotangents under ``jax.vmap`` (or, with
  ``chunk_size``, ``chunk_size`` rows at a time, one chunk after the other,
  which bounds the memory of the backward pass to one chunk).
* **Shared and task-specific parameters.** A rule (``task_params``) splits
  the model's parameters. The shared ones get :math:`d = J^\top w`; each
  task-specific one (a head) gets the gradient of its own task, unweighted,
  computed by one more VJP with the cotangent :math:`\mathbf{1}` that only
  runs through the heads (as TorchJD's ``mtl_backward`` does). Without a
  rule every parameter is shared: correct, only slower.
* **Data parallel.** Each device differentiates its local losses; the
  global Jacobian (the one of the whole batch) is the mean of the local ones
  (``pmean``), and the Gramian, the weights and the update are then the same
  on every device: N devices equal one device with the whole batch.
* **Representation mode** (``mode="features"``, LibMTL's ``rep_grad``,
  Sener and Koltun's MGDA-UB): the Jacobian is taken with respect to the
  shared features instead of the shared parameters (the model marks them
  with ``self.perturb(name, x)``; the bundled models do), and the update is
  one VJP through the trunk with the combined cotangent, i.e. the gradient of
  :math:`\sum_k w_k L_k`. Across devices only the :math:`K \times K`
  Gramian is reduced: :math:`G = \frac{1}{N^2} \sum_n G_n`.

Which methods are exact where: in ``mode="params"`` every method sees the
exact Jacobian of the shared parameters. In ``mode="features"`` every
Gramian method runs, but on the Gramian of the feature gradients, a
different matrix: MGDA becomes MGDA-UB (Sener and Koltun prove it still
gives a descent direction for every task when the trunk's Jacobian has full
rank), and the others become their representation-space variants (LibMTL
runs MGDA, IMTL-G and Aligned-MTL this way and refuses the rest, whose
implementations edit per-parameter gradients; in the Gramian form they are
well defined, but their guarantees hold for the features, not for the
parameters). See ``docs/gradient_methods.md``.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mtl_jax import _checks

PyTree = Any
TaskParamRule = (None | str | Sequence[str]
                 | Callable[[tuple[str, ...]], bool])
"""Which model parameters are task-specific.

* ``None``: none; every parameter is shared.
* a glob pattern or a sequence of them. A pattern without ``/`` is a
  module name, matched against every component of each parameter's path in
  ``params["model"]``: ``"head_*"`` selects every parameter of every
  submodule whose name starts with ``head_``, at any depth (so a wrapper
  module around the model changes nothing). A pattern with ``/`` is matched
  against the ``/``-joined path and its prefixes (``"net/head_depth"``,
  ``"*/bias"``);
* a callable ``rule(path) -> bool`` on the path tuple.
"""

MODES = ("params", "features")
REDUCTIONS = ("reduce_scatter", "all_reduce")


def _path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
  names = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        names.append(str(getattr(entry, attr)))
        break
    else:
      names.append(str(entry))
  return tuple(names)


def _matcher(rule: TaskParamRule) -> Callable[[tuple[str, ...]], bool]:
  if callable(rule):
    return lambda path: bool(rule(path))
  patterns = (rule,) if isinstance(rule, str) else tuple(rule)
  if not patterns or not all(isinstance(p, str) and p for p in patterns):
    raise ValueError(
        f"task_params must be None, a glob pattern, a sequence of patterns "
        f"or a callable on the parameter path, got {rule!r}.")

  def match(path: tuple[str, ...]) -> bool:
    prefixes = ["/".join(path[:i]) for i in range(1, len(path) + 1)]
    for pattern in patterns:
      candidates = prefixes if "/" in pattern else path
      if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
        return True
    return False

  return match


def task_param_mask(model_params: PyTree, rule: TaskParamRule) -> list[bool]:
  """One flag per leaf of ``model_params`` (in ``jax.tree.leaves`` order):
  True for a task-specific parameter.

  Raises:
    ValueError: when a rule matches no parameter, or every parameter (then
      no parameter is shared and there is nothing to balance); the message
      lists the parameter paths.
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(model_params)
  paths = [_path_names(path) for path, _ in flat]
  if rule is None:
    return [False] * len(paths)
  match = _matcher(rule)
  mask = [match(path) for path in paths]
  if not any(mask) or all(mask):
    shown = sorted({"/".join(p[:-1]) or p[0] for p in paths})
    listing = ", ".join(shown[:20]) + (" ..." if len(shown) > 20 else "")
    what = "no parameter" if not any(mask) else "every parameter"
    raise ValueError(
        f"task_params={rule!r} selects {what} of the model, so there would "
        f"be {'no head' if not any(mask) else 'nothing shared'} to tell apart. "
        f"The model's modules are: {listing}. Give patterns that match the "
        "heads only (e.g. 'head_*'), or task_params=None to treat every "
        "parameter as shared.")
  return mask


class ParamSplit(NamedTuple):
  """The leaves of a model's parameters, in ``jax.tree.leaves`` order."""
  shared: list[jax.Array]  # the leaves whose mask flag is False
  task: list[jax.Array]    # the task-specific ones (True)


def split_params(model_params: PyTree, mask: Sequence[bool]
                 ) -> tuple[ParamSplit, Callable[[Sequence[jax.Array],
                                                  Sequence[jax.Array]], PyTree]]:
  """``model_params`` split by :func:`task_param_mask`'s ``mask``, and
  ``merge(shared, task)``, which puts such lists back into the tree."""
  leaves, treedef = jax.tree.flatten(model_params)
  split = ParamSplit([x for x, m in zip(leaves, mask) if not m],
                     [x for x, m in zip(leaves, mask) if m])

  def merge(shared, task):
    shared_it, task_it = iter(shared), iter(task)
    return jax.tree.unflatten(
        treedef, [next(task_it) if m else next(shared_it) for m in mask])

  return split, merge


def batched_vjp(vjp_row: Callable[[jax.Array], PyTree], num_tasks: int,
                dtype: jnp.dtype, chunk_size: int | None) -> PyTree:
  """``vjp_row`` applied to the K unit cotangents: leaves of shape (K, ...).

  All rows at once under ``vmap``, or ``chunk_size`` rows at a time: one
  vmapped VJP per chunk, in an unrolled loop whose chunks are chained by
  ``lax.optimization_barrier`` (each chunk's cotangents depend on the
  previous chunk's result), so that XLA runs them one after the other and
  the memory of the backward pass is that of one chunk. (``lax.map`` would
  bound it a little tighter, but inside its loop XLA on CPU runs the
  convolutions' weight gradients through a slow layout: a DigitSceneNet
  step took 666 ms with ``lax.map`` and one task per chunk, 34 ms this way,
  50 ms with a single ``vmap``.)
  """
  eye = jnp.eye(num_tasks, dtype=dtype)
  if chunk_size is None or chunk_size >= num_tasks:
    return jax.vmap(vjp_row)(eye)
  rows, previous = [], None
  for start in range(0, num_tasks, chunk_size):
    block = eye[start:start + chunk_size]
    if previous is not None:
      block, _ = lax.optimization_barrier((block, previous))
    previous = jax.vmap(vjp_row)(block)
    rows.append(previous)
  return jax.tree.map(lambda *blocks: jnp.concatenate(blocks), *rows)


def isolate(gram: jax.Array) -> jax.Array:
  """``gram`` behind an optimisation barrier, transposed in and out.

  A method that factorises the Gramian (``eigh``, ``solve``) asks XLA for a
  column-major operand; without the barrier XLA pushes that layout back
  into the Gramian's products and copies every K x P Jacobian block (about
  0.4 ms per step on a 3-task MLP on CPU). The K x K transposes are free.
  """
  return lax.optimization_barrier(gram.T).T


def rows_finite(gram: jax.Array) -> jax.Array:
  r"""(K,) True where task k's gradient is finite, read off the Gramian's
  diagonal :math:`G_{kk} = \lVert g_k \rVert^2` (a NaN or an Inf in row k
  makes it non-finite; so does a norm whose square overflows)."""
  return jnp.isfinite(jnp.diagonal(gram))


def flatten_rows(rows: Sequence[jax.Array]
                 ) -> tuple[jax.Array, Callable[[jax.Array], list[jax.Array]]]:
  """``(K, P)`` from Jacobian blocks ``(K, ...)``, and the inverse for a
  ``(P,)`` vector (back to blocks of the blocks' trailing shapes)."""
  num_tasks = rows[0].shape[0]
  shapes = [r.shape[1:] for r in rows]
  sizes = [int(np.prod(s)) for s in shapes]
  flat = jnp.concatenate([r.reshape(num_tasks, -1) for r in rows], axis=1)

  def unflatten(vector: jax.Array) -> list[jax.Array]:
    out, start = [], 0
    for shape, size, row in zip(shapes, sizes, rows):
      out.append(vector[start:start + size].reshape(shape).astype(row.dtype))
      start += size
    return out

  return flat, unflatten


def scattered_gramian(rows: Sequence[jax.Array], weights_fn: Callable,
                      axis_name: str
                      ) -> tuple[list[jax.Array], jax.Array, Any, jax.Array]:
  r"""The Jacobian path's reduction with half the traffic of an all-reduce.

  Each device holds its local Jacobian :math:`J_n` (K x P). A
  reduce-scatter leaves device :math:`n` with a slice of the columns of the
  global mean :math:`\bar J`; the partial Gramians of the slices are summed
  (a K x K all-reduce) into :math:`G = \bar J \bar J^\top`; every device
  computes the same weights from it, combines its slice, and an all-gather
  rebuilds the update. Per device this sends about :math:`(K + 1) P` values
  instead of the :math:`2 K P` of an all-reduce of :math:`J`, and the same
  maths: it equals the all-reduce path up to float rounding.

  Returns ``(update blocks, weights, extra, (K,) finite flags)`` for
  ``weights_fn(G) -> (weights, extra)``.
  """
  num_devices = lax.axis_size(axis_name)
  flat, unflatten = flatten_rows(rows)
  size = flat.shape[1]
  pad = (-size) % num_devices
  flat = jnp.pad(flat, ((0, 0), (0, pad)))
  local = lax.psum_scatter(flat, axis_name, scatter_dimension=1,
                           tiled=True) / num_devices
  acc = jnp.promote_types(local.dtype, jnp.float32)
  gram = isolate(lax.psum(local.astype(acc) @ local.astype(acc).T, axis_name))
  weights, extra = weights_fn(gram)
  update = jnp.tensordot(weights.astype(local.dtype), local, axes=1)
  update = lax.all_gather(update, axis_name, tiled=True)[:size]
  return unflatten(update), weights, extra, rows_finite(gram)


@dataclasses.dataclass(frozen=True)
class JacobianOptions:
  """How the train step computes the Jacobian of a gradient-space method.

  Checked when built: a wrong field raises a ValueError naming it.

  Attributes:
    task_params: the task-specific parameters (heads), which get their own
      task's gradient (:data:`TaskParamRule`); the bundled models have theirs
      in :func:`mtl_jax.models.task_params`. ``None``: every parameter is
      shared (correct, only slower).
    mode: ``"params"`` (the Jacobian of the shared parameters, exact) or
      ``"features"`` (of the shared features the model marks with
      ``self.perturb``; cheaper, LibMTL's ``rep_grad``).
    chunk_size: compute this many task gradients at a time (``None``: all at
      once); trades speed for the memory of the backward pass.
    reduction: across devices in ``mode="params"``: ``"reduce_scatter"``
      (each device keeps a slice of the global Jacobian, the K x K partial
      Gramians are summed, the update is all-gathered; about half the
      traffic, see :func:`scattered_gramian`) or ``"all_reduce"`` (every
      device gets the whole K x P Jacobian).
  """
  task_params: TaskParamRule = None
  mode: str = "params"
  chunk_size: int | None = None
  reduction: str = "reduce_scatter"

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(
          f"JacobianOptions.mode must be one of {MODES}, got {self.mode!r}: "
          "'params' differentiates the shared parameters (exact), "
          "'features' the shared features marked with self.perturb "
          "(cheaper, LibMTL's rep_grad).")
    if self.reduction not in REDUCTIONS:
      raise ValueError(f"JacobianOptions.reduction must be one of "
                       f"{REDUCTIONS}, got {self.reduction!r}.")
    if self.chunk_size is not None:
      _checks.integer(self.chunk_size, "chunk_size", "JacobianOptions",
                      low=1, hint="None computes all tasks at once.")
    if self.task_params is not None:
      _matcher(self.task_params)  # raises on a malformed rule
