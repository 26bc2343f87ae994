"""Checkpoints of the train state and the data position, with orbax.

A :class:`Checkpointer` wraps ``orbax.checkpoint.CheckpointManager``: it keeps
the last ``max_to_keep`` steps and saves, per step, a composite of

* ``state``: the :class:`TrainState` as a host (numpy) pytree: params,
  optimiser state, model and method state, step, PRNG key, skip counters;
* ``data``: the JSON state of every process's data iterator (any iterator
  with ``get_state()`` / ``set_state()``, e.g. Grain's), gathered from all
  processes so that each one resumes its own shard.

Saves are atomic by orbax's design: a step is written to a temporary
directory and renamed when complete, so a process killed while saving
leaves no half-written step that ``latest_step`` or ``restore`` could pick.
In a multi-process run every process calls ``save`` and ``restore``; orbax
writes the (replicated) state from the primary process only.

Damage after the fact (a bit flip, a copy cut short, a half-synced bucket)
is caught on restore: every step's ``data`` item also holds a manifest of
the state (each leaf's path, shape and dtype) and the SHA-256 of its bytes.
:meth:`Checkpointer.restore` checks both; a step that cannot be read or does
not match its checksum is reported (a warning with its step and path),
moved aside to ``<step>.damaged`` and the next older step is tried. A state
whose structure differs from the one being resumed (another model, another
method) is an error naming the first differing leaf, not a damaged step.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from mtl_jax._trees import first_difference

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


class CheckpointError(RuntimeError):
  """No checkpoint can be restored, or one cannot be written."""


class CheckpointMismatchError(ValueError):
  """A checkpoint's state does not have the structure being resumed."""


def _leaf_path(path) -> str:
  return jax.tree_util.keystr(path)


def manifest(state: PyTree) -> list[list[Any]]:
  """``[path, shape, dtype]`` of every leaf of a host pytree, in tree order."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [[_leaf_path(p), list(np.shape(x)), str(np.asarray(x).dtype)]
          for p, x in leaves]


def checksum(state: PyTree) -> str:
  """SHA-256 of the leaves' bytes (C order), in tree order."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(state):
    digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return digest.hexdigest()


