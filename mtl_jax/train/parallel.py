"""Placing the train step, its state and its batches on devices and hosts.

Three ways to run the same step (built by :func:`make_train_step`):

* one device: ``jax.jit(step)`` with ``axis_name=None``;
* ``jax.pmap`` over the local devices (:func:`pmap_step`), the state
  replicated with a leading device axis, the batch reshaped to
  ``(local_devices, per_device, ...)`` (:func:`shard_batch`);
* ``jax.jit`` of ``jax.shard_map`` over a 1-D mesh (:func:`mesh_step`), the
  state replicated (``P()``), the batch a global array sharded on its leading
  axis (:func:`global_batch`).

Multi-host: call :func:`initialize_distributed` first in every process, give
each process its own slice of the data (the input pipeline's job: shard by
``jax.process_index()`` / ``jax.process_count()``), and build global arrays
from the process-local batches with the helpers here. A :class:`Placement`
bundles these for the loop.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *,
                           cpu_collectives: str | None = "gloo",
                           **kwargs: Any) -> None:
  """``jax.distributed.initialize``, with CPU collectives switched on.

  Call it in every process before any other JAX call. On TPU pods and SLURM
  clusters the arguments can be left out (JAX finds them). On CPU,
  cross-process collectives need an implementation (``"gloo"``); the option
  is ignored by GPU and TPU backends.
  """
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             **kwargs)


def is_main_process() -> bool:
  """True in process 0, the only one that writes logs."""
  return jax.process_index() == 0


def to_host(tree: PyTree) -> PyTree:
  """One host (numpy) copy of a replicated or single-device pytree.

  Works for arrays that are not fully addressable (multi-host replicated
  arrays): it reads this process's first shard. All transfers are started
  before the first one is waited for. The result owns its memory, so the
  device buffers can be donated afterwards.
  """
  def shard(x):
    return x.addressable_data(0) if isinstance(x, jax.Array) else x
  shards = jax.tree.map(shard, tree)
  for x in jax.tree.leaves(shards):
    if isinstance(x, jax.Array):
      x.copy_to_host_async()
  return jax.tree.map(np.array, shards)


def replicate(tree: PyTree, axis_name: str = "batch",
              devices: list | None = None) -> PyTree:
  """Copies ``tree`` to every local device, with a leading device axis (pmap).

  The arrays get the sharding that ``jax.pmap(..., axis_name=axis_name)``
  gives its outputs, so the second call of the pmapped step reuses the
  first call's executable instead of compiling again.
  """
  devices = devices or jax.local_devices()
  sharding = NamedSharding(Mesh(np.array(devices), (axis_name,)), P(axis_name))
  def put(x):
    x = np.asarray(x)
    return jax.device_put(np.broadcast_to(x, (len(devices),) + x.shape),
                          sharding)
  return jax.tree.map(put, tree)


def unreplicate(tree: PyTree) -> PyTree:
  """Host copy of the first replica of a pmapped (replicated) pytree."""
  return jax.tree.map(lambda x: x[0], to_host(tree))


def shard_batch(batch: PyTree, num_devices: int | None = None) -> PyTree:
  """Reshapes a process-local batch ``(B, ...)`` to ``(devices, B/devices, ...)``.

  Raises:
    ValueError: when ``B`` is not a multiple of the local device count.
  """
  n = num_devices or jax.local_device_count()
  def reshape(x):
    x = np.asarray(x)
    if x.shape[0] % n:
      raise ValueError(
          f"the local batch size {x.shape[0]} is not a multiple of the "
          f"{n} local devices; every device needs the same number of examples "
          "for the data-parallel step to equal the whole-batch step.")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])
  return jax.tree.map(reshape, batch)


def make_mesh(axis_name: str = "data",
              devices: list | None = None) -> Mesh:
  """A 1-D mesh over all (global) devices, with an ``Auto`` axis."""
  devices = devices or jax.devices()
  return jax.make_mesh((len(devices),), (axis_name,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def global_batch(local_batch: PyTree, mesh: Mesh,
                 axis_name: str = "data") -> PyTree:
  """Global arrays sharded on the leading axis, from process-local batches.

  Each process passes its own slice; the global batch is their
  concatenation in process order (``jax.make_array_from_process_local_data``).
  """
  sharding = NamedSharding(mesh, P(axis_name))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)


def replicate_on_mesh(tree: PyTree, mesh: Mesh) -> PyTree:
  """Puts an identical host pytree on every device of the mesh (``P()``)."""
  sharding = NamedSharding(mesh, P())
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(put, tree)


def pmap_step(step: Callable, axis_name: str = "batch", *,
              donate: bool = True) -> Callable:
  """``jax.pmap`` of a step built with the same ``axis_name``."""
  return jax.pmap(step, axis_name=axis_name,
                  donate_argnums=(0,) if donate else ())


def mesh_step(step: Callable, mesh: Mesh, axis_name: str = "data", *,
              out_specs: Any = P(),  # noqa: B008 (immutable)
              donate: bool = True) -> Callable:
  """``jax.jit(jax.shard_map(step))``: state replicated, batch sharded.

  ``out_specs`` defaults to replicated outputs (the train step's state and
  metrics); an eval step that returns local outputs passes
  ``(P(), P(axis_name))``. ``check_vma`` is off: the step averages
  explicitly, exactly as under pmap.
  """
  mapped = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(axis_name)),
                         out_specs=out_specs, check_vma=False)
  return jax.jit(mapped, donate_argnums=(0,) if donate else ())


class Placement(NamedTuple):
  """How the loop moves states and batches between host and devices.

  Attributes:
    put_state: host state -> the step's input (replicated when needed).
    put_batch: process-local host batch -> the step's input.
    get: a step output (state or metrics) -> one host (numpy) copy.
  """
  put_state: Callable[[PyTree], PyTree]
  put_batch: Callable[[PyTree], PyTree]
  get: Callable[[PyTree], PyTree]


def single_device() -> Placement:
  """For ``jax.jit(step)`` on the default device (or GSPMD by hand)."""
  return Placement(jax.device_put, lambda b: b, to_host)


def pmap_placement(axis_name: str = "batch") -> Placement:
  """For :func:`pmap_step`: replicated state, batch split over local devices."""
  return Placement(lambda s: replicate(s, axis_name), shard_batch, unreplicate)


def mesh_placement(mesh: Mesh, axis_name: str = "data") -> Placement:
  """For :func:`mesh_step`: replicated state, global batch sharded on ``axis_name``."""
  return Placement(lambda s: replicate_on_mesh(s, mesh),
                   lambda b: global_batch(b, mesh, axis_name), to_host)
