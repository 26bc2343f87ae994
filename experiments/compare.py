r"""Compares methods of both families over seeds, with single-task baselines for Delta_m.

  python -m experiments.compare          # the offline digit-strips comparison

runs, for one config (default ``experiments/configs/digit_strips.py``, the
main job under the papers' protocol), every method of ``compare.methods`` for ``compare.seeds``
seeds, a small scalarization grid (``compare.scalarization_step``) and the
single-task baselines (one-hot scalarization weights), then writes into
``--workdir``:

* ``results.md`` and ``results.csv``: mean and std over seeds of every test
  metric, Delta_m in both conventions, the final task weights and the wall
  time of each method (its compilation included);
* ``weights.png`` (every method's task weights over training),
  ``uw_inertia.png`` (UW vs UW-O vs UW-SO) and ``validation.png``
  (validation Delta_m and task losses over training).

Each method's train step is compiled once and reused by its seeds; the grid
points and the single-task baselines share one compilation (their weights are
an input of the step). ``--results_dir=docs/results/<benchmark>`` also copies the outputs
there. Finished runs are reused when the command is repeated
(``--config.train.reuse=False`` to retrain).
"""
from __future__ import annotations

import time

_START = time.time()  # before the heavy imports: the wall time includes them

import functools  # pylint: disable=g-import-not-at-top
import json
import os
import shutil
import textwrap
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import common, evidence, protocol, report, trivial
from experiments import run as run_lib

FLAGS = flags.FLAGS
BEGIN, END = report.BEGIN, report.END
OUTPUTS = ("results.md", "results.csv", "learning_rates.json", "weights.png",
           "uw_inertia.png",
           "validation.png")


def grid_points(config, num_tasks: int) -> list[tuple[float, ...]]:
  """The scalarization grid of ``compare.scalarization_step`` (0: none)."""
  return common.grid_weights(num_tasks, config.compare.scalarization_step)


def plan(config) -> tuple[list[tuple[str, str, Any]], list[str]]:
  """The fixed-weight rows ``(label, kind, weights)`` and the methods."""
  spec = common.dataset_spec(config.data)
  k = len(spec.tasks)
  fixed = []
  if config.compare.baselines == "single_task":
    fixed += common.single_task_runs(spec.tasks)
  fixed += [(f"scalarization_{i}", "grid", w)
            for i, w in enumerate(grid_points(config, k))]
  return fixed, common.parse_list(config.compare.methods)


def cost_text(config) -> str:
  """The protocol's size, printed before it starts."""
  fixed, methods = plan(config)
  rows = len(fixed) + len(methods)
  runs = protocol.num_runs(config, rows)
  grid = protocol.lr_grid(config)
  search = (f"learning rate searched over {len(grid)} values with "
            f"{config.protocol.search_seeds} seed(s), then "
            if grid else "learning rates from "
            f"{config.protocol.learning_rates or 'optim.learning_rate'}, ")
  est = config.compare.get("seconds_per_run", 0.0)
  eta = f"; about {runs * est / 60:.0f} min on a 2-core CPU" if est else ""
  return (f"{rows} rows ({len(methods)} methods, {len(fixed)} fixed weight "
          f"vectors), {search}{len(protocol.seeds(config))} seeds: {runs} "
          f"runs of {common.num_steps(config)} steps{eta}.")


def fixed_weight_programs(config):
  """``rate -> Program`` of state-held scalarization weights (grid points
  and single-task baselines share it), one compilation per rate."""
  return functools.lru_cache(maxsize=None)(
      lambda rate: run_lib.build_program(run_lib.override(
          config, method__name="scalarization",
          optim__learning_rate=rate)))


def single_task_rows(config, workdir: str, program_for, on_run=None
                     ) -> list[report.Row]:
  """The single-task baselines under the protocol, each selected against
  the constant predictor's validation metrics of its own task."""
  spec = common.dataset_spec(config.data)
  trivial_val = trivial.for_program(
      program_for(float(config.optim.learning_rate)), config.data.eval_split)
  rows = []
  for label, kind, w in common.single_task_runs(spec.tasks):
    task = label[len("stl_"):]
    ref = {k: v for k, v in trivial_val.items()
           if common.metric_task(k) == task and k in spec.higher_is_better}
    rows.append(protocol.run_row(config, workdir, label, kind, program_for,
                                 weights=w, reference=ref,
                                 on_run=on_run(label) if on_run else None))
  return rows


