r"""Flax NNX support: weighting modules, and the train engine on an NNX model.

Flax 0.12 teaches NNX (``flax.nnx``) first. This module gives NNX users the
two things :mod:`mtl_jax.flax` and :func:`mtl_jax.train.module_apply_fn` give
linen users:

* :class:`UncertaintyWeighting` (Kendall et al., CVPR 2018) and
  :class:`IMTLLWeighting` (Liu et al., ICLR 2021): NNX modules holding the
  learnable log-variances / log-scales as ``nnx.Param``; they call the same
  pure functions as the linen modules and the registry's ``"uw"`` and
  ``"imtl_l"``, so the maths lives in one place.
* :func:`split_model` (:func:`model_apply_fn` plus :func:`model_variables`)
  turns an NNX model into the engine's pure ``model_apply`` and its initial
  variables, so the unchanged train step of :mod:`mtl_jax.train` (``jit``,
  :func:`~mtl_jax.train.pmap_step`, :func:`~mtl_jax.train.mesh_step`, the
  non-finite guard, checkpoints and resume in :func:`~mtl_jax.train.train`)
  trains it; :func:`update_model` writes the trained values back into the
  model.

How an NNX model maps onto the engine's variables
(``{"params": params["model"], **model_state}``):

* every ``nnx.Param`` goes to ``params["model"]``, a nested dict keyed by the
  attribute path (the layout of ``nnx.to_pure_dict``), which the optimiser,
  the Jacobian's ``task_params`` patterns and the checkpoints read;
* every other variable (``nnx.BatchStat``...) goes to the model state,
  grouped by its collection name as linen would (``{"batch_stats": ...}``);
  in training it is updated by the forward pass and averaged over devices
  like linen's batch statistics;
* RNG streams (``nnx.Rngs``, the stream a ``nnx.Dropout`` holds) are not
  state: at every training step each stream is reseeded from the step's keys
  (``rng_names`` of :func:`~mtl_jax.train.make_train_step`, which differ per
  step and per device), so dropout follows ``state.rng`` exactly as in a
  linen model and a checkpoint holds no key arrays;
* the engine's ``train`` flag sets ``deterministic`` and
  ``use_running_average`` of every submodule that has them (what
  ``model.train()`` / ``model.eval()`` do), and with ``train_arg`` is also
  passed to ``__call__``;
* features marked with ``self.perturb(name, x)`` are what the Jacobian's
  representation mode (``JacobianOptions(mode="features")``) differentiates.

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> from flax import nnx
  >>> import mtl_jax
  >>> from mtl_jax import nnx as mtl_nnx, train
  >>> class Net(nnx.Module):
  ...   def __init__(self, rngs):
  ...     self.trunk = nnx.Linear(4, 8, rngs=rngs)
  ...     self.heads = nnx.Linear(8, 2, rngs=rngs)  # one output per task
  ...   def __call__(self, x):
  ...     return self.heads(jnp.tanh(self.trunk(x)))
  >>> net = Net(nnx.Rngs(0))
  >>> model_apply, variables = mtl_nnx.split_model(net, input_key="x")
  >>> task_losses = lambda out, batch: jnp.mean((out - batch["y"]) ** 2, axis=0)
  >>> uw = mtl_jax.get("uw")
  >>> tx = train.make_optimizer(optax.adam(1e-2), method_learning_rate=1e-2)
  >>> state = train.init_train_state(jax.random.PRNGKey(0), variables, uw, tx,
  ...                                num_tasks=2)
  >>> step = jax.jit(train.make_train_step(model_apply, task_losses, uw, tx))
  >>> batch = {"x": jnp.ones((16, 4)), "y": jnp.zeros((16, 2))}
  >>> state, metrics = step(state, batch)
  >>> mtl_nnx.update_model(net, state)   # the trained values, back in net
  >>> int(metrics["step"]), metrics["weights"].shape
  (1, (2,))
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, traverse_util

from mtl_jax import _checks
from mtl_jax._trees import first_difference
from mtl_jax.train.state import TrainState, init_train_state
from mtl_jax.train.step import PERTURBATIONS, ModelApply, make_init_perturbations
from mtl_jax.weighting.imtl_l import imtl_l_loss
from mtl_jax.weighting.uw import task_type_factors, uncertainty_loss

__all__ = (
    "IMTLLWeighting",
    "UncertaintyWeighting",
    "create_train_state",
    "model_apply_fn",
    "model_variables",
    "split_model",
    "update_model",
)

PyTree = Any
Path = tuple[Any, ...]

# Not state of the train step: RNG streams are reseeded from the step's keys,
# perturbations and intermediates are per-call outputs.
_FIXED = (nnx.RngState, nnx.Perturbation, nnx.Intermediate)


# --------------------------------------------------------------- weightings


class UncertaintyWeighting(nnx.Module):
  r"""Kendall et al.'s uncertainty weighting with ``log_vars`` as ``nnx.Param``.

  .. math::

    \mathcal{L} = \sum_{k=1}^{K} c_k\, e^{-s_k} L_k + \tfrac{1}{2} s_k,
    \qquad w_k = c_k\, e^{-s_k}

  where :math:`L_k` is the loss of task :math:`k`, :math:`s_k = \log
  \sigma_k^2` its learnable log-variance (``self.log_vars``) and :math:`c_k`
  is 1/2 for a regression task and 1 for a classification task. Computed by
  :func:`mtl_jax.weighting.uncertainty_loss`, as the linen
  :class:`mtl_jax.flax.UncertaintyWeighting` and ``mtl_jax.get("uw")`` do.

  Args:
    num_tasks: K.
    task_types: ``"regression"`` / ``"classification"`` per task; default all
      regression.
    init_log_var: initial :math:`s_k`; 0 as in the paper (LibMTL and MTAN use
      -0.5).

  Example:
    >>> import jax.numpy as jnp
    >>> from mtl_jax.nnx import UncertaintyWeighting
    >>> uw = UncertaintyWeighting(num_tasks=2)
    >>> total, weights = uw(jnp.array([1.0, 2.0]))  # (K,) task losses
    >>> float(total), weights.tolist()
    (1.5, [0.5, 0.5])

  References:
    Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics", CVPR 2018,
    https://arxiv.org/abs/1705.07115.
  """

  def __init__(self, num_tasks: int, task_types: Sequence[str] | None = None,
               init_log_var: float = 0.0):
    num_tasks = _checks.integer(num_tasks, "num_tasks", "UncertaintyWeighting",
                                low=1)
    task_type_factors(task_types, num_tasks)  # a ValueError for a bad one
    _checks.number(init_log_var, "init_log_var", "UncertaintyWeighting",
                   hint="It is the initial log-variance s_k (the paper: 0; "
                   "LibMTL: -0.5).")
    self.num_tasks = num_tasks
    self.task_types = None if task_types is None else tuple(task_types)
    self.log_vars = nnx.Param(jnp.full((num_tasks,), init_log_var, jnp.float32))

  def __call__(self, losses: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns ``(total, weights)`` for the ``(K,)`` losses; the weights carry
    no gradient."""
    return uncertainty_loss(losses, self.log_vars[...], self.task_types)


