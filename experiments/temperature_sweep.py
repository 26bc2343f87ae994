r"""UW-SO over a grid of temperatures T, with the resulting Delta_m curve.

  python -m experiments.temperature_sweep     # digit scenes, T in sweep.temperatures

Trains UW-SO for every T of ``sweep.temperatures`` (``sweep.seeds`` seeds
each) and the single-task baselines under the papers' protocol
(:mod:`experiments.protocol`: learning rate and model chosen on validation), then writes into ``--workdir``
``temperature_sweep.md``/``.csv`` (validation and test Delta_m, final
weights per T) and ``temperature_sweep.png`` (Delta_m against T, and each
task's share of the weight at the end of training against T, which shows the
saturation of small T) and ``temperature_sweep_weights.png`` (every UW-SO
row's task weights over training). The table's paired column is each row's
test Delta_m minus the best T's, seed by seed (mean and std). Choose T on the **validation** column; the test
column is for reporting only.
"""
from __future__ import annotations

import functools
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import common, compare, evidence, protocol, report
from experiments import run as run_lib

FLAGS = flags.FLAGS
def run_sweep(config, workdir: str) -> tuple[list[report.Row],
                                             list[report.Row]]:
  """UW-SO rows (one per T) and the single-task rows, under the protocol
  (:mod:`experiments.protocol`): the single-task baselines first, then every
  T with its learning rate and its model chosen on validation Delta_m."""
  config = run_lib.override(config, compare__seeds=config.sweep.seeds)
  stl = compare.single_task_rows(config, workdir,
                                 compare.fixed_weight_programs(config))
  spec = common.dataset_spec(config.data)
  reference = report.baselines_from_rows(stl, spec, "validation")
  rows = []
  for t in common.parse_list(config.sweep.temperatures, float):
    program_for = functools.lru_cache(maxsize=None)(
        lambda rate, t=t: run_lib.build_program(run_lib.override(
            config, method__name="uw_so",
            method__hparams__uw_so__temperature=t,
            optim__learning_rate=rate)))
    rows.append(protocol.run_row(config, workdir, f"T={t:g}", "method",
                                 program_for, reference=reference,
                                 rate_label="uw_so"))
  for entry in common.parse_list(config.sweep.get("variants", "")):
    fields = parse_variant(entry, config)
    program_for = functools.lru_cache(maxsize=None)(
        lambda rate, f=fields: run_lib.build_program(run_lib.override(
            config, optim__learning_rate=rate, **f)))
    # Without the search, UW-SO's variants train at UW-SO's committed rate,
    # as every T does: the comparison is then about the weights alone.
    name = str(fields["method__name"])
    rows.append(protocol.run_row(
        config, workdir, entry, "variant", program_for, reference=reference,
        rate_label="uw_so" if name.startswith("uw_so") else name))
  return rows, stl


def parse_variant(entry: str, config) -> dict[str, object]:
  """``"uw_so_rel:tau=4"`` -> the config overrides of that row.

  A variant is a method name, optionally followed by ``:field=value`` pairs
  that override that method's ``config.method.hparams.<name>`` fields for
  that row only (the row's label, and so its run directory, is the whole
  entry).
  """
  name, *pairs = entry.split(":")
  name = name.strip()
  fields: dict[str, object] = {"method__name": name}
  table = config.method.hparams.get(name, {})
  for pair in pairs:
    key, sep, value = pair.partition("=")
    key = key.strip()
    if not sep or key not in table:
      raise ValueError(
          f"sweep.variants entry {entry!r}: {pair!r} is not field=value with "
          f"a field of config.method.hparams.{name} ({sorted(table)}); "
          "write e.g. 'uw_so_rel:tau=4'.")
    current = table[key]
    fields[f"method__hparams__{name}__{key}"] = (
        float(value) if current is None else type(current)(value))
  return fields


def summaries(rows, stl, spec) -> list[dict]:
  """One summary per T, with validation Delta_m next to the test one."""
  base_test = report.baselines_from_rows(stl, spec, "test")
  base_val = report.baselines_from_rows(stl, spec, "validation")
  fixed = [r for r in rows if r.kind == "method"]
  best = min(fixed, key=lambda r: report.validation_delta(r, spec, base_val),
             default=None)
  pairs = evidence.paired_against(rows, best, spec, base_test)
  out = []
  for row in rows:
    s = {"temperature": (float(row.label[2:]) if row.kind == "method"
                         else math.nan),
         "val_delta_m_metric": report.validation_delta(row, spec, base_val)}
    s.update(report.summarize(row, spec, base_test))
    res = pairs.get(row.label)
    s["vs_best"] = "-" if row is best or res is None else evidence.verdict_text(res)
    s["vs_best_mean"] = (res["mean"] if res and row is not best else math.nan)
    s["vs_best_std"] = (res["std"] if res and row is not best else math.nan)
    s["max_share"] = report.max_share(row, spec.tasks)
    out.append(s)
  return out


