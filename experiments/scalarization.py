r"""Scalarization: grid search over fixed task weights on the simplex.

  python -m experiments.scalarization --config.scalarization.step=0.25

trains one run per weight vector of ``mtl_jax.weighting.scalarization_grid(K,
step)`` (every weight >= step; step 0.1 gives 36 points for 3 tasks, 9 for
2 tasks, 84 for the 4 digit-scene tasks) plus the single-task baselines,
``scalarization.seeds`` seeds each, under the papers' protocol
(:mod:`experiments.protocol`: learning rate and model chosen on validation
Delta_m against the single-task baselines), and writes ``scalarization.md`` /
``.csv`` sorted by validation Delta_m, and the best point on validation.

The weights are an input of the compiled step (the weighting state), so the
whole grid compiles once. ``--config.scalarization.lanes=L`` trains L weight
vectors at a time in one ``jax.vmap``-ed program (same batches, same initial
model): worth it on a GPU or TPU with memory to spare; on a CPU the batched
convolutions run slower than the lanes one after another, hence the default 1.
"""
from __future__ import annotations

import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import common, compare, evidence, protocol, report
from experiments import run as run_lib

FLAGS = flags.FLAGS
def grid(config, num_tasks: int) -> list[tuple[float, ...]]:
  """The simplex grid of ``scalarization.step``, rounded for labels."""
  return common.grid_weights(num_tasks, config.scalarization.step)


def run_grid(config, workdir: str) -> list[report.Row]:
  """One row per grid point and one per single-task baseline, under the
  protocol (:mod:`experiments.protocol`): the single-task baselines first,
  then every point with its learning rate and model chosen on validation
  Delta_m against them."""
  config = run_lib.override(config, compare__seeds=config.scalarization.seeds)
  spec = common.dataset_spec(config.data)
  program_for = compare.fixed_weight_programs(config)
  stl = compare.single_task_rows(config, workdir, program_for)
  reference = report.baselines_from_rows(stl, spec, "validation")
  fixed = [(f"w={'_'.join(f'{x:g}' for x in w)}", "grid", w)
           for w in grid(config, len(spec.tasks))]
  lanes = max(1, int(config.scalarization.lanes))
  if lanes == 1:
    return [protocol.run_row(config, workdir, label, kind, program_for,
                             weights=w, reference=reference)
            for label, kind, w in fixed] + stl
  return _run_lanes(config, workdir, fixed, program_for, reference,
                    lanes) + stl


def _run_lanes(config, workdir, fixed, program_for, reference, lanes):
  """The grid in vmapped lanes of ``lanes`` points, at every searched rate
  (or the committed one), then each point's rate chosen on validation."""
  rates = protocol.lr_grid(config) or [protocol.committed_rates(config).get(
      "scalarization", float(config.optim.learning_rate))]
  seeds = protocol.seeds(config)
  search_seeds = seeds[:max(1, config.protocol.search_seeds)] if len(
      rates) > 1 else seeds
  results = {(label, rate): [] for label, _, _ in fixed for rate in rates}

  def train_lanes(points, rate, seed_list):
    for seed in seed_list:
      for start in range(0, len(points), lanes):
        chunk = points[start:start + lanes]
        dirs = [os.path.join(workdir, label, f"lr_{rate:g}", f"seed_{seed}")
                for label, _, _ in chunk]
        outs = run_lib.run_lanes(program_for(rate), dirs, seed=seed,
                                 weights=[w for _, _, w in chunk],
                                 reference=reference)
        for (label, _, _), out in zip(chunk, outs):
          results[(label, rate)].append(out)

  for rate in rates:
    train_lanes(fixed, rate, search_seeds)
  chosen = {}
  for label, _, _ in fixed:
    scores = {rate: np.mean([r["score"] for r in results[(label, rate)]])
              for rate in rates}
    chosen[label] = (min(scores, key=scores.get),
                     {f"{r:g}": float(v) for r, v in scores.items()})
  rest = seeds[len(search_seeds):]
  for rate in rates:
    train_lanes([p for p in fixed if chosen[p[0]][0] == rate], rate, rest)
  rows = []
  for label, kind, w in fixed:
    rate, scores = chosen[label]
    rows.append(run_lib.Row(
        label, kind, results[(label, rate)],
        [os.path.join(workdir, label, f"lr_{rate:g}", f"seed_{s}")
         for s in seeds], w, rate, scores if len(rates) > 1 else None))
  return rows


def summaries(rows, spec) -> list[dict]:
  """Grid rows sorted by validation Delta_m, with the test Delta_m."""
  base_test = report.baselines_from_rows(rows, spec, "test")
  base_val = report.baselines_from_rows(rows, spec, "validation")
  grid_rows = [r for r in rows if r.kind == "grid"]
  best = min(grid_rows, key=lambda r: report.validation_delta(r, spec, base_val),
             default=None)
  verdicts = evidence.verdicts_against(grid_rows, best, spec, base_test)
  out = []
  for row in grid_rows:
    s = {"val_delta_m_metric": report.validation_delta(row, spec, base_val)}
    s.update(report.summarize(row, spec, base_test))
    s["vs_best"] = "-" if row is best else verdicts.get(row.label, "")
    out.append(s)
  return sorted(out, key=lambda s: s["val_delta_m_metric"])


def markdown(config, sums, spec) -> str:
  lines = [f"## Scalarization grid: {config.name}\n",
           f"Generated by `python -m experiments.scalarization`; step "
           f"{config.scalarization.step:g} ({len(sums)} points), "
           f"{config.scalarization.seeds} seed(s), "
           f"{common.num_steps(config)} steps; sorted by validation Δm "
           "(%, average over metrics, against single-task baselines trained "
           "with the same config). The first row is the grid search's pick; "
           "the last columns compare each point with it, seed by seed "
           "(paired t-test at 5 %, test Δm).\n",
           f"| weights ({', '.join(spec.tasks)}) | validation Δm % | "
           "test Δm % (metrics) | test Δm % (tasks) | lr | vs the pick |",
           "|---|---:|---:|---:|---:|---|"]
  for s in sums:
    lr = s.get("learning_rate")
    lines.append(f"| {s['weights']} | {s['val_delta_m_metric']:+.2f} | "
                 f"{s['delta_m_metric_mean']:+.2f} | "
                 f"{s['delta_m_task_mean']:+.2f} | "
                 f"{f'{lr:g}' if lr else '-'} | {s['vs_best']} |")
  return "\n".join(lines) + "\n"



def define_flags() -> None:
  """The command-line flags (defined only when this module is the program)."""
  flags.DEFINE_string("workdir", None,
                      "Output directory; default runs/scalarization_<name>.")
  flags.DEFINE_bool("verbose", False,
                    "Print absl's records (per-step metrics) to the terminal "
                    "instead of <workdir>/log.txt.")
  config_flags.DEFINE_config_file("config", run_lib.DEFAULT_CONFIG,
                                  "Config file.", lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  config = FLAGS.config
  workdir = FLAGS.workdir or os.path.join("runs", f"scalarization_{config.name}")
  os.makedirs(workdir, exist_ok=True)
  log = protocol.log_to_file(workdir, FLAGS.verbose)
  if log:
    print(f"Per-step records: {log} (--verbose prints them here)", flush=True)
  spec = common.dataset_spec(config.data)
  rows = run_grid(config, workdir)
  sums = summaries(rows, spec)
  report.write_csv(os.path.join(workdir, "scalarization.csv"), sums)
  text = markdown(config, sums, spec)
  with open(os.path.join(workdir, "scalarization.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
