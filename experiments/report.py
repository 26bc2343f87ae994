"""Tables and plots of finished runs: Delta_m, mean and std over seeds, weights.

A *row* is one method (or one scalarization point, or one single-task
baseline) with the results of its seeds (``result.json`` of
:func:`experiments.run.run`) and the run directories. Baselines ``B`` for
Delta_m come from the single-task rows (each metric from the run trained on
its own task only, averaged over seeds) or from published values.

Every renderer of a comparison lives here too: ``results.md``
(:func:`results_markdown`), the console summary (:func:`summary`), the block
embedded in the docs (:func:`summary_markdown`, :func:`embed`), and the
tables of :mod:`experiments.evidence`'s checks and paired tests.
"""
from __future__ import annotations

import csv
import math
import os
import platform
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import jax
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from absl import logging

import mtl_jax
from experiments import common, protocol
from experiments import run as run_lib
from mtl_jax import metrics as mtl_metrics
from mtl_jax import train

MODES = ("metric", "task")  # Delta_m: over all metrics; within tasks, then over tasks


Row = run_lib.Row


def ok_results(row: Row) -> list[dict[str, Any]]:
  return [r for r in row.results if "failed" not in r]


def baselines_from_rows(rows: Sequence[Row], spec: common.DatasetSpec,
                        split: str) -> dict[str, float]:
  """``B[metric]``: the mean over seeds of the single-task run of its task."""
  by_task = {r.label[len("stl_"):]: r for r in rows if r.kind == "single_task"}
  base = {}
  for name in spec.higher_is_better:
    row = by_task.get(common.metric_task(name))
    values = [r[split][name] for r in ok_results(row)] if row else []
    value = float(np.mean(values)) if values else math.nan
    if math.isfinite(value) and value != 0.0:
      base[name] = value
    elif values:  # Delta_m divides by B: a zero baseline cannot be used
      logging.warning("single-task baseline of %s is %s: left out of Delta_m",
                      name, value)
  return base


def delta_ms(values: Mapping[str, float], base: Mapping[str, float],
             spec: common.DatasetSpec) -> dict[str, float]:
  """Delta_m (%) in both conventions; NaN without baselines."""
  if not base or any(not math.isfinite(values.get(k, math.nan)) for k in base):
    return dict.fromkeys(MODES, math.nan)
  return {m: mtl_metrics.delta_m(values, base, spec.higher_is_better, mode=m)
          for m in MODES}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
  if not values:
    return math.nan, math.nan
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return float(np.mean(values)), std


def summarize(row: Row, spec: common.DatasetSpec,
              base_test: Mapping[str, float]) -> dict[str, Any]:
  """Mean and std over seeds of every test metric, Delta_m and wall time."""
  results = ok_results(row)
  out: dict[str, Any] = {"method": row.label, "kind": row.kind,
                         "seeds": len(results),
                         "failed": len(row.results) - len(results),
                         "weights": " ".join(f"{w:g}" for w in row.weights)
                                    if row.weights else "",
                         "hparams": "" if row.weights else _hparams(results)}
  deltas = [delta_ms(r["test"], base_test, spec) for r in results]
  for mode in MODES:
    mean, std = _mean_std([d[mode] for d in deltas
                           if math.isfinite(d[mode])])
    out[f"delta_m_{mode}_mean"], out[f"delta_m_{mode}_std"] = mean, std
  for name in spec.higher_is_better:
    mean, std = _mean_std([r["test"][name] for r in results])
    out[f"{name}_mean"], out[f"{name}_std"] = mean, std
  finals = [r["final_weights"] for r in results if r.get("final_weights")]
  if finals:
    out["final_weights"] = " ".join(f"{w:.3g}" for w in np.mean(finals, 0))
  else:
    out["final_weights"] = ""
  out["learning_rate"] = row.learning_rate
  steps = [r.get("selected_step") for r in results
           if r.get("selected_step") is not None]
  out["selected_step"] = float(np.mean(steps)) if steps else math.nan
  out["wall_s"] = float(sum(r.get("wall_s", 0.0) for r in row.results))
  out["reused"] = sum(bool(r.get("reused")) for r in row.results)
  return out


