r"""UW-SO's automatic variants against UW-SO tuned on validation, across sweeps.

  python -m experiments.sweep_summary \
      --sweeps docs/results/digit_strips,docs/results/digit_attributes,\
docs/results/digit_scenes,docs/results/synthetic \
      --doc docs/results/uw_so_auto.md

Reads the ``temperature_sweep.csv`` that ``python -m
experiments.temperature_sweep`` wrote into each folder and writes one table:
per benchmark, UW-SO at the T chosen on validation, then every other row of
the sweep (the automatic variants, UW-O, EW, and the T values of the paper)
with its test Delta_m, the paired difference against that tuned UW-SO (seed
by seed, the sweep's own paired t-test at 5 %) and the largest share of the
weight any task reached. The last lines count, per automatic variant, the
benchmarks where it is within noise of tuned UW-SO or better, and where its
largest share stays at or below 0.95 while a fixed T went above. With
``--doc`` the table replaces the block between ``<!-- sweep_summary:begin
-->`` and ``<!-- sweep_summary:end -->`` of that file; without, it is
printed.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app, flags

from experiments import report

BEGIN, END = "<!-- sweep_summary:begin -->", "<!-- sweep_summary:end -->"
# The paper's best T values: 2 to 3 on NYUv2, 20 to 48 on Cityscapes; the
# sweeps' grids hold 2 and 50.
PAPER_T = (2.0, 50.0)
MAX_SHARE = 0.95


def read_sweep(folder: str) -> list[dict[str, Any]]:
  """The rows of ``folder/temperature_sweep.csv``, numbers as floats."""
  with open(os.path.join(folder, "temperature_sweep.csv")) as f:
    rows = list(csv.DictReader(f))
  out = []
  for row in rows:
    parsed: dict[str, Any] = {}
    for key, value in row.items():
      if key in ("method", "vs_best", "final_weights", "weights", "kind"):
        parsed[key] = value
      elif value in ("", None):  # a variant's temperature, the best's pairs
        parsed[key] = math.nan
      else:
        parsed[key] = float(value)
    out.append(parsed)
  return out


def _is_t(row: Mapping[str, Any]) -> bool:
  return math.isfinite(row["temperature"])


def _label(row: Mapping[str, Any]) -> str:
  return f"UW-SO T={row['temperature']:g}" if _is_t(row) else row["method"]


def _verdict(row: Mapping[str, Any]) -> str:
  text = str(row["vs_best"])
  return text.split(" (")[0]  # "worse (t=+5.6)" -> "worse"


def summarise(name: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """The tuned row, the rows shown beside it, and whether a fixed T
  collapsed (a largest share above ``MAX_SHARE``)."""
  fixed = [r for r in rows if _is_t(r)]
  tuned = min(fixed, key=lambda r: r["val_delta_m_metric"])
  shown = [r for r in rows if not _is_t(r)]
  shown += [r for r in fixed if r["temperature"] in PAPER_T and r is not tuned]
  return {"name": name, "tuned": tuned, "shown": shown,
          "collapse": any(r["max_share"] > MAX_SHARE for r in fixed)}


def markdown(summaries: Sequence[Mapping[str, Any]]) -> str:
  lines = ["| benchmark | row | test Δm % | paired Δ vs tuned UW-SO | verdict | "
           "max share |", "|---|---|---:|---:|---|---:|"]
  for s in summaries:
    t = s["tuned"]
    lines.append(f"| {s['name']} | **UW-SO, T={t['temperature']:g} "
                 f"(tuned on validation)** | {_pm(t)} | - | - | "
                 f"{t['max_share']:.3f} |")
    for r in s["shown"]:
      paired = (report.fixed_text(r["vs_best_mean"], r["vs_best_std"])
                if math.isfinite(r["vs_best_mean"]) else "-")
      lines.append(f"| | {_label(r)} | {_pm(r)} | {paired} | {_verdict(r)} | "
                   f"{r['max_share']:.3f} |")
  lines.append("")
  variants = [r["method"] for r in summaries[0]["shown"]
              if str(r["method"]).startswith("uw_so")] if summaries else []
  for v in variants:
    ok, bounded = [], []
    for s in summaries:
      row = next((r for r in s["shown"] if r["method"] == v), None)
      if row is None:
        continue
      if _verdict(row) in ("within noise", "better"):
        ok.append(s["name"])
      if not s["collapse"] or row["max_share"] <= MAX_SHARE:
        bounded.append(s["name"])
    lines.append(f"- `{v}`: within noise of tuned UW-SO or better on "
                 f"{len(ok)} of {len(summaries)} benchmarks; largest share "
                 f"≤ {MAX_SHARE} where a fixed T went above it on "
                 f"{len(bounded)} of {len(summaries)}.")
  return "\n".join(lines) + "\n"


def _pm(row: Mapping[str, Any]) -> str:
  return report.fixed_text(row["delta_m_metric_mean"], row["delta_m_metric_std"])


def embed(path: str, block: str) -> None:
  """Replaces the text between ``BEGIN`` and ``END`` in ``path``."""
  report.embed(path, block, BEGIN, END)


def define_flags() -> None:
  flags.DEFINE_list("sweeps", None, "Folders holding temperature_sweep.csv.")
  flags.DEFINE_string("doc", None, "Markdown file whose marked block to "
                      "replace; default: print the table.")
  flags.mark_flag_as_required("sweeps")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  summaries = [summarise(os.path.basename(os.path.normpath(d)), read_sweep(d))
               for d in flags.FLAGS.sweeps]
  block = markdown(summaries)
  if flags.FLAGS.doc:
    embed(flags.FLAGS.doc, block)
  else:
    print(block)


if __name__ == "__main__":
  define_flags()
  app.run(main)
