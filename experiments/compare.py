r"""Compares weighting methods over seeds, with single-task baselines for Delta_m.

  python -m experiments.compare          # the offline digit-scenes comparison

runs, for one config (default ``experiments/configs/default.py``, digit
scenes quick), every method of ``compare.methods`` for ``compare.seeds``
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
an input of the step). ``--results_dir=docs/results`` also copies the outputs
there. Finished runs are reused when the command is repeated
(``--config.train.reuse=False`` to retrain).
"""
from __future__ import annotations

import time

_START = time.time()  # before the heavy imports: the wall time includes them

import json  # pylint: disable=g-import-not-at-top
import os
import platform
import shutil
from typing import Any, Optional

import jax
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from experiments import report
from experiments import run as run_lib

FLAGS = flags.FLAGS
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
OUTPUTS = ("results.md", "results.csv", "weights.png", "uw_inertia.png",
           "validation.png")


def grid_points(config, num_tasks: int) -> list[tuple[float, ...]]:
  """The scalarization grid of ``compare.scalarization_step`` (0: none)."""
  return common.grid_weights(num_tasks, config.compare.scalarization_step)


def run_all(config, workdir: str) -> list[report.Row]:
  """Every method, the grid and the single-task baselines, as table rows."""
  spec = common.dataset_spec(config.data)
  seeds = list(range(config.train.seed, config.train.seed + config.compare.seeds))
  rows = []
  for method in common.parse_list(config.compare.methods):
    program = run_lib.build_program(run_lib.override(config, weighting__name=method))
    rows.append(run_lib.run_row(program, workdir, method, "method", seeds))
  k = len(spec.tasks)
  fixed = [(f"scalarization_{i}", "grid", w)
           for i, w in enumerate(grid_points(config, k))]
  if config.compare.baselines == "single_task":
    fixed += common.single_task_runs(spec.tasks)
  if fixed:  # one compilation for every fixed weight vector
    program = run_lib.build_program(
        run_lib.override(config, weighting__name="scalarization"))
    rows += [run_lib.run_row(program, workdir, label, kind, seeds, w)
             for label, kind, w in fixed]
  return rows


def baselines(config, rows, spec, split: str) -> dict[str, float]:
  """Delta_m's ``B``: single-task rows, published values, or none."""
  if config.compare.baselines == "single_task":
    return report.baselines_from_rows(rows, spec, split)
  if config.compare.baselines == "published" and spec.published:
    return dict(spec.published)
  return {}


def best_grid_row(rows, spec, base_val) -> Optional[report.Row]:
  """The grid point with the best (lowest) validation Delta_m."""
  grid = [r for r in rows if r.kind == "grid" and report.ok_results(r)]
  if not grid or not base_val:
    return None
  best = min(grid, key=lambda r: report.validation_delta(r, spec, base_val))
  return best._replace(label=f"scalarization (best of {len(grid)} on val)")


def single_task_summary(rows, spec) -> Optional[dict[str, Any]]:
  """One row made of each task's metrics from its own single-task run."""
  stl = [r for r in rows if r.kind == "single_task"]
  if not stl:
    return None
  by_task = {r.label[len("stl_"):]: r for r in stl}
  out = report.summarize(stl[0], spec, {})
  out.update(method="single-task baselines", kind="single_task",
             final_weights="one-hot",
             wall_s=sum(report.summarize(r, spec, {})["wall_s"] for r in stl))
  for name in spec.higher_is_better:
    row = report.summarize(by_task[common.metric_task(name)], spec, {})
    out[f"{name}_mean"], out[f"{name}_std"] = row[f"{name}_mean"], row[f"{name}_std"]
  for mode in report.MODES:
    out[f"delta_m_{mode}_mean"], out[f"delta_m_{mode}_std"] = 0.0, 0.0
  return out


def write_outputs(config, workdir: str, rows: list[report.Row],
                  wall_s: float) -> dict[str, Any]:
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
  report.write_csv(os.path.join(workdir, "results.csv"), main + extra)
  report.plot_weights(os.path.join(workdir, "weights.png"), methods, spec.tasks)
  report.plot_uw_family(os.path.join(workdir, "uw_inertia.png"), methods,
                        spec.tasks)
  report.plot_validation(os.path.join(workdir, "validation.png"),
                         methods + ([best] if best else []), spec, base_val)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(results_markdown(config, main, extra, wall_s))
  return {"main": main, "extra": extra}