def run_all(config, workdir: str,
            progress: protocol.Progress | None = None) -> list[report.Row]:
  """Every row under the protocol: single-task baselines first (their
  validation metrics are the reference of every other row), then the
  scalarization grid and the methods."""
  spec = common.dataset_spec(config.data)
  fixed, methods = plan(config)

  def on_run(label):
    return (lambda r: progress({**r, "label": f"{label} "})) if progress else None

  fixed_program = fixed_weight_programs(config)
  rows = (single_task_rows(config, workdir, fixed_program, on_run)
          if config.compare.baselines == "single_task" else [])
  reference = (report.baselines_from_rows(rows, spec, "validation")
               if rows else None)
  for label, kind, w in fixed:
    if kind == "single_task":
      continue
    rows.append(protocol.run_row(config, workdir, label, kind, fixed_program,
                                 weights=w, reference=reference,
                                 on_run=on_run(label)))
  for method in methods:
    program_for = functools.lru_cache(maxsize=None)(
        lambda rate, m=method: run_lib.build_program(run_lib.override(
            config, method__name=m, optim__learning_rate=rate)))
    rows.append(protocol.run_row(config, workdir, method, "method",
                                 program_for, reference=reference,
                                 on_run=on_run(method)))
  return rows


def baselines(config, rows, spec, split: str) -> dict[str, float]:
  """Delta_m's ``B``: single-task rows, published values, or none."""
  if config.compare.baselines == "single_task":
    return report.baselines_from_rows(rows, spec, split)
  if config.compare.baselines == "published" and spec.published:
    return dict(spec.published)
  return {}


def best_grid_row(rows, spec, base_val) -> report.Row | None:
  """The grid point with the best (lowest) validation Delta_m."""
  grid = [r for r in rows if r.kind == "grid" and report.ok_results(r)]
  if not grid or not base_val:
    return None
  best = min(grid, key=lambda r: report.validation_delta(r, spec, base_val))
  return best._replace(label=f"scalarization (best of {len(grid)} on val)")


def single_task_summary(rows, spec) -> dict[str, Any] | None:
  """One row made of each task's metrics from its own single-task run."""
  stl = [r for r in rows if r.kind == "single_task"]
  if not stl:
    return None
  by_task = {r.label[len("stl_"):]: r for r in stl}
  out = report.summarize(stl[0], spec, {})
  out.update(method="single-task baselines", kind="single_task",
             final_weights="one-hot",
             wall_s=sum(report.summarize(r, spec, {})["wall_s"] for r in stl),
             learning_rate=None, selected_step=float("nan"))
  for name in spec.higher_is_better:
    row = report.summarize(by_task[common.metric_task(name)], spec, {})
    out[f"{name}_mean"], out[f"{name}_std"] = row[f"{name}_mean"], row[f"{name}_std"]
  for mode in report.MODES:
    out[f"delta_m_{mode}_mean"], out[f"delta_m_{mode}_std"] = 0.0, 0.0
  return out


def write_outputs(config, workdir: str, rows: list[report.Row],
                  wall_s: float, regenerated: bool = False) -> dict[str, Any]:
  """results.md, results.csv and the plots; returns the summaries."""
  spec = common.dataset_spec(config.data)
  base_test = baselines(config, rows, spec, "test")
  base_val = baselines(config, rows, spec, "validation")
  methods = [r for r in rows if r.kind == "method"]
  best = best_grid_row(rows, spec, base_val)
  main = [report.summarize(r, spec, base_test) for r in methods]
  if best is not None:
    main.append(report.summarize(best, spec, base_test))
  stl = single_task_summary(rows, spec)
  if stl is not None:
    main.append(stl)
  extra = [report.summarize(r, spec, base_test) for r in rows
           if r.kind != "method"]
  trivial_test = None
  if config.compare.baselines == "single_task":
    try:
      trivial_test = trivial.for_program(run_lib.build_program(
          run_lib.override(config, method__name="scalarization")),
          config.data.test_split)
    except ValueError as e:  # a dataset without a constant predictor
      logging.warning("no trivial baseline: %s", e)
  checks = evidence.checks(rows, spec, base_test, trivial_test)
  pairs = evidence.paired_rows(config, rows, spec, base_test, best)
  verdicts = evidence.verdicts_against(methods, best, spec, base_test)
  protocol.write_rates(os.path.join(workdir, "learning_rates.json"), rows)
  report.write_csv(os.path.join(workdir, "results.csv"), main + extra)
  report.plot_weights(os.path.join(workdir, "weights.png"), methods, spec.tasks)
  report.plot_uw_family(os.path.join(workdir, "uw_inertia.png"), methods,
                        spec.tasks)
  report.plot_validation(os.path.join(workdir, "validation.png"),
                         methods + ([best] if best else []), spec, base_val)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(report.results_markdown(config, main, extra, wall_s, checks, pairs,
                             trivial_test, regenerated))
  return {"main": main, "extra": extra, "checks": checks, "pairs": pairs,
          "verdicts": verdicts}