def _hparams(results: Sequence[Mapping[str, Any]]) -> str:
  """The method's hyperparameters as its runs recorded them
  (``result.json``'s ``hparams``): ``c=0.4 seed=0``."""
  recorded = next((r["hparams"] for r in results if "hparams" in r), None)
  if not recorded:
    return ""
  return " ".join(f"{k}={v}" for k, v in recorded.items())


def validation_delta(row: Row, spec: common.DatasetSpec,
                     base_val: Mapping[str, float]) -> float:
  """Mean over seeds of the final validation Delta_m (metric convention)."""
  vals = [delta_ms(r["validation"], base_val, spec)["metric"]
          for r in ok_results(row)]
  vals = [v for v in vals if math.isfinite(v)]
  return float(np.mean(vals)) if vals else math.inf


# ------------------------------------------------------------------ tables


def write_csv(path: str, summaries: Sequence[Mapping[str, Any]]) -> None:
  keys = list(summaries[0])
  for s in summaries[1:]:
    keys += [k for k in s if k not in keys]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    for s in summaries:
      writer.writerow({k: _csv_value(s.get(k, "")) for k in keys})


def _csv_value(v: Any) -> Any:
  if isinstance(v, float):
    return "" if math.isnan(v) else f"{v:.6g}"
  return v


def _pm(mean: float, std: float, digits: int = 3) -> str:
  if not math.isfinite(mean):
    return "–"
  return f"{mean:.{digits}g} ± {std:.{1 if digits <= 3 else 2}g}"


def fixed_text(mean: float, std: float, decimals: int = 2) -> str:
  """``+1.23 ± 0.45`` (signed)."""
  return _fixed(mean, std, decimals)


def _fixed(mean: float, std: float, decimals: int = 2) -> str:
  if not math.isfinite(mean):
    return "–"
  return f"{mean:+.{decimals}f} ± {std:.{decimals}f}"


def family(label: str) -> str:
  """``loss`` or ``gradient`` for a registered method's label, else ``-``
  (grid points, baselines)."""
  try:
    kind = mtl_jax.family(label.split(" ")[0])
  except ValueError:
    return "-"
  return {"weighting": "loss", "aggregation": "gradient"}[kind]


