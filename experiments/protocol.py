"""The papers' protocol, shared by every driver: learning rate chosen on
validation, model selection on validation, seeds, paired comparisons.

Kirchdorfer et al. (GCPR 2024) and their companion paper (arXiv 2311.04698)
tune Adam's learning rate per method on validation, keep the model of the
best validation Delta_m (early stopping) and report the test metrics of that
model over 3 seeds. Here:

* :func:`run_row` trains one row (a method, a scalarization point or a
  single-task baseline). With ``protocol.lr_search`` it first trains
  ``protocol.search_seeds`` seed(s) at every rate of ``protocol.lr_grid``,
  scores each rate by its mean *validation* selection score
  (:func:`experiments.run.selection_score`) and then trains every seed at
  the best rate (the search runs at that rate are reused, not retrained).
  Without the search it reads the row's rate from ``protocol.learning_rates``
  (a JSON file written by an earlier search: the reduced protocol), else
  ``optim.learning_rate``.
* The selection reference: single-task rows are scored against the constant
  predictor (:mod:`experiments.trivial`) on their own task; every other row
  against the single-task baselines' validation metrics, so a method's rate
  and its early-stopping step are both chosen on validation Delta_m.
* :func:`paired` compares two rows seed by seed. Runs with the same seed
  share the initial parameters and the order of the batches, so the
  per-seed differences of test Delta_m cancel that part of the noise. The
  verdict uses a two-sided paired t-test at 5 %; with 3 seeds a gap must be
  about 2.5 standard deviations of the differences (t > 4.30) to count.

Run directories: ``<workdir>/<label>/lr_<rate>/seed_<seed>``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from experiments import common
from experiments import run as run_lib

Row = run_lib.Row


def seeds(config) -> list[int]:
  """The evaluation seeds: ``compare.seeds`` of them from ``train.seed``."""
  return list(range(config.train.seed, config.train.seed + config.compare.seeds))


def lr_grid(config) -> list[float]:
  """The rates searched (empty without ``protocol.lr_search``)."""
  if not config.protocol.lr_search:
    return []
  grid = common.parse_list(config.protocol.lr_grid, float)
  if not grid or any(not (r > 0 and math.isfinite(r)) for r in grid):
    raise ValueError(f"protocol.lr_grid must list positive learning rates, "
                     f"got {config.protocol.lr_grid!r}, e.g. '1e-2,1e-3'.")
  return grid


def committed_rates(config) -> dict[str, float]:
  """``{label: rate}`` of ``protocol.learning_rates`` (``{}`` when unset)."""
  path = config.protocol.learning_rates
  if not path:
    return {}
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), path)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"protocol.learning_rates names {config.protocol.learning_rates!r}, "
        "which does not exist: run the search (--config.protocol.lr_search="
        "True) to write one, or set it to '' to use optim.learning_rate.")
  with open(path) as f:
    table = json.load(f)
  return {k: float(v["learning_rate"] if isinstance(v, dict) else v)
          for k, v in table.items()}


def _rate_dir(workdir: str, label: str, rate: float) -> str:
  return os.path.join(workdir, label, f"lr_{rate:g}")


def num_runs(config, num_rows: int) -> int:
  """Runs the protocol trains for ``num_rows`` rows (reused ones included)."""
  grid = lr_grid(config)
  n_seeds = len(seeds(config))
  if not grid:
    return num_rows * n_seeds
  search = min(config.protocol.search_seeds, n_seeds)
  return num_rows * (len(grid) * search + n_seeds - search)


def num_reports(config, num_rows: int) -> int:
  """Progress lines for ``num_rows`` rows: every run, the search's pick too."""
  grid = lr_grid(config)
  n_seeds = len(seeds(config))
  search = min(config.protocol.search_seeds, n_seeds) if grid else 0
  return num_rows * (len(grid) * search + n_seeds)


def run_row(config, workdir: str, label: str, kind: str,
            program_for: Callable[[float], run_lib.Program], *,
            weights: Sequence[float] | None = None,
            reference: Mapping[str, float] | None = None,
            on_run: Callable[[dict], None] | None = None,
            rate_label: str | None = None) -> Row:
  """One row under the protocol (see the module docstring).

  ``program_for(rate)`` builds the program of this row at a learning rate
  (one compilation per rate). Without the search, the rate is the committed
  one of ``rate_label`` (default ``label``; the temperature sweep's rows use
  UW-SO's).
  """
  all_seeds = seeds(config)
  grid = lr_grid(config)
  search: dict[str, float] = {}
  if grid:
    search_seeds = all_seeds[:max(1, config.protocol.search_seeds)]
    for rate in grid:
      row = run_lib.run_row(program_for(rate), _rate_dir(workdir, label, rate),
                            "", kind, search_seeds, weights, reference, on_run)
      scores = [r["score"] for r in row.results
                if "failed" not in r and r.get("score") is not None]
      search[f"{rate:g}"] = float(np.mean(scores)) if scores else math.inf
    rate = float(min(search, key=lambda r: (search[r], -float(r))))
    logging.info("%s: learning rate %g chosen on validation (%s)", label,
                 rate, search)
  else:
    rate = committed_rates(config).get(rate_label or label,
                                       float(config.optim.learning_rate))
  row = run_lib.run_row(program_for(rate), _rate_dir(workdir, label, rate),
                        "", kind, all_seeds, weights, reference, on_run)
  return row._replace(label=label, learning_rate=rate, search=search or None)