def _first_difference(saved: list, expected: list) -> str | None:
  """The first leaf where two manifests differ, as a sentence, or None."""
  layout = lambda m: {p: (tuple(shape), dtype) for p, shape, dtype in m}
  diff = first_difference(layout(saved), layout(expected))
  if diff is None:
    return None
  if diff.got is None:
    return (f"leaf {diff.path} is not in the checkpoint (expected shape "
            f"{diff.want[0]}, {diff.want[1]})")
  if diff.want is None:
    return f"leaf {diff.path} is in the checkpoint but not in this state"
  return (f"leaf {diff.path}: saved {diff.got[0]} {diff.got[1]}, expected "
          f"{diff.want[0]} {diff.want[1]}")


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
    self._async = bool(async_save)
    self._pending = None  # the step of an asynchronous write in flight
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=("state", "data"))

  def latest_step(self) -> int | None:
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
        data=ocp.args.JsonSave({"processes": everyone,
                                "manifest": manifest(state),
                                "sha256": checksum(state)}))
    try:
      self._manager.save(int(step), args=args, force=True)
    except Exception as e:  # pylint: disable=broad-except
      # An asynchronous write that failed surfaces at the next save.
      pending = self._pending
      what = (f"{pending} (or {step})" if pending is not None else step)
      raise self._write_error(what, e) from e
    self._pending = int(step) if self._async else None

  def _write_error(self, step: Any, error: Exception) -> CheckpointError:
    last = self._intact_hint()
    what = "a checkpoint" if step is None else f"checkpoint step {step}"
    return CheckpointError(
        f"could not write {what} into {self.directory}: "
        f"{type(error).__name__}: {error}. {last} Free space or make the "
        "directory writable, then rerun the same command to resume from it.")

  def _intact_hint(self) -> str:
    try:
      steps = self.all_steps()
    except Exception:  # pylint: disable=broad-except
      steps = []
    if not steps:
      return "No earlier checkpoint exists."
    return (f"The last complete checkpoint, step {steps[-1]}, is left as it "
            "was.")

  def _read_data(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(step, args=ocp.args.Composite(
        data=ocp.args.JsonRestore()))
    return restored.data or {}

  def _damaged(self, step: int, error: Any) -> None:
    path = os.path.join(self.directory, str(step))
    aside = f"{path}.damaged"
    try:
      if jax.process_index() == 0 and os.path.isdir(path):
        os.replace(path, aside)
      self._manager.reload()
      where = f"moved to {aside}"
    except OSError:
      where = f"left at {path}"
    warnings.warn(
        f"checkpoint step {step} ({path}) is damaged and cannot be restored "
        f"({error}); {where}. Trying the next older step.", RuntimeWarning,
        stacklevel=2)

  def _check_manifest(self, step: int, saved: list | None,
                      expected: list) -> None:
    """Raises :class:`CheckpointMismatchError` when ``step``'s saved
    manifest (None for a checkpoint written without one) is not
    ``expected``."""
    difference = None if saved is None else _first_difference(saved, expected)
    if difference is not None:
      raise CheckpointMismatchError(
          f"the checkpoint in {self.directory} (step {step}) does not match "
          f"the state being resumed: {difference}. It was written by another "
          "model, method or number of tasks. Use a new workdir, or the same "
          "config as the run that wrote it.")

  def restore(self, template: PyTree, step: int | None = None
              ) -> tuple[PyTree, Any]:
    """Restores ``(state, data_state)`` of ``step`` (default: the newest
    intact step).

    Args:
      template: a host pytree with the structure, shapes and dtypes of the
        saved state (e.g. the freshly initialised state).
      step: which step. None: the latest one that reads back and matches its
        checksum; each damaged newer step is reported in a warning and moved
        aside (``<step>.damaged``).

    Returns:
      The state as host (numpy) arrays and this process's data state (None
      if none was saved).

    Raises:
      CheckpointMismatchError: the saved state's structure, shapes or dtypes
        differ from ``template`` (names the first differing leaf).
      CheckpointError: no step can be restored (or ``step`` is damaged).
    """
    steps = self.all_steps()[::-1] if step is None else [int(step)]
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}.")
    template = jax.tree.map(np.asarray, template)
    expected = manifest(template)
    damaged = []
    for candidate in steps:
      try:
        data = self._read_data(candidate)
        self._check_manifest(candidate, data.get("manifest"), expected)
        restored = self._manager.restore(candidate, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template)))
        state = jax.tree.map(np.asarray, restored.state)
        if "sha256" in data and checksum(state) != data["sha256"]:
          raise ValueError("the state's bytes do not match the checksum "
                           "saved with them")
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        damaged.append(candidate)
        if step is not None:
          raise CheckpointError(
              f"checkpoint step {candidate} in {self.directory} is damaged "
              f"({type(e).__name__}: {e}).") from e
        self._damaged(candidate, f"{type(e).__name__}: {e}")
        continue
      processes = data.get("processes") or []
      index = jax.process_index()
      data_state = _decode(processes[index]) if index < len(processes) else None
      return state, data_state
    raise CheckpointError(
        f"no intact checkpoint in {self.directory}: step(s) "
        f"{', '.join(map(str, damaged))} are damaged (moved aside as "
        "<step>.damaged). To start afresh, use a new workdir or delete "
        f"{self.directory}.")

  def wait(self) -> None:
    """Blocks until the pending asynchronous save is on disk.

    Raises:
      CheckpointError: the write failed (full disk, read-only directory);
        the previous complete step is left intact.
    """
    pending, self._pending = self._pending, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(pending, e) from e

  def close(self, raise_errors: bool = True) -> None:
    """Waits for pending saves and releases the manager.

    Args:
      raise_errors: False while another error is already on its way out
        (a failed write is then only logged by orbax, not raised over it).
    """
    try:
      self.wait()
    except CheckpointError:
      if raise_errors:
        with contextlib.suppress(Exception):
          self._manager.close()
        raise
    try:
      self._manager.close()
    except Exception as e:  # pylint: disable=broad-except
      if raise_errors:
        raise self._write_error(None, e) from e