def markdown_table(summaries: Sequence[Mapping[str, Any]],
                   spec: common.DatasetSpec) -> str:
  """The main table: Delta_m both ways, every test metric, weights, wall time."""
  metric_names = list(spec.higher_is_better)
  arrow = {True: "↑", False: "↓"}
  head = (["method", "family", "Δm % (metrics) ↓", "Δm % (tasks) ↓"]
          + [f"{n} {arrow[spec.higher_is_better[n]]}" for n in metric_names]
          + ["lr", "step", "final weights", "wall s"])
  lines = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
  for s in summaries:
    cells = [s["method"] + (f" ({s['failed']} failed)" if s["failed"] else ""),
             family(s["method"]),
             _fixed(s["delta_m_metric_mean"], s["delta_m_metric_std"]),
             _fixed(s["delta_m_task_mean"], s["delta_m_task_std"])]
    cells += [_pm(s[f"{n}_mean"], s[f"{n}_std"]) for n in metric_names]
    lr, step = s.get("learning_rate"), s.get("selected_step", math.nan)
    cells += [f"{lr:g}" if lr else "-",
              f"{step:.0f}" if math.isfinite(step) else "-",
              s.get("final_weights", ""), f"{s['wall_s']:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- plots


def _trajectory(run_dir: str, tasks: Sequence[str]) -> tuple[np.ndarray,
                                                               np.ndarray]:
  records = train.read_metrics(run_dir)
  steps = np.array([r["step"] for r in records])
  weights = np.array([[r["weights"][t] if r["weights"][t] is not None
                       else np.nan for t in tasks] for r in records])
  return steps, weights


def max_share(row: Row, tasks: Sequence[str]) -> float:
  """The largest share ``w_k / sum_j w_j`` any task reached at any logged
  step of any seed (1.0: one task took all the weight)."""
  best = math.nan
  for d in row.run_dirs:
    if not os.path.exists(os.path.join(d, "metrics.jsonl")):
      continue
    _, w = _trajectory(d, tasks)
    if w.size:
      shares = w / np.maximum(np.nansum(w, axis=1, keepdims=True), 1e-30)
      best = float(np.nanmax([np.nanmax(shares), best]) if math.isfinite(
          best) else np.nanmax(shares))
  return best


def mean_trajectory(row: Row, tasks: Sequence[str]):
  """Steps and (steps, K) weights averaged over the row's seeds."""
  trajs = [_trajectory(d, tasks) for d, r in zip(row.run_dirs, row.results)
           if "failed" not in r and os.path.exists(
               os.path.join(d, "metrics.jsonl"))]
  if not trajs:
    return None, None
  n = min(len(s) for s, _ in trajs)
  return trajs[0][0][:n], np.mean([w[:n] for _, w in trajs], axis=0)


def plot_weights(path: str, rows: Sequence[Row], tasks: Sequence[str]) -> None:
  """Task weights over training, one panel per method (log scale)."""
  rows = [r for r in rows if mean_trajectory(r, tasks)[0] is not None]
  cols = min(4, len(rows))
  nrows = int(math.ceil(len(rows) / cols))
  fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.8 * nrows),
                           sharex=True, squeeze=False)
  for ax, row in zip(axes.flat, rows):
    steps, w = mean_trajectory(row, tasks)
    for k, task in enumerate(tasks):
      ax.plot(steps, w[:, k], label=task, lw=1.2)
    ax.set_yscale("log")
    ax.set_title(f"{row.label} ({family(row.label)})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
  for ax in axes.flat[len(rows):]:
    ax.axis("off")
  for ax in axes[-1]:
    ax.set_xlabel("step")
  axes[0, 0].set_ylabel("task weight")
  axes[0, 0].legend(fontsize=7, loc="best")
  fig.suptitle("Task weights during training (mean over seeds, log scale)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_uw_family(path: str, rows: Sequence[Row],
                   tasks: Sequence[str]) -> bool:
  """UW vs UW-O vs UW-SO: each task's share of the total weight over steps."""
  wanted = [r for name in ("uw", "uw_o", "uw_so") for r in rows
            if r.label == name and mean_trajectory(r, tasks)[0] is not None]
  if not wanted:
    return False
  fig, axes = plt.subplots(1, len(wanted), figsize=(4.2 * len(wanted), 3.2),
                           sharey=True, squeeze=False)
  for ax, row in zip(axes[0], wanted):
    steps, w = mean_trajectory(row, tasks)
    share = w / np.sum(w, axis=1, keepdims=True)
    for k, task in enumerate(tasks):
      ax.plot(steps, share[:, k], label=task, lw=1.4)
    ax.set_title({"uw": "UW (learned log-variances)", "uw_o": "UW-O (1/L)",
                  "uw_so": "UW-SO (softmax(1/(L T)))"}[row.label], fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
  axes[0, 0].set_ylabel("share of the total weight")
  axes[0, 0].legend(fontsize=8)
  fig.suptitle("UW inertia: relative task weights (mean over seeds)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def plot_validation(path: str, rows: Sequence[Row], spec: common.DatasetSpec,
                    base_val: Mapping[str, float]) -> None:
  """Validation curves: Delta_m (if baselines) and each task's loss vs step."""
  rows = [r for r in rows if ok_results(r)]
  panels = (["delta_m"] if base_val else []) + list(spec.tasks)
  cols = min(len(panels), 3)
  nrows = int(math.ceil(len(panels) / cols))
  fig, axes = plt.subplots(nrows, cols, figsize=(3.8 * cols, 3.0 * nrows),
                           squeeze=False)
  for row in rows:
    logs = [run_lib.read_eval_log(d) for d, r in zip(row.run_dirs, row.results)
            if "failed" not in r]
    n = min(len(l) for l in logs)
    steps = [rec["step"] for rec in logs[0][:n]]
    for ax, panel in zip(axes.flat, panels):
      if panel == "delta_m":
        ys = [[delta_ms(rec, base_val, spec)["metric"] for rec in l[:n]]
              for l in logs]
      else:
        ys = [[rec[f"loss/{panel}"] for rec in l[:n]] for l in logs]
      ax.plot(steps, np.mean(ys, axis=0), label=row.label, lw=1.2)
  for ax, panel in zip(axes.flat, panels):
    if panel == "delta_m":
      ax.set_title("validation Δm % (metrics) ↓", fontsize=10)
    else:
      ax.set_title(f"validation loss: {panel}", fontsize=10)
      ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3, which="both")
  for ax in axes.flat[len(panels):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# Renderers: results.md, the console summary, the embedded doc block. -----

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def checks_markdown(results: Sequence[Mapping[str, Any]]) -> str:
  """The benchmark's checks (:func:`experiments.evidence.checks`) as a
  numbered list."""
  lines = []
  for i, c in enumerate(results, 1):
    lines.append(f"{i}. **{'PASS' if c['passed'] else 'FAIL'}**: {c['name']}")
    lines += [f"   - {x}" for x in c["lines"]]
  return "\n".join(lines) + "\n"


def paired_markdown(pairs: Sequence[Mapping[str, Any]]) -> str:
  """Paired comparisons (:func:`experiments.evidence.paired_rows`) as a
  table."""
  lines = ["| A | B | seeds | mean Δm(A) − Δm(B) | std | t | verdict (5 %) |",
           "|---|---|---:|---:|---:|---:|---|"]
  for p in pairs:
    lines.append(f"| {p['a']} | {p['b']} | {p['n']} | {p['mean']:+.2f} | "
                 f"{p['std']:.2f} | {p['t']:+.2f} | {p['text']} |")
  return "\n".join(lines) + "\n"


def results_markdown(config, main, extra, wall_s: float, checks=(),
                     pairs=(), trivial_test=None,
                     regenerated: bool = False) -> str:
  """The generated results.md (header, main table, grid and baseline rows)."""
  spec = common.dataset_spec(config.data)
  seeds = config.compare.seeds
  lines = [
      f"## Results: {config.name}\n",
      f"Generated by `python -m experiments.compare` (config `{config.name}`); "
      f"every number below is written by the run.\n",
      f"- Wall time of the whole command: **{wall_s / 60:.1f} min** "
      f"({wall_s:.0f} s, JIT compilation and data generation included) on "
      f"{machine()}.",
      f"- {seeds} seed(s) per method, at most {common.num_steps(config)} "
      f"steps of batch {config.data.batch_size}; mean ± sample std (ddof 1) "
      f"over seeds. "
      f"{protocol_text(config)}",
      f"- Δm against {_baseline_text(config)}; lower is better, negative beats "
      "single-task learning. \"metrics\": average over all metrics "
      "(Nash-MTL, FAMO); \"tasks\": average within each task, then over tasks "
      "(LibMTL).",
      f"- UW-SO temperature T = {config.method.hparams.uw_so.temperature:g}; final weights "
      f"are the weights at the last step in task order "
      f"{', '.join(spec.tasks)} (mean over seeds).",
      "- wall s: the method's runs summed over seeds, its compilation "
      "included." + (_REGENERATED if regenerated
                     else _reused_text(main + extra)) + "\n",
      markdown_table(main, spec),
  ]
  if checks:
    lines += ["\n### The benchmark's checks\n", checks_markdown(checks)]
  if pairs:
    lines += ["\n### Paired comparisons (test Δm, metrics; same seed = same "
              "initialisation and batch order)\n",
              paired_markdown(pairs)]
  if trivial_test:
    lines += ["\nConstant predictor fitted on the train split (the trivial "
              "baseline), test metrics: " + ", ".join(
                  f"`{k}` {v:.4g}" for k, v in trivial_test.items()) + "\n"]
  if extra:
    lines += ["\nScalarization grid points and single-task runs (each row "
              "one fixed weight vector; a single-task run is only good at its "
              "own task):\n", markdown_table(extra, spec)]
  return "\n".join(lines)


def protocol_text(config) -> str:
  grid = protocol.lr_grid(config)
  if grid:
    lr = (f"Learning rate chosen per row on validation from "
          f"{{{', '.join(f'{r:g}' for r in grid)}}} "
          f"({config.protocol.search_seeds} seed per rate)")
  elif config.protocol.learning_rates:
    lr = (f"Learning rates from the committed search "
          f"`{config.protocol.learning_rates}` (column lr)")
  else:
    lr = f"Learning rate {config.optim.learning_rate:g} for every row"
  if config.train.get("select", "best") == "best":
    sel = (f"the model of the best validation Δm (checked every "
           f"{config.train.eval_every} steps"
           + (f", patience {config.train.patience}" if config.train.get(
               "patience", 0) else "") + ") is the one tested (column step)")
  else:
    sel = "the model after the last step is tested"
  return (f"{lr}; {sel}. Single-task runs are selected against the constant "
          "predictor on their own task, every other run against the "
          "single-task baselines' validation metrics.")


_REGENERATED = (" These outputs were regenerated from finished runs: the wall "
                "time is that of the invocation that trained them.")


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


def machine() -> str:
  devices = jax.devices()
  return (f"{devices[0].platform.upper()} x{len(devices)} "
          f"({os.cpu_count()} CPU cores, {platform.machine()}), "
          f"jax {jax.__version__}")


def summary(out, wall_s: float, workdir: str) -> str:
  """The compact end-of-run summary of a comparison (fits 100 columns)."""
  lines = [f"{'method':<32} {'Δm % (metrics)':>15} {'lr':>7} "
           f"{'vs best scalarization':<24} {'wall s':>7}"]
  for s in out["main"]:
    lr = s.get("learning_rate")
    dm = fixed_text(s["delta_m_metric_mean"], s["delta_m_metric_std"])
    verdict = out.get("verdicts", {}).get(s["method"], "")
    lines.append(f"{s['method'][:32]:<32} {dm:>15} "
                 f"{(f'{lr:g}' if lr else '-'):>7} {verdict[:24]:<24} "
                 f"{s['wall_s']:>7.0f}")
  if out["pairs"]:
    lines.append("")
    for p in out["pairs"]:
      lines.append(f"{p['a']} vs {p['b']}: {p['mean']:+.2f} ± {p['std']:.2f} "
                   f"over {p['n']} seeds, t = {p['t']:+.2f}: {p['text']}")
  if out["checks"]:
    lines.append("")
    for i, c in enumerate(out["checks"], 1):
      lines.append(f"check {i} {'PASS' if c['passed'] else 'FAIL'}: {c['name']}")
      for x in c["lines"]:
        lines += textwrap.wrap(x, width=100, initial_indent="    ",
                               subsequent_indent="      ")
  lines.append(f"\nwall time {wall_s / 60:.1f} min; tables, plots and the "
               "per-step log:")
  lines.append(os.path.join(workdir, "results.md"))
  return "\n".join(lines)


def summary_markdown(config, out, wall_s: float, link: str = "") -> str:
  """The compact generated block that docs/results/README.md embeds
  (``compare --docs``)."""
  lines = [f"Generated by `python -m experiments.compare` (config "
           f"`{config.name}`, {machine()}; {wall_s / 60:.1f} min); "
           f"{config.compare.seeds} seeds. {protocol_text(config)}"
           + (f" Full tables and plots: [{link}]({link})." if link else "")
           + "\n",
           "| method | family | Δm % (metrics) ↓ | vs best scalarization "
           "(paired) | lr |", "|---|---|---:|---|---:|"]
  for s in out["main"]:
    lr = s.get("learning_rate")
    lines.append(f"| {s['method']} | {family(s['method'])} | "
                 f"{fixed_text(s['delta_m_metric_mean'], s['delta_m_metric_std'])}"
                 f" | {out.get('verdicts', {}).get(s['method'], '')} | "
                 f"{f'{lr:g}' if lr else '-'} |")
  if out["pairs"]:
    lines += ["", paired_markdown(out["pairs"])]
  if out["checks"]:
    lines += ["The benchmark's checks:\n", checks_markdown(out["checks"])]
  return "\n".join(lines)


def embed(doc_path: str, text: str, begin: str = BEGIN, end: str = END) -> None:
  """Replaces the block between ``begin`` and ``end`` in ``doc_path`` by
  ``text`` (by default the main job's summary markers)."""
  with open(doc_path) as f:
    doc = f.read()
  if begin not in doc or end not in doc:
    raise ValueError(f"{doc_path} has no {begin} ... {end} block; add the two "
                     "markers where the block goes.")
  head, rest = doc.split(begin, 1)
  tail = rest.split(end, 1)[1]
  with open(doc_path, "w") as f:
    f.write(f"{head}{begin}\n{text.strip()}\n{end}{tail}")