def results_markdown(config, main, extra, wall_s: float) -> str:
  """The generated results.md (header, main table, grid and baseline rows)."""
  spec = common.dataset_spec(config.data)
  seeds = config.compare.seeds
  lines = [
      f"## Results: {config.name}\n",
      f"Generated by `python -m experiments.compare` (config `{config.name}`); "
      f"every number below is written by the run.\n",
      f"- Wall time of the whole command: **{wall_s / 60:.1f} min** "
      f"({wall_s:.0f} s, JIT compilation and data generation included) on "
      f"{_machine()}.",
      f"- {seeds} seed(s) per method, {common.num_steps(config)} steps of "
      f"batch {config.data.batch_size}; mean ± std over seeds; test split "
      f"`{config.data.test_split}` at the last step (no early stopping).",
      f"- Δm against {_baseline_text(config)}; lower is better, negative beats "
      "single-task learning. \"metrics\": average over all metrics "
      "(Nash-MTL, FAMO); \"tasks\": average within each task, then over tasks "
      "(LibMTL).",
      f"- UW-SO temperature T = {config.weighting.temperature:g}; final weights "
      f"are the weights at the last step in task order "
      f"{', '.join(spec.tasks)} (mean over seeds).",
      "- wall s: the method's runs summed over seeds, its compilation "
      "included." + _reused_text(main + extra) + "\n",
      report.markdown_table(main, spec),
  ]
  if extra:
    lines += ["\nScalarization grid points and single-task runs (each row "
              "one fixed weight vector; a single-task run is only good at its "
              "own task):\n", report.markdown_table(extra, spec)]
  return "\n".join(lines)


def _reused_text(summaries) -> str:
  reused = sum(s.get("reused", 0) for s in summaries)
  if not reused:
    return ""
  return (f" **{reused} run(s) were reused from an earlier invocation**, so "
          "the wall times above are not those of a fresh run.")


def _baseline_text(config) -> str:
  return {"single_task": "single-task baselines trained here (the same "
                         "network on one task's loss, one-hot weights, same "
                         "seeds and steps)",
          "published": "the published single-task baselines",
          "none": "no baselines (Δm not computed)"}[config.compare.baselines]


def _machine() -> str:
  devices = jax.devices()
  return (f"{devices[0].platform.upper()} x{len(devices)} "
          f"({os.cpu_count()} CPU cores, {platform.machine()}), "
          f"jax {jax.__version__}")


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
  flags.DEFINE_string("docs", None,
                      "A markdown file whose block between the markers "
                      f"{BEGIN!r} and {END!r} is replaced by results.md.")
  config_flags.DEFINE_config_file("config", run_lib.DEFAULT_CONFIG,
                                  "Config file of the comparison.",
                                  lock_config=True)


def embed(doc_path: str, text: str) -> None:
  """Replaces the block between BEGIN and END in ``doc_path`` by ``text``."""
  with open(doc_path) as f:
    doc = f.read()
  if BEGIN not in doc or END not in doc:
    raise ValueError(f"{doc_path} has no {BEGIN} ... {END} block.")
  head, rest = doc.split(BEGIN, 1)
  tail = rest.split(END, 1)[1]
  with open(doc_path, "w") as f:
    f.write(f"{head}{BEGIN}\n{text.strip()}\n{END}{tail}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  config = FLAGS.config
  workdir = FLAGS.workdir or os.path.join("runs", f"compare_{config.name}")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))
  rows = run_all(config, workdir)
  wall_s = time.time() - _START
  write_outputs(config, workdir, rows, wall_s)
  with open(os.path.join(workdir, "wall_time.json"), "w") as f:
    json.dump({"wall_s": wall_s}, f)
  if FLAGS.results_dir:
    copy_outputs(workdir, FLAGS.results_dir)
  text = open(os.path.join(workdir, "results.md")).read()
  if FLAGS.docs:
    embed(FLAGS.docs, text.replace("## Results", "### Results", 1))
  print(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
