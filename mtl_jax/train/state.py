"""The train state: one pytree holding everything a run needs to resume.

``params`` is a single param tree with two top-level keys, ``"model"`` and
``"method"``, so one optax optimiser (see :func:`make_optimizer`) trains
the network and the method's learnable parameters (UW's ``log_vars``,
IMTL-L's ``log_scales``) together, and one checkpoint holds both.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from mtl_jax._registry import Method
from mtl_jax.aggregation import JacobianAggregator

PyTree = Any
Batch = Mapping[str, Any]


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training, as one pytree.

  Attributes:
    step: () int32, number of batches consumed (skipped steps included).
    params: ``{"model": ..., "method": ...}``, the trained parameters.
    opt_state: the optax state of ``params``.
    model_state: non-trained model collections, e.g. ``{"batch_stats": ...}``
      (``{}`` when the model has none).
    method_state: the method's non-learnable state (DWA's epoch means,
      RLW's key; for a gradient-space method Nash-MTL's warm start, GradVac's
      averages, PCGrad's key).
    rng: (2,) uint32 PRNG key, split at every step (dropout keys).
    consecutive_skips: () int32, steps skipped in a row by the non-finite
      guard; 0 after a good step.
    total_skips: () int32, steps skipped since the start of the run.
  """
  step: jax.Array
  params: PyTree
  opt_state: optax.OptState
  model_state: PyTree
  method_state: PyTree
  rng: jax.Array
  consecutive_skips: jax.Array
  total_skips: jax.Array


def init_method(method: Method, num_tasks: int, key: jax.Array,
                model_params: PyTree, task_params: Any = None
                ) -> tuple[PyTree, PyTree]:
  """``method.init``, given the number of shared parameters when it needs it.

  A gradient-space method that reads the Jacobian itself and keeps
  ``(K, P)`` buffers (a ``JacobianAggregator``: MoCo, DB-MTL, ExcessMTL)
  sizes them by ``P``, the shared parameters of ``model_params`` under the
  rule ``task_params`` (the same rule the train step gets).
  """
  if not isinstance(method, JacobianAggregator):
    return method.init(num_tasks, key=key)
  from mtl_jax.train import jacobian as jac_lib  # pylint: disable=g-import-not-at-top
  mask = jac_lib.task_param_mask(model_params, task_params)
  shared = jac_lib.split_params(model_params, mask)[0].shared
  num_params = sum(int(x.size) for x in jax.tree.leaves(shared))
  return method.init(num_tasks, key=key, num_params=num_params)


def init_train_state(rng: jax.Array, model_variables: Mapping[str, PyTree],
                     method: Method, optimizer: optax.GradientTransformation,
                     num_tasks: int, *, task_params: Any = None) -> TrainState:
  """Builds a :class:`TrainState` from already initialised model variables.

  Args:
    rng: a PRNG key (``jax.random.PRNGKey``); split for the method and the
      step keys.
    model_variables: Flax variables, ``{"params": ..., **other collections}``.
    method: a method of either family, from :func:`mtl_jax.get`; its
      ``init`` gives the learnable ``params["method"]`` and the
      ``method_state`` (a gradient-space method's state: Nash-MTL's warm
      start, GradVac's averages, PCGrad's key).
    optimizer: trains ``{"model": ..., "method": ...}``; see
      :func:`make_optimizer`.
    num_tasks: K, the number of task losses.
    task_params: the task-specific parameters, as given to
      :func:`~mtl_jax.train.make_train_step`; only a method with ``(K, P)``
      buffers (MoCo, DB-MTL, ExcessMTL) reads it, to size them.

  Returns:
    The state at step 0.
  """
  method_key, rng = jax.random.split(rng)
  method_params, method_state = init_method(
      method, num_tasks, method_key, model_variables["params"],
      task_params)
  variables = dict(model_variables)
  # Perturbations (self.perturb) are batch-shaped zeros, not state: the
  # Jacobian's representation mode builds them per batch.
  variables.pop("perturbations", None)
  params = {"model": variables.pop("params"), "method": method_params}
  zero = jnp.zeros((), jnp.int32)
  state = TrainState(step=zero, params=params, opt_state=optimizer.init(params),
                     model_state=variables, method_state=method_state,
                     rng=rng, consecutive_skips=zero, total_skips=zero)
  # One buffer per leaf: init functions may share arrays between leaves
  # (a single `zeros` for several fields), which a donating step rejects.
  return jax.tree.map(lambda x: jnp.array(x, copy=True), state)


def create_train_state(rng: jax.Array, model: nn.Module, sample_batch: Batch,
                       method: Method,
                       optimizer: optax.GradientTransformation, num_tasks: int,
                       *, input_key: str = "image",
                       init_kwargs: Mapping[str, Any] | None = None,
                       task_params: Any = None) -> TrainState:
  """Initialises a Flax linen model and returns the state at step 0.

  The model is initialised with ``model.init(rngs, sample_batch[input_key],
  train=False, **init_kwargs)`` (rngs ``"params"`` and ``"dropout"``); only
  the shapes of ``sample_batch`` matter, so one local batch will do.

  Args:
    rng: a PRNG key.
    model: a linen Module whose ``__call__(x, train)`` returns the outputs.
    sample_batch: a batch (dict) holding the model input under ``input_key``
      (an array, or a pytree of arrays such as a graph's).
    method: a method of either family, from :func:`mtl_jax.get`.
    optimizer: see :func:`make_optimizer`.
    num_tasks: K.
    input_key: key of the model input in the batch.
    init_kwargs: extra keyword arguments of ``model.init``.
    task_params: as given to :func:`~mtl_jax.train.make_train_step`; sizes
      the ``(K, P)`` buffers of MoCo, DB-MTL and ExcessMTL.

  Returns:
    A :class:`TrainState` with float32 parameters on the default device.
  """
  init_rng, params_rng, dropout_rng = jax.random.split(rng, 3)
  variables = model.init({"params": params_rng, "dropout": dropout_rng},
                         jax.tree.map(jnp.asarray, sample_batch[input_key]), train=False,
                         **dict(init_kwargs or {}))
  return init_train_state(init_rng, variables, method, optimizer, num_tasks,
                          task_params=task_params)