class IMTLLWeighting(nnx.Module):
  r"""IMTL-L with ``log_scales`` as ``nnx.Param``.

  .. math::

    \mathcal{L} = \sum_{k=1}^{K} e^{s_k} L_k - s_k, \qquad w_k = e^{s_k}

  where :math:`L_k` is the loss of task :math:`k` and :math:`s_k` its
  learnable log-scale (``self.log_scales``); at the optimum every scaled loss
  :math:`e^{s_k} L_k` is 1. Computed by :func:`mtl_jax.weighting.imtl_l_loss`,
  as the linen :class:`mtl_jax.flax.IMTLLWeighting` and
  ``mtl_jax.get("imtl_l")`` do.

  Args:
    num_tasks: K.
    init_log_scale: initial :math:`s_k`; 0 (all weights 1) as in the paper.

  Example:
    >>> import jax.numpy as jnp
    >>> from mtl_jax.nnx import IMTLLWeighting
    >>> imtl = IMTLLWeighting(num_tasks=2)
    >>> total, weights = imtl(jnp.array([1.0, 2.0]))
    >>> float(total), weights.tolist()
    (3.0, [1.0, 1.0])

  References:
    Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial
    Multi-task Learning", ICLR 2021,
    https://openreview.net/forum?id=IMPnRXEWpvr.
  """

  def __init__(self, num_tasks: int, init_log_scale: float = 0.0):
    num_tasks = _checks.integer(num_tasks, "num_tasks", "IMTLLWeighting", low=1)
    _checks.number(init_log_scale, "init_log_scale", "IMTLLWeighting",
                   hint="It is the initial log-scale s_k (0: all weights 1).")
    self.num_tasks = num_tasks
    self.log_scales = nnx.Param(
        jnp.full((num_tasks,), init_log_scale, jnp.float32))

  def __call__(self, losses: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns ``(total, weights)`` for the ``(K,)`` losses; the weights carry
    no gradient."""
    return imtl_l_loss(losses, self.log_scales[...])


# ------------------------------------------------------- the engine's bridge


def _check_model(model: Any, where: str) -> None:
  if isinstance(model, nn.Module):
    raise ValueError(
        f"{where} takes a Flax NNX model (a flax.nnx.Module instance), got the "
        f"linen module {type(model).__name__}. For linen use "
        "mtl_jax.train.module_apply_fn(module) and "
        "mtl_jax.train.create_train_state(...).")
  if isinstance(model, type) and issubclass(model, nnx.Module):
    raise ValueError(
        f"{where} takes a built NNX model, got the class {model.__name__}: "
        f"pass an instance, e.g. {model.__name__}(..., rngs=nnx.Rngs(0)).")
  if not isinstance(model, nnx.Module):
    raise ValueError(
        f"{where} takes a Flax NNX model (a flax.nnx.Module instance), got "
        f"{type(model).__name__}. Build the network as a subclass of "
        "flax.nnx.Module and pass the instance.")


def _collection(variable_type: type) -> str:
  """The linen-style collection name of an NNX variable type."""
  try:
    return nnx.variable_name_from_type(variable_type)
  except (ValueError, KeyError):  # a user's type nobody registered
    return variable_type.__name__


def _flat(state: nnx.State) -> dict[Path, nnx.Variable]:
  return dict(nnx.to_flat_state(state))


class _Layout:
  """Where each variable of an NNX model goes in the engine's variables."""

  def __init__(self, model: nnx.Module, where: str):
    _check_model(model, where)
    graphdef, params, fixed, rest = nnx.split(model, nnx.Param, _FIXED, ...)
    params = _flat(params)
    if not params:
      raise ValueError(
          f"{where}: the NNX model {type(model).__name__} holds no nnx.Param, "
          "so there is nothing to train. Give it layers (nnx.Linear...) or "
          "nnx.Param attributes.")
    self.graphdef = graphdef
    # Values only: merge then makes fresh variables inside each trace, which
    # the step may reseed.
    self.fixed = nnx.to_pure_dict(fixed)
    self.param_paths = tuple(params)
    collections: dict[str, list[Path]] = {}
    for path, variable in _flat(rest).items():
      collections.setdefault(_collection(type(variable)), []).append(path)
    if "params" in collections or PERTURBATIONS in collections:
      raise ValueError(
          f"{where}: a non-Param variable type of {type(model).__name__} is "
          "named 'params' or 'perturbations', which the engine reserves; "
          "register it under another name (nnx.register_variable_name).")
    self.collections = {name: tuple(paths)
                        for name, paths in sorted(collections.items())}
    self.has_rngs = any(isinstance(v, nnx.RngKey)
                        for v in _flat(fixed).values())

  def variables(self, model: nnx.Module) -> dict[str, Any]:
    values = {p: v.get_value() for p, v in _flat(nnx.state(model)).items()}
    nest = traverse_util.unflatten_dict
    out = {"params": nest({p: values[p] for p in self.param_paths})}
    for name, paths in self.collections.items():
      out[name] = nest({p: values[p] for p in paths})
    return out

  def merge(self, variables: Mapping[str, Any]) -> nnx.Module:
    missing = set(self.collections) - set(variables)
    extra = set(variables) - set(self.collections) - {"params"}
    if missing or extra:
      raise ValueError(
          f"the model state has the collections {sorted(set(variables) - {'params'})} "
          f"but this NNX model has {sorted(self.collections)}: build the "
          "train state from the same model (mtl_jax.nnx.model_variables or "
          "split_model).")
    return nnx.merge(self.graphdef, variables["params"],
                     *(variables[name] for name in self.collections),
                     self.fixed)


def _crc(text: str) -> int:
  return zlib.crc32(text.encode()) % 2**31


def _reseed(model: nnx.Module, rngs: Mapping[str, jax.Array]) -> None:
  """Gives every RNG stream of ``model`` a fresh key from the step's keys.

  A stream named like one of ``rngs`` folds in its path (two Dropout layers
  draw different masks); a stream of another name (``nnx.Rngs(0)`` gives
  every layer the ``"default"`` stream) starts from the first key, folded
  with its name.
  """
  first = next(iter(rngs.values()))
  for path, node in nnx.iter_graph(model):
    if not isinstance(node, nnx.RngStream):
      continue
    tag = node.tag
    base = rngs[tag] if tag in rngs else jax.random.fold_in(first, _crc(tag))
    key = jax.random.fold_in(base, _crc("/".join(map(str, path))))
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      key = jax.random.wrap_key_data(key)
    shape = node.key.get_value().shape
    if shape:
      key = jax.random.split(key, shape)
    node.key.set_value(key)
    node.count.set_value(jnp.zeros(shape, jnp.uint32))


def model_apply_fn(model: nnx.Module, *, input_key: str = "image",
                   train_arg: str | None = None,
                   **call_kwargs: Any) -> ModelApply:
  """Adapts a Flax NNX model to the engine's :data:`~mtl_jax.train.step.ModelApply`.

  The NNX twin of :func:`mtl_jax.train.module_apply_fn`. Each call rebuilds
  the model from the engine's variables (``nnx.merge``), calls
  ``model(batch[input_key], **call_kwargs)`` and returns its outputs (e.g. a
  dict of per-task predictions) and the new model state. In training
  (``train=True``) the non-param variables (``nnx.BatchStat``...) are
  updated by the call and returned; in evaluation they are returned
  unchanged. The model passed in is only read, here and later: the train
  state holds the values (:func:`update_model` writes them back).

  Args:
    model: a built ``flax.nnx.Module``; only its structure and its RNG
      streams are kept (the values come from the train state).
    input_key: key of the model input in the batch.
    train_arg: name of a keyword argument of the model's ``__call__`` that
      receives the train flag (e.g. ``"train"``); ``None``: the flag only
      sets ``deterministic`` / ``use_running_average`` of the submodules that
      have them (always done).
    **call_kwargs: further keyword arguments of every call.

  Returns:
    ``model_apply(variables, batch, *, train, rngs)``, with an
    ``init_perturbations(variables, batch)`` attribute for the Jacobian's
    representation mode (zeros shaped like the features the model marks
    with ``self.perturb(name, x)``, from shapes only).

  Raises:
    ValueError: ``model`` is not an NNX module instance (a linen module, a
      class...) or has no ``nnx.Param``; in training, the model holds RNG
      streams but the step gives it no keys (``rng_names=()``).
  """
  layout = _Layout(model, "mtl_jax.nnx.model_apply_fn")
  kwargs = dict(call_kwargs)

  def build(variables, train):
    net = layout.merge(variables)
    net.set_attributes(deterministic=not train, use_running_average=not train,
                       raise_if_not_found=False)
    args = {**kwargs, train_arg: train} if train_arg else kwargs
    return net, args

  def model_apply(variables, batch, *, train, rngs):
    variables = dict(variables)
    perturbations = variables.pop(PERTURBATIONS, None)
    net, args = build(variables, train)
    if train and layout.has_rngs:
      if not rngs:
        raise ValueError(
            f"{type(model).__name__} holds RNG streams (e.g. for nnx.Dropout) "
            "but the train step gives it no keys: build the step with "
            "rng_names=('dropout',) (make_train_step's default), naming the "
            "streams the model draws from.")
      _reseed(net, rngs)
    if perturbations is None:
      outputs = nnx.capture(net)(batch[input_key], **args)
    else:
      init = jax.tree.map(nnx.Perturbation, perturbations)
      outputs = nnx.capture(net, init=init)(batch[input_key], **args)
    if not train or not layout.collections:
      return outputs, {name: variables[name] for name in layout.collections}
    new_state = layout.variables(net)
    new_state.pop("params")
    return outputs, new_state

  def perturbed(variables, batch):
    net, args = build(variables, False)
    _, perturbations = nnx.capture(net, nnx.Perturbation)(batch[input_key],
                                                           **args)
    return traverse_util.unflatten_dict(
        {p: v.get_value() for p, v in _flat(perturbations).items()})

  model_apply.init_perturbations = make_init_perturbations(perturbed, model)
  return model_apply


def model_variables(model: nnx.Module) -> dict[str, Any]:
  """The model's current values as engine variables.

  ``{"params": <every nnx.Param>, **<other variables by collection>}``, e.g.
  ``{"params": {...}, "batch_stats": {...}}``, each a nested dict keyed by
  attribute path; what :func:`mtl_jax.train.init_train_state` takes. RNG
  streams, perturbations and intermediates are left out (module docstring).
  """
  return _Layout(model, "mtl_jax.nnx.model_variables").variables(model)


def split_model(model: nnx.Module, *, input_key: str = "image",
                train_arg: str | None = None, **call_kwargs: Any
                ) -> tuple[ModelApply, dict[str, Any]]:
  """``(model_apply_fn(model, ...), model_variables(model))`` in one call.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from mtl_jax.nnx import split_model
    >>> net = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> model_apply, variables = split_model(net, input_key="x")
    >>> sorted(variables["params"])
    ['bias', 'kernel']
    >>> outputs, state = model_apply(variables, {"x": jnp.ones((5, 3))},
    ...                              train=False, rngs={})
    >>> outputs.shape, state
    ((5, 2), {})
  """
  return (model_apply_fn(model, input_key=input_key, train_arg=train_arg,
                         **call_kwargs),
          model_variables(model))


def create_train_state(rng: jax.Array, model: nnx.Module, method: Any,
                       optimizer: optax.GradientTransformation,
                       num_tasks: int, *, task_params: Any = None
                       ) -> TrainState:
  """The train state at step 0 for an NNX model (already initialised).

  :func:`mtl_jax.train.init_train_state` of :func:`model_variables`; the
  NNX counterpart of :func:`mtl_jax.train.create_train_state`, which
  initialises a linen model from a sample batch.
  """
  return init_train_state(rng, model_variables(model), method, optimizer,
                          num_tasks, task_params=task_params)


def update_model(model: nnx.Module, state: TrainState | Mapping[str, Any]
                 ) -> None:
  """Writes trained values back into the NNX model, in place (``nnx.update``).

  Args:
    model: the model the train state was built from (or one of the same
      structure).
    state: a :class:`~mtl_jax.train.TrainState` (as returned by
      :func:`mtl_jax.train.train`, one host copy) whose ``params["model"]``
      and ``model_state`` are written (copied: a step that donates the state
      afterwards leaves the model intact), or engine variables
      ``{"params": ..., **collections}``.

  Raises:
    ValueError: the values do not have the model's structure or shapes,
      naming the first differing leaf (a pmapped state still has its device
      axis: pass ``mtl_jax.train.unreplicate(state)``).
  """
  layout = _Layout(model, "mtl_jax.nnx.update_model")
  if isinstance(state, TrainState):
    variables = {"params": state.params["model"], **state.model_state}
  elif isinstance(state, Mapping) and "params" in state:
    variables = dict(state)
  else:
    raise ValueError(
        "mtl_jax.nnx.update_model takes a TrainState or engine variables "
        f"{{'params': ..., **collections}}, got {type(state).__name__}.")
  shapes = lambda tree: {jax.tree_util.keystr(p): np.shape(x) for p, x in
                         jax.tree_util.tree_flatten_with_path(tree)[0]}
  diff = first_difference(shapes(variables), shapes(layout.variables(model)))
  name = type(model).__name__
  if diff is None:
    pass
  elif diff.got is None:
    raise ValueError(
        f"update_model: the state has no leaf {diff.path} of {name} (shape "
        f"{diff.want}); it was built from another model.")
  elif diff.want is None:
    raise ValueError(
        f"update_model: the state has leaves {name} does not have, e.g. "
        f"{diff.path}; it was built from another model.")
  else:
    raise ValueError(
        f"update_model: leaf {diff.path} has shape {diff.got} but {name} has "
        f"{diff.want}. A pmapped state still has its device axis: pass "
        "mtl_jax.train.unreplicate(state).")
  # Copies: a step that donates the state must not delete the model's arrays.
  copy = lambda x: jnp.array(x, copy=True)
  nnx.update(model, *(jax.tree.map(copy, variables[name])
                      for name in ("params", *layout.collections)))