def copy_outputs(workdir: str, results_dir: str) -> None:
  os.makedirs(results_dir, exist_ok=True)
  for name in OUTPUTS:
    if os.path.exists(os.path.join(workdir, name)):
      shutil.copy(os.path.join(workdir, name), os.path.join(results_dir, name))



def define_flags() -> None:
  """The command-line flags (defined only when this module is the program)."""
  flags.DEFINE_string("workdir", None,
                      "Output directory; default runs/compare_<config name>.")
  flags.DEFINE_string("results_dir", None,
                      "Also copy results.md/.csv and the plots here.")
  flags.DEFINE_bool("verbose", False,
                    "Print absl's records (per-step metrics) to the terminal "
                    "instead of <workdir>/log.txt.")
  flags.DEFINE_string("docs", None,
                      "Comma-separated markdown files whose block between the "
                      f"markers {BEGIN!r} and {END!r} is replaced by the "
                      "compact summary (method, Δm, paired verdict, checks).")
  config_flags.DEFINE_config_file("config", run_lib.DEFAULT_CONFIG,
                                  "Config file of the comparison.",
                                  lock_config=True)


def run_and_report(config, workdir: str, results_dir: str | None = None,
                   docs: str | None = None, verbose: bool = False):
  """The whole comparison of ``config`` (the body of ``main``): prints its
  cost, runs every row, writes the outputs into ``workdir`` (and copies them
  to ``results_dir``, embeds the summary into ``docs``).

  Returns:
    ``(out, rows, wall_s)``: :func:`write_outputs`' summaries, the rows and
    the wall time of the command.
  """
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))
  log = protocol.log_to_file(workdir, verbose)
  print(textwrap.fill(f"{config.name}: {cost_text(config)}", width=100),
        flush=True)
  if log:
    print(f"Per-step records: {log} (--verbose prints them here)", flush=True)
  fixed, methods = plan(config)
  progress = protocol.Progress(protocol.num_reports(config,
                                                 len(fixed) + len(methods)))
  rows = run_all(config, workdir, progress)
  wall_s = time.time() - _START
  timing = os.path.join(workdir, "wall_time.json")
  regenerated = all(r.get("reused") for row in rows for r in row.results
                    ) and os.path.exists(timing)
  if regenerated:  # nothing trained now: keep the training invocation's time
    with open(timing) as f:
      wall_s = json.load(f)["wall_s"]
  else:
    with open(timing, "w") as f:
      json.dump({"wall_s": wall_s}, f)
  out = write_outputs(config, workdir, rows, wall_s, regenerated=regenerated)
  if results_dir:
    copy_outputs(workdir, results_dir)
  if docs:
    for doc in docs.split(","):
      link = ""
      if results_dir:
        link = os.path.relpath(os.path.join(results_dir, "results.md"),
                               os.path.dirname(os.path.abspath(doc)))
      report.embed(doc, report.summary_markdown(config, out, wall_s, link))
  return out, rows, wall_s


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  config = FLAGS.config
  workdir = FLAGS.workdir or os.path.join("runs", f"compare_{config.name}")
  out, _, wall_s = run_and_report(config, workdir, FLAGS.results_dir, FLAGS.docs,
                                  FLAGS.verbose)
  print(report.summary(out, wall_s, workdir))


if __name__ == "__main__":
  define_flags()
  app.run(main)