def plot(path: str, sums, spec) -> None:
  """Delta_m against T (validation and test); final weight shares against T.

  The automatic variants (no T) are horizontal lines in the first panel.
  """
  variants = [s for s in sums if not math.isfinite(s["temperature"])]
  sums = [s for s in sums if math.isfinite(s["temperature"])]
  t = [s["temperature"] for s in sums]
  # The legend gets a panel of its own: with several automatic variants it
  # would cover the curves.
  fig, (a, legend, b) = plt.subplots(
      1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [3, 1.5, 3]})
  legend.axis("off")
  a.plot(t, [s["val_delta_m_metric"] for s in sums], "o-", label="validation")
  a.plot(t, [s["delta_m_metric_mean"] for s in sums], "s--", label="test")
  for i, v in enumerate(variants):
    colour = f"C{i + 2}"
    a.axhline(v["val_delta_m_metric"], color=colour, lw=1.0,
              label=f"{v['method']} (validation)")
    a.axhline(v["delta_m_metric_mean"], color=colour, lw=1.0, ls="--",
              label=f"{v['method']} (test)")
  a.set_xscale("log")
  a.set_xlabel("temperature T")
  a.set_ylabel("Δm % (metrics) ↓")
  legend.legend(*a.get_legend_handles_labels(), fontsize=7, loc="center")
  a.grid(alpha=0.3, which="both")
  shares = np.array([[float(x) for x in s["final_weights"].split()]
                     for s in sums])
  shares = shares / shares.sum(axis=1, keepdims=True)
  for k, task in enumerate(spec.tasks):
    b.plot(t, shares[:, k], "o-", label=task)
  b.set_xscale("log")
  b.set_ylim(0, 1)
  b.set_xlabel("temperature T")
  b.set_ylabel("share of the weight at the last step")
  b.axhline(1 / len(spec.tasks), color="grey", lw=0.8, ls=":")
  b.legend(fontsize=8)
  b.grid(alpha=0.3, which="both")
  fig.suptitle("UW-SO temperature sweep")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def markdown(config, sums) -> str:
  fixed = [s for s in sums if math.isfinite(s["temperature"])]
  best = min(fixed, key=lambda s: s["val_delta_m_metric"])
  lines = [f"## UW-SO temperature sweep: {config.name}\n",
           f"Generated by `python -m experiments.temperature_sweep`; "
           f"{config.sweep.seeds} seed(s) per T, {common.num_steps(config)} "
           "steps. Δm (%, average over metrics) against single-task "
           "baselines trained with the same config. **Best T on validation: "
           f"{best['temperature']:g}.**\n",
           "The last column compares each row with that T, seed by seed "
           "(paired t-test at 5 %, test Δm).\n",
           "Max share: the largest share of the total weight any task reached "
           "at any logged step of any seed.\n",
           "| T | validation Δm % | test Δm % (metrics) | test Δm % (tasks) | "
           "final weights | max share | lr | paired Δ vs best T | vs best T |",
           "|---:|---:|---:|---:|---|---:|---:|---:|---|"]
  for s in sums:
    t = (f"{s['temperature']:g}" if math.isfinite(s["temperature"])
         else f"{s['method']} (automatic)" if s["method"].startswith("uw_so")
         else s["method"])
    paired = ("-" if not math.isfinite(s["vs_best_mean"]) else
              report.fixed_text(s["vs_best_mean"], s["vs_best_std"]))
    lines.append(f"| {t} | {s['val_delta_m_metric']:+.2f} | "
                 f"{report.fixed_text(s['delta_m_metric_mean'], s['delta_m_metric_std'])} | "
                 f"{report.fixed_text(s['delta_m_task_mean'], s['delta_m_task_std'])} | "
                 f"{s['final_weights']} | "
                 f"{s['max_share']:.3f} | {s['learning_rate']:g} | {paired} | "
                 f"{s['vs_best']} |")
  return "\n".join(lines) + "\n"



def define_flags() -> None:
  """The command-line flags (defined only when this module is the program)."""
  flags.DEFINE_string("workdir", None,
                      "Output directory; default runs/temperature_sweep_<name>.")
  flags.DEFINE_bool("verbose", False,
                    "Print absl's records (per-step metrics) to the terminal "
                    "instead of <workdir>/log.txt.")
  config_flags.DEFINE_config_file("config", run_lib.DEFAULT_CONFIG,
                                  "Config file.", lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  config = FLAGS.config
  workdir = FLAGS.workdir or os.path.join("runs",
                                          f"temperature_sweep_{config.name}")
  os.makedirs(workdir, exist_ok=True)
  log = protocol.log_to_file(workdir, FLAGS.verbose)
  if log:
    print(f"Per-step records: {log} (--verbose prints them here)", flush=True)
  spec = common.dataset_spec(config.data)
  rows, stl = run_sweep(config, workdir)
  sums = summaries(rows, stl, spec)
  report.write_csv(os.path.join(workdir, "temperature_sweep.csv"), sums)
  plot(os.path.join(workdir, "temperature_sweep.png"), sums, spec)
  report.plot_weights(os.path.join(workdir, "temperature_sweep_weights.png"),
                      [r for r in rows if r.label.startswith(("T=", "uw_so"))],
                      spec.tasks)
  text = markdown(config, sums)
  with open(os.path.join(workdir, "temperature_sweep.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
