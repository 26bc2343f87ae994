"""What a comparison shows: paired verdicts and the benchmark's four checks.

A comparison only means something if its benchmark can separate the methods.
:func:`checks` tests the four conditions of the evidence issue on finished
rows, with the figures behind each verdict:

1. **Learnt**: every task's primary metric (:data:`experiments.trivial.PRIMARY`)
   beats the constant predictor fitted on the train split by its factor, for
   the single-task baselines and for equal weighting (the plain multi-task
   model); the other methods that miss the bar are listed.
2. **Transfer**: on at least one task some multi-task row beats the
   single-task baseline by more than 2 seed standard deviations (pooled over
   the two rows, ddof 1).
3. **Spread**: the best and the worst method on test Delta_m differ by more
   than 3 pooled seed standard deviations.
4. **Scales**: the tasks' training losses at the first step (equal
   weighting, first seed) span at least two orders of magnitude, so the
   weighting matters.

:func:`paired_rows` gives the paired comparisons of ``compare.paired``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments import common, protocol, report, trivial
from mtl_jax import train

Row = report.Row


def _values(row: Row, metric: str) -> list[float]:
  return [float(r["test"][metric]) for r in report.ok_results(row)
          if metric in r["test"]]


def _delta_values(row: Row, spec, base) -> dict[int, float]:
  return protocol.per_seed(
      row, lambda r: report.delta_ms(r["test"], base, spec)["metric"])


def _std(values: Sequence[float]) -> float:
  return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _pooled(a: Sequence[float], b: Sequence[float]) -> float:
  return math.sqrt((_std(a) ** 2 + _std(b) ** 2) / 2)


def _label(row: Row) -> str:
  return row.label


def learnt_check(rows: Sequence[Row], spec, trivial_test: Mapping[str, float]
                 ) -> dict[str, Any]:
  """Check 1: every task well above the constant predictor."""
  primary = trivial.primary(spec)
  stl = {r.label[len("stl_"):]: r for r in rows if r.kind == "single_task"}
  methods = [r for r in rows if r.kind == "method"]
  lines, ok, misses = [], True, {}
  for task, (metric, factor, mode) in primary.items():
    hib = spec.higher_is_better[metric]
    triv = trivial_test[metric]
    bar = trivial.bar(triv, hib, factor, mode)
    parts = [f"`{metric}` trivial {triv:.4g}, bar {'≥' if hib else '≤'} "
             f"{bar:.4g}"]
    for name, row in (("single-task", stl.get(task)),
                      ("ew", next((m for m in methods if m.label == "ew"),
                                  None))):
      if row is None:
        continue
      value = float(np.mean(_values(row, metric)))
      passed = trivial.clearly_above(value, triv, hib, factor, mode)
      ok &= passed
      parts.append(f"{name} {value:.4g} {'✓' if passed else '✗'}")
    for m in methods:
      value = float(np.mean(_values(m, metric)))
      if not trivial.clearly_above(value, triv, hib, factor, mode):
        misses.setdefault(task, []).append(m.label)
    lines.append("; ".join(parts))
  if misses:
    lines.append("methods below a bar: " + "; ".join(
        f"{t}: {', '.join(ms)}" for t, ms in misses.items()))
  return {"name": "every task learnt (single-task and EW vs the constant "
                  "predictor)", "passed": bool(ok), "lines": lines}


def transfer_check(rows: Sequence[Row], spec) -> dict[str, Any]:
  """Check 2: some multi-task row beats single-task by > 2 pooled stds."""
  stl = {r.label[len("stl_"):]: r for r in rows if r.kind == "single_task"}
  multi = [r for r in rows if r.kind in ("method", "grid")]
  best: tuple[float, str] | None = None
  found = []
  for metric, hib in spec.higher_is_better.items():
    base = stl.get(common.metric_task(metric))
    if base is None:
      continue
    b = _values(base, metric)
    for row in multi:
      m = _values(row, metric)
      if len(m) < 2 or len(b) < 2:
        continue
      gain = (np.mean(m) - np.mean(b)) * (1 if hib else -1)
      pooled = _pooled(m, b)
      ratio = gain / pooled if pooled > 0 else (math.inf if gain > 0 else 0.0)
      if best is None or ratio > best[0]:
        best = (ratio, f"{row.label} on `{metric}`: {np.mean(m):.4g} vs "
                       f"single-task {np.mean(b):.4g}, gain {gain:.3g} = "
                       f"{ratio:.1f} pooled std")
      if ratio > 2:
        found.append(f"{row.label} `{metric}` ({ratio:.1f})")
  lines = [f"largest gain: {best[1]}" if best else "no single-task rows"]
  if found:
    lines.append(f"{len(found)} (row, metric) pairs above 2 pooled std: "
                 + ", ".join(found[:8]) + (" ..." if len(found) > 8 else ""))
  return {"name": "positive transfer (a multi-task row beats single-task by "
                  "> 2 seed std on some task)",
          "passed": bool(found), "lines": lines}


def spread_check(rows: Sequence[Row], spec, base_test) -> dict[str, Any]:
  """Check 3: best and worst method differ by > 3 pooled stds on Delta_m."""
  methods = [r for r in rows if r.kind == "method"]
  vals = {r.label: list(_delta_values(r, spec, base_test).values())
          for r in methods}
  vals = {k: v for k, v in vals.items() if v}
  if len(vals) < 2:
    return {"name": "spread", "passed": False, "lines": ["fewer than 2 methods"]}
  best = min(vals, key=lambda k: np.mean(vals[k]))
  worst = max(vals, key=lambda k: np.mean(vals[k]))
  gap = float(np.mean(vals[worst]) - np.mean(vals[best]))
  pooled = _pooled(vals[best], vals[worst])
  ratio = gap / pooled if pooled > 0 else math.inf
  return {"name": "best and worst method differ by > 3 pooled seed std",
          "passed": bool(ratio > 3),
          "lines": [f"best {best} {np.mean(vals[best]):+.2f}, worst {worst} "
                    f"{np.mean(vals[worst]):+.2f}: gap {gap:.2f} = "
                    f"{ratio:.1f} pooled std ({pooled:.2f})"]}


def scale_check(rows: Sequence[Row], spec) -> dict[str, Any]:
  """Check 4: first-step training losses span >= 2 orders of magnitude."""
  row = next((r for r in rows if r.label == "ew"), None) or next(
      (r for r in rows if r.kind == "method"), None)
  records = train.read_metrics(row.run_dirs[0]) if row else []
  if not records:
    return {"name": "loss scales", "passed": False, "lines": ["no metrics"]}
  losses = records[0]["losses"]
  values = [abs(float(losses[t])) for t in spec.tasks]
  ratio = max(values) / max(min(values), 1e-30)
  return {"name": "task losses differ by orders of magnitude (≥ 100x)",
          "passed": bool(ratio >= 100),
          "lines": [f"{row.label} step 1: " + ", ".join(
              f"{t} {v:.3g}" for t, v in zip(spec.tasks, values))
                    + f"; max/min = {ratio:.0f}x"]}


def checks(rows: Sequence[Row], spec, base_test,
           trivial_test: Mapping[str, float] | None) -> list[dict[str, Any]]:
  """The four checks (the first needs the constant predictor's metrics)."""
  out = []
  if trivial_test:
    out.append(learnt_check(rows, spec, trivial_test))
  out += [transfer_check(rows, spec), spread_check(rows, spec, base_test),
          scale_check(rows, spec)]
  return out


def paired_rows(config, rows: Sequence[Row], spec, base_test,
                best_grid: Row | None) -> list[dict[str, Any]]:
  """``compare.paired`` (``"a:b,..."``; ``scalarization`` is the grid point
  chosen on validation) as paired comparisons of test Delta_m."""
  by_label = {r.label: r for r in rows}
  if best_grid is not None:
    by_label["scalarization"] = best_grid
  out = []
  for pair in common.parse_list(config.compare.get("paired", "")):
    a, b = (x.strip() for x in pair.split(":"))
    if a not in by_label or b not in by_label:
      continue
    res = protocol.paired(_delta_values(by_label[a], spec, base_test),
                          _delta_values(by_label[b], spec, base_test))
    verdict = {"a lower": f"{a} better", "a higher": f"{b} better"}.get(
        res["verdict"], res["verdict"])
    out.append({"a": a, "b": b, **res, "text": verdict})
  return out


def paired_against(rows: Sequence[Row], reference: Row | None, spec,
                   base_test) -> dict[str, dict[str, Any]]:
  """``{label: protocol.paired(row, reference)}``: every row against
  ``reference``, paired over seeds on test Delta_m (row minus reference)."""
  if reference is None:
    return {}
  ref = _delta_values(reference, spec, base_test)
  return {row.label: protocol.paired(_delta_values(row, spec, base_test), ref)
          for row in rows}


def verdict_text(res: Mapping[str, Any]) -> str:
  """``"better (t=-3.2)"``, ``"worse (t=+5.1)"`` or the paired verdict."""
  return {"a lower": f"better (t={res['t']:+.1f})",
          "a higher": f"worse (t={res['t']:+.1f})"}.get(
              res["verdict"], res["verdict"])


def verdicts_against(rows: Sequence[Row], reference: Row | None, spec,
                     base_test) -> dict[str, str]:
  """``{label: verdict}`` of every row against ``reference`` (the grid point
  chosen on validation), paired over seeds on test Delta_m."""
  return {label: verdict_text(res) for label, res in
          paired_against(rows, reference, spec, base_test).items()}
