"""Metrics on disk: a JSON-lines file and an optional TensorBoard writer.

(Named ``writers`` rather than ``logging`` so that it never shadows the
standard library module for a reader.)

One JSON line per train step, so the weight trajectory of every run can be
plotted from ``metrics.jsonl``::

  {"step": 12, "total": 1.03, "losses": {"seg": 0.71, "depth": 0.32},
   "weights": {"seg": 1.0, "depth": 1.0}, "grad_norm": 0.9,
   "param_norm": 31.2, "skipped": false, "consecutive_skips": 0,
   "total_skips": 0}

``step`` counts the steps done, this one included (the checkpoint numbering).
Non-finite numbers are written as ``null`` (JSON has no NaN); a skipped step
also lists ``non_finite_tasks``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FILENAME = "metrics.jsonl"


def _number(x: Any) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def step_record(host_metrics: Mapping[str, np.ndarray],
                task_names: Sequence[str]) -> dict[str, Any]:
  """One JSON-ready record from the host metrics of one train step."""
  losses = np.asarray(host_metrics["losses"]).reshape(-1)
  weights = np.asarray(host_metrics["weights"]).reshape(-1)
  finite = np.asarray(host_metrics["losses_finite"]).reshape(-1)
  record = {
      "step": int(host_metrics["step"]),
      "total": _number(host_metrics["total"]),
      "losses": {n: _number(v) for n, v in zip(task_names, losses)},
      "weights": {n: _number(v) for n, v in zip(task_names, weights)},
      "grad_norm": _number(host_metrics["grad_norm"]),
      "param_norm": _number(host_metrics["param_norm"]),
      "skipped": bool(host_metrics["skipped"]),
      "consecutive_skips": int(host_metrics["consecutive_skips"]),
      "total_skips": int(host_metrics["total_skips"]),
  }
  if record["skipped"]:
    record["non_finite_tasks"] = [n for n, ok in zip(task_names, finite)
                                  if not ok]
    record["grads_finite"] = bool(host_metrics["grads_finite"])
    if "task_grads_finite" in host_metrics:
      grads_ok = np.asarray(host_metrics["task_grads_finite"]).reshape(-1)
      if not grads_ok.all():
        record["non_finite_grad_tasks"] = [
            n for n, ok in zip(task_names, grads_ok) if not ok]
  return record


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of ``workdir/metrics.jsonl``, in order."""
  with open(os.path.join(workdir, FILENAME)) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:
  """Appends step records to ``metrics.jsonl`` (and TensorBoard, if asked).

  Args:
    workdir: the run's directory.
    resume_step: drop records with ``step > resume_step`` already in the file
      (written after the checkpoint the run resumes from), so a resumed run
      has one line per step.
    tensorboard: also write scalars with ``tensorboardX`` to
      ``workdir/tensorboard``.
    enabled: False in every process but process 0: then nothing is written.
  """

  def __init__(self, workdir: str | os.PathLike, *, resume_step: int = 0,
               tensorboard: bool = False, enabled: bool = True):
    self.enabled = enabled
    self._file = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, FILENAME)
    if os.path.exists(path):
      self._truncate(path, resume_step)
    self._file = open(path, "a")  # noqa: SIM115 (closed by close())
    if tensorboard:
      from tensorboardX import SummaryWriter  # optional dependency
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  @staticmethod
  def _truncate(path: str, resume_step: int) -> None:
    with open(path) as f:
      lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= resume_step]
    if len(kept) != len(lines):
      with open(path + ".tmp", "w") as f:
        f.writelines(kept)
      os.replace(path + ".tmp", path)

  def write(self, records: Sequence[Mapping[str, Any]]) -> None:
    """Writes records (one line each) and flushes."""
    if not self.enabled:
      return
    for record in records:
      self._file.write(json.dumps(record) + "\n")
      if self._tb is not None:
        self._write_tensorboard(record)
    self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def _write_tensorboard(self, record: Mapping[str, Any]) -> None:
    step = record["step"]
    for key in ("total", "grad_norm", "param_norm", "total_skips"):
      if record[key] is not None:
        self._tb.add_scalar(key, record[key], step)
    for group in ("losses", "weights"):
      for task, value in record[group].items():
        if value is not None:
          self._tb.add_scalar(f"{group}/{task}", value, step)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
