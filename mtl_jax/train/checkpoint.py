"""Checkpoints of the train state and the data position, with orbax.

A :class:`Checkpointer` wraps ``orbax.checkpoint.CheckpointManager``: it keeps
the last ``max_to_keep`` steps and saves, per step, a composite of

* ``state``: the :class:`TrainState` as a host (numpy) pytree: params,
  optimiser state, model and weighting state, step, PRNG key, skip counters;
* ``data``: the JSON state of every process's data iterator (any iterator
  with ``get_state()`` / ``set_state()``, e.g. Grain's), gathered from all
  processes so that each one resumes its own shard.

Saves are atomic by orbax's design: a step is written to a temporary
directory and renamed when complete, so a process killed while saving
leaves no half-written step that ``latest_step`` or ``restore`` could pick.
In a multi-process run every process calls ``save`` and ``restore``; orbax
writes the (replicated) state from the primary process only.
"""
from __future__ import annotations

import base64
import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

PyTree = Any
_BYTES = "__bytes_b64__"


def _encode(data_state: Any) -> Any:
  """Makes an iterator state JSON-friendly (Grain's DataLoader gives bytes)."""
  if isinstance(data_state, (bytes, bytearray)):
    return {_BYTES: base64.b64encode(bytes(data_state)).decode("ascii")}
  return data_state


def _decode(data_state: Any) -> Any:
  if isinstance(data_state, dict) and set(data_state) == {_BYTES}:
    return base64.b64decode(data_state[_BYTES])
  return data_state


def gather_json(obj: Any) -> list[Any]:
  """``obj`` of every process, in process order (a collective: call it in all)."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(
      np.array([data.size], np.int32))).reshape(-1)
  padded = np.zeros((int(sizes.max()),), np.uint8)
  padded[:data.size] = data
  rows = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(bytes(row[:size]).decode()) for row, size in zip(rows, sizes)]


class Checkpointer:
  """Periodic, atomic checkpoints of a train state and the data position.

  Args:
    directory: where the steps are written (created if missing).
    max_to_keep: number of most recent steps kept; older ones are deleted.
    async_save: write in a background thread (the host copy is taken before
      ``save`` returns); :meth:`close` waits for the last write.
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3,
               async_save: bool = True):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep!r}.")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=async_save)
    self.directory = os.fspath(os.path.abspath(directory))
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=("state", "data"))

  def latest_step(self) -> Optional[int]:
    """The newest complete step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """All complete steps on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: PyTree, data_state: Any = None) -> None:
    """Saves the host pytree ``state`` and this process's ``data_state``.

    A collective in multi-process runs: every process must call it.
    """
    everyone = gather_json(_encode(data_state))
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({"processes": everyone}))
    self._manager.save(int(step), args=args, force=True)

  def restore(self, template: PyTree, step: Optional[int] = None
              ) -> tuple[PyTree, Any]:
    """Restores ``(state, data_state)`` of ``step`` (default: the latest).

    Args:
      template: a host pytree with the structure, shapes and dtypes of the
        saved state (e.g. the freshly initialised state).
      step: which step; the latest complete one when None.

    Returns:
      The state as host (numpy) arrays and this process's data state (None
      if none was saved).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}.")
    template = jax.tree.map(np.asarray, template)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(template),
        data=ocp.args.JsonRestore()))
    state = jax.tree.map(np.asarray, restored.state)
    processes = (restored.data or {}).get("processes") or []
    index = jax.process_index()
    data_state = _decode(processes[index]) if index < len(processes) else None
    return state, data_state

  def wait(self) -> None:
    """Blocks until the pending asynchronous save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
