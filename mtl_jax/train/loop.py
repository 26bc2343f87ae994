"""The training loop: steps, on-device metrics, logs, checkpoints, resume.

:func:`train` is config-free: it takes an already built (jitted, pmapped or
mesh-mapped) step, the initial state, an iterator of batches and a workdir.
It

* resumes from the latest checkpoint in ``workdir/checkpoints`` if there is
  one (train state and data-iterator position);
* keeps each step's metrics on device and fetches them every ``log_every``
  steps, at checkpoints and at the end: no host sync on the other steps;
* writes one JSON line per step to ``workdir/metrics.jsonl`` (losses, weights,
  total, gradient and parameter norms, skips), optionally TensorBoard
  scalars, and shows a tqdm progress bar with an ETA; only process 0 writes;
* saves a checkpoint every ``checkpoint_every`` steps and at the end,
  keeping the last ``keep_checkpoints``;
* warns about every step skipped by the non-finite guard, naming the task,
  and raises :class:`NonFiniteError` after more than
  ``max_consecutive_skips`` skips in a row.
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import tqdm

from mtl_jax.train.checkpoint import Checkpointer
from mtl_jax.train.parallel import Placement, single_device, to_host
from mtl_jax.train.state import TrainState
from mtl_jax.train.writers import MetricsWriter, step_record

PyTree = Any
StepFn = Callable[[TrainState, PyTree], tuple[TrainState, Mapping[str, jax.Array]]]


class NonFiniteError(FloatingPointError):
  """Training stopped: too many consecutive steps had non-finite values."""


class NonFiniteWarning(RuntimeWarning):
  """A train step was skipped because a loss or a gradient was not finite."""


def _allow_fetch():
  """The loop's deliberate device-to-host transfers (logging, checkpoints).

  Wrapping them lets a caller run :func:`train` under
  ``jax.transfer_guard_device_to_host("disallow")`` to prove that no other
  step transfers anything to the host.
  """
  return jax.transfer_guard_device_to_host("allow")


def _describe(record: Mapping[str, Any]) -> str:
  tasks = record.get("non_finite_tasks") or []
  if tasks:
    return f"non-finite loss in task(s) {tasks}"
  grad_tasks = record.get("non_finite_grad_tasks") or []
  if grad_tasks:
    return (f"non-finite gradient of task(s) {grad_tasks} (every task loss "
            "was finite)")
  return "non-finite gradient or total (every task loss was finite)"


def check_skips(records: Sequence[Mapping[str, Any]],
                max_consecutive_skips: int) -> None:
  """Warns for each skipped step; raises past ``max_consecutive_skips``.

  Raises:
    NonFiniteError: naming the step and the task(s).
  """
  for record in records:
    if not record["skipped"]:
      continue
    what = _describe(record)
    run = record["consecutive_skips"]
    if run > max_consecutive_skips:
      raise NonFiniteError(
          f"step {record['step']}: {what}; {run} consecutive step(s) skipped "
          f"(max_consecutive_skips={max_consecutive_skips}), stopping. The "
          "parameters were not updated by the skipped steps and no "
          "checkpoint holds non-finite values; look for the NaN/Inf in the "
          "data or lower the learning rate.")
    warnings.warn(
        f"step {record['step']}: {what}; update skipped ({run} in a row, "
        f"{record['total_skips']} in all).", NonFiniteWarning, stacklevel=3)


def non_finite_leaves(state: TrainState) -> list[str]:
  """Paths of the floating leaves of a host train state's params, model
  state and method state holding a NaN or an Inf.

  The optimiser's state is not checked: Adam's second moment of a
  gradient above ~1.8e19 overflows to Inf while the update stays finite
  (zero for that coordinate), and the step's guard checks the gradients.
  """
  tree = {"params": state.params, "model_state": state.model_state,
          "method_state": state.method_state}
  bad = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.inexact) and not np.all(np.isfinite(leaf)):
      bad.append(jax.tree_util.keystr(path))
  return bad


def _fetch(pending: list, placement: Placement,
           task_names: Sequence[str] | None) -> list[dict[str, Any]]:
  with _allow_fetch():
    host = placement.get(pending)
  if not host:
    return []
  names = task_names or [f"task_{k}" for k in range(np.size(host[0]["losses"]))]
  return [step_record(metrics, names) for metrics in host]


def _data_state(batches: Any) -> Any:
  return batches.get_state() if hasattr(batches, "get_state") else None


Hook = Callable[[int, TrainState], tuple[TrainState, bool]]
"""``hook(step, state) -> (state, stop)``: called every ``hook_every`` steps
and after the last, with the steps done and the placed (device) state; it
returns the state to continue from (evaluation, a schedule's change) and
whether to stop the run there."""


def _open_checkpoints(workdir, host_state, batches, *, checkpoint_every,
                      keep_checkpoints, async_checkpoints):
  """The checkpointer (``None`` without checkpoints) and the state to start
  from: the latest checkpoint's, with the iterator's position, if any."""
  if checkpoint_every is None:
    return None, host_state
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=keep_checkpoints,
                              async_save=async_checkpoints)
  if checkpointer.latest_step() is not None:
    host_state, data_state = checkpointer.restore(host_state)
    if data_state is not None and hasattr(batches, "set_state"):
      batches.set_state(data_state)
    else:
      warnings.warn("resuming without a data-iterator state: the iterator "
                    "starts from its beginning.", RuntimeWarning,
                    stacklevel=3)
  return checkpointer, host_state


def _check_start(host_state: TrainState) -> None:
  bad = non_finite_leaves(host_state)
  if bad:
    raise NonFiniteError(
        f"the {'resumed' if int(host_state.step) else 'initial'} train state "
        f"holds non-finite values in {', '.join(bad[:5])}"
        f"{' ...' if len(bad) > 5 else ''}: every step would be skipped. "
        "Fix the initialisation (or the values set by hand) before training.")


def _save(checkpointer: Checkpointer, placement: Placement, device_state,
          done: int, batches: Any) -> None:
  with _allow_fetch():
    host = placement.get(device_state)
  bad = non_finite_leaves(host)
  if bad:  # the guard keeps this from happening; never save it
    raise NonFiniteError(
        f"step {done}: the train state holds non-finite values in "
        f"{', '.join(bad[:5])}; not checkpointed (the checkpoints on "
        "disk hold finite values only).")
  checkpointer.save(done, host, _data_state(batches))


def _check_arguments(num_steps, log_every, checkpoint_every,
                     max_consecutive_skips, hook_every) -> None:
  if log_every < 1 or num_steps < 0 or max_consecutive_skips < 0:
    raise ValueError(
        f"need log_every >= 1, num_steps >= 0, max_consecutive_skips >= 0; got "
        f"{log_every!r}, {num_steps!r}, {max_consecutive_skips!r}.")
  for name, every in (("checkpoint_every", checkpoint_every),
                      ("hook_every", hook_every)):
    if every is not None and every < 1:
      raise ValueError(f"{name} must be >= 1 or None, got {every!r}.")


def train(train_step: StepFn, state: TrainState, batches: Iterator[PyTree], *,
          num_steps: int, workdir: str | os.PathLike,
          placement: Placement | None = None, log_every: int = 50,
          checkpoint_every: int | None = None, keep_checkpoints: int = 3,
          max_consecutive_skips: int = 10,
          task_names: Sequence[str] | None = None,
          tensorboard: bool = False, progress: bool = True,
          async_checkpoints: bool = True, hook: Hook | None = None,
          hook_every: int | None = None) -> TrainState:
  """Runs ``train_step`` until ``num_steps`` steps are done; resumes if it can.

  Args:
    train_step: the compiled step, ``(state, batch) -> (state, metrics)``
      (``jax.jit``, :func:`pmap_step` or :func:`mesh_step` of
      :func:`make_train_step`).
    state: the initial, host or single-device state (as from
      :func:`create_train_state`); ignored when a checkpoint is resumed,
      apart from its structure.
    batches: an iterator of process-local batches. If it has ``get_state()``
      and ``set_state()`` (Grain iterators do), its position is checkpointed
      and restored; otherwise a resumed run starts the iterator afresh (a
      warning says so).
    num_steps: total number of steps of the run (not of this call).
    workdir: holds ``metrics.jsonl``, ``checkpoints/``, ``tensorboard/``.
    placement: how states and batches reach the step; default
      :func:`single_device`; :func:`pmap_placement` or
      :func:`mesh_placement` for the data-parallel steps.
    log_every: fetch the metrics from the devices every this many steps.
    checkpoint_every: save every this many steps (and at the end); None:
      no checkpoints and no resume.
    keep_checkpoints: how many of the latest checkpoints to keep.
    max_consecutive_skips: the number of non-finite steps in a row that are
      skipped before :class:`NonFiniteError`. 0 stops at the first one: then
      the skip flag is fetched every step (one small host sync per step).
    task_names: names of the K tasks in the logs; default ``task_0``...
    tensorboard: also write TensorBoard scalars (needs tensorboardX).
    progress: show a tqdm progress bar (process 0 only).
    async_checkpoints: write checkpoints in a background thread.
    hook: see :data:`Hook` (evaluation, selection, a schedule); it runs
      before the checkpoint of the same step, so a checkpoint holds what the
      hook returned.
    hook_every: call ``hook`` every this many steps (and after the last).

  Returns:
    The final state, as a host (numpy) copy of one replica.

  Raises:
    NonFiniteError: see ``max_consecutive_skips``.
  """
  _check_arguments(num_steps, log_every, checkpoint_every,
                   max_consecutive_skips, hook_every)
  placement = placement or single_device()
  main = jax.process_index() == 0
  with _allow_fetch():
    host_state = to_host(state)
  checkpointer, host_state = _open_checkpoints(
      workdir, host_state, batches, checkpoint_every=checkpoint_every,
      keep_checkpoints=keep_checkpoints, async_checkpoints=async_checkpoints)
  _check_start(host_state)
  start = int(host_state.step)
  device_state = placement.put_state(host_state)
  writer = MetricsWriter(workdir, resume_step=start, tensorboard=tensorboard,
                         enabled=main)
  logger = _Logger(writer, placement, task_names, max_consecutive_skips,
                   1 if max_consecutive_skips == 0 else log_every,
                   tqdm.tqdm(total=num_steps, initial=start,
                             disable=not (progress and main), desc="train",
                             unit="step", dynamic_ncols=True))
  try:
    for step in range(start, num_steps):
      device_state, metrics = train_step(device_state,
                                         placement.put_batch(next(batches)))
      done = step + 1
      last = done == num_steps
      save = checkpointer is not None and (done % checkpoint_every == 0
                                           or last)
      logger.add(metrics, done, force=save or last)
      stop = False
      if hook is not None and (last or done % (hook_every or 1) == 0):
        device_state, stop = hook(done, device_state)
      if save or (stop and checkpointer is not None):
        _save(checkpointer, placement, device_state, done, batches)
      if stop:
        break
    with _allow_fetch():
      return placement.get(device_state)
  finally:
    logger.close()
    if checkpointer is not None:
      # Do not hide an error already on its way out behind a second one.
      checkpointer.close(raise_errors=sys.exc_info()[0] is None)


class _Logger:
  """Holds each step's metrics on device; every ``fetch_every`` steps (or
  when forced) fetches them, writes them, updates the bar and checks the
  skips."""

  def __init__(self, writer, placement, task_names, max_consecutive_skips,
               fetch_every, bar):
    self.writer, self.placement, self.task_names = writer, placement, task_names
    self.max_skips, self.fetch_every, self.bar = (max_consecutive_skips,
                                                  fetch_every, bar)
    self.pending = []

  def add(self, metrics, done: int, *, force: bool) -> None:
    self.pending.append(metrics)
    self.bar.update(1)
    if not (force or done % self.fetch_every == 0):
      return
    records = _fetch(self.pending, self.placement, self.task_names)
    self.pending = []
    self.writer.write(records)
    if records:
      self.bar.set_postfix(total=records[-1]["total"],
                           skips=records[-1]["total_skips"], refresh=False)
    check_skips(records, self.max_skips)

  def close(self) -> None:
    self.bar.close()
    self.writer.close()
