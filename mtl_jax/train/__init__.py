"""The training engine: a pure, data-parallel train step and the loop around it.

* :func:`create_train_state`, :class:`TrainState`: one pytree with
  ``params["model"]``, ``params["method"]``, optimiser, model and
  method state, step, PRNG key and skip counters.
* :func:`make_train_step`, :func:`make_eval_step`: pure steps that run
  unchanged under ``jax.jit``, ``jax.pmap`` and ``jax.shard_map``, with the
  same maths on one device and many (see :mod:`mtl_jax.train.step`), for
  loss-weighting and gradient-space methods alike: the latter take the
  Jacobian path (:func:`jacobian_gradients`, :mod:`mtl_jax.train.jacobian`).
* :func:`make_optimizer`: ``optax.partition`` of the model's and the method's params.
* :func:`pmap_step`, :func:`mesh_step` and the placements, plus multi-host
  helpers (:func:`initialize_distributed`, :func:`global_batch`).
* :func:`train`: the loop (metrics, logs, checkpoints, resume, non-finite
  guard); :class:`Checkpointer` on its own.
* :func:`count_collectives`: the collectives of a compiled step.
"""
from mtl_jax.train.checkpoint import Checkpointer
from mtl_jax.train.gradients import (
    GradientFn,
    Gradients,
    global_losses,
    jacobian_gradients,
    weighted_sum_gradients,
)
from mtl_jax.train.hlo import CollectiveOp, count_collectives, host_transfers
from mtl_jax.train.jacobian import JacobianOptions, TaskParamRule, task_param_mask
from mtl_jax.train.loop import NonFiniteError, NonFiniteWarning, train
from mtl_jax.train.optim import make_optimizer, param_labels
from mtl_jax.train.parallel import (
    Placement,
    global_batch,
    initialize_distributed,
    is_main_process,
    make_mesh,
    mesh_placement,
    mesh_step,
    pmap_placement,
    pmap_step,
    replicate,
    replicate_on_mesh,
    shard_batch,
    single_device,
    to_host,
    unreplicate,
)
from mtl_jax.train.state import TrainState, create_train_state, init_train_state
from mtl_jax.train.step import make_eval_step, make_train_step, module_apply_fn
from mtl_jax.train.writers import MetricsWriter, read_metrics

__all__ = (
    "Checkpointer",
    "CollectiveOp",
    "GradientFn",
    "Gradients",
    "JacobianOptions",
    "MetricsWriter",
    "NonFiniteError",
    "NonFiniteWarning",
    "Placement",
    "TaskParamRule",
    "TrainState",
    "count_collectives",
    "create_train_state",
    "global_batch",
    "global_losses",
    "host_transfers",
    "init_train_state",
    "initialize_distributed",
    "is_main_process",
    "jacobian_gradients",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "mesh_placement",
    "mesh_step",
    "module_apply_fn",
    "param_labels",
    "pmap_placement",
    "pmap_step",
    "read_metrics",
    "replicate",
    "replicate_on_mesh",
    "shard_batch",
    "single_device",
    "task_param_mask",
    "to_host",
    "train",
    "unreplicate",
    "weighted_sum_gradients",
)