def write_rates(path: str, rows: Sequence[Row]) -> None:
  """The chosen rates (and the search's scores) as JSON, for the reduced
  protocol's ``protocol.learning_rates``."""
  table = {r.label: {"learning_rate": r.learning_rate,
                     "validation_scores": r.search}
           for r in rows if r.learning_rate is not None}
  with open(path, "w") as f:
    json.dump(table, f, indent=1, sort_keys=True)


# ------------------------------------------------------------ comparisons

# Two-sided 5 % critical values of Student's t, by degrees of freedom.
_T_CRIT = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447,
           7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
  """Paired comparison of two rows' per-seed values (``{seed: value}``).

  Returns the seeds used, the mean and std (ddof 1) of ``a - b``, the t
  statistic and a verdict: ``"a lower"``, ``"a higher"`` or ``"within
  noise"`` (two-sided paired t-test at 5 %).
  """
  common_seeds = sorted(set(a) & set(b))
  d = np.array([a[s] - b[s] for s in common_seeds], np.float64)
  d = d[np.isfinite(d)]
  n = len(d)
  out: dict[str, Any] = {"n": n, "mean": float(d.mean()) if n else math.nan}
  if n < 2:
    out.update(std=math.nan, t=math.nan, verdict="too few seeds")
    return out
  std = float(d.std(ddof=1))
  t = out["mean"] / (std / math.sqrt(n)) if std > 0 else (
      math.inf if out["mean"] else 0.0)
  crit = _T_CRIT.get(n - 1, 1.96)
  if abs(t) > crit:
    verdict = "a lower" if out["mean"] < 0 else "a higher"
  else:
    verdict = "within noise"
  out.update(std=std, t=float(t), critical=crit, verdict=verdict)
  return out


def per_seed(row: Row, value: Callable[[dict], float]) -> dict[int, float]:
  """``{seed: value(result)}`` over a row's finished runs."""
  return {r["seed"]: float(value(r)) for r in row.results if "failed" not in r}


class Progress:
  """One progress bar over the runs: count, label, seed, rate and ETA.

  On a terminal the bar is redrawn in place; otherwise (a log, a notebook
  cell) a line is printed every fifth of the runs.
  """

  def __init__(self, total: int, stream: Any = None):
    self.total, self.done, self.t0 = max(total, 1), 0, time.time()
    self.stream = stream or sys.stdout
    self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

  def __call__(self, result: dict[str, Any]) -> None:
    self.done += 1
    elapsed = time.time() - self.t0
    eta = elapsed / self.done * max(self.total - self.done, 0)
    filled = int(20 * min(self.done / self.total, 1.0))
    line = (f"[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} "
            f"{result.get('label', '')}seed {result.get('seed')} "
            f"lr {result.get('learning_rate', 0):g}"
            f"{' (reused)' if result.get('reused') else ''}  "
            f"{elapsed / 60:.1f} min, ETA {eta / 60:.1f} min")[:100]
    if self.tty:
      end = "\n" if self.done >= self.total else ""
      self.stream.write(f"\r{line:<100}{end}")
      self.stream.flush()
    elif self.done % max(1, self.total // 5) == 0 or self.done == self.total:
      print(line, file=self.stream, flush=True)


def log_to_file(workdir: str, verbose: bool) -> str | None:
  """Sends absl's records (per-step metrics, data preparation) to
  ``<workdir>/log.txt`` instead of the terminal, unless ``verbose``.

  Returns the log's path (``None`` when verbose).
  """
  if verbose:
    return None
  import logging as py_logging  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "log.txt")
  handler = py_logging.FileHandler(path, mode="a")
  handler.setFormatter(py_logging.Formatter(
      "%(asctime)s %(levelname)s %(name)s: %(message)s"))
  root = py_logging.getLogger()
  for h in list(root.handlers):
    root.removeHandler(h)
  root.addHandler(handler)
  root.setLevel(py_logging.INFO)
  logging.use_python_logging(quiet=True)
  return path
