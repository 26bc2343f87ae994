"""Large-K training: every Gramian method trains a 64-task regression to the end.

Not a test. A teacher network makes K related regression tasks (the default
64): ``y_k = tanh(x W) v_k + 0.1 noise``, with one shared ``W`` and each
task's own ``v_k``, so the tasks share a representation and their
gradients in the trunk conflict. The student is GradNorm's MLP trunk
(``mtl_jax.models.MLPTrunk``, 250 -> 4 x 100, K heads of one output; each
task's loss is its mean squared error).
Every step draws a fresh batch. Each gradient-space method that reads the
Gramian (and EW, the reference) runs ``--steps`` steps of the engine's
jitted train step (Adam) and reports:

* the mean task loss over the first and the last 10 steps;
* the steps the non-finite guard skipped (the target is none);
* the median step time (compilation excluded) and the compile time.

Usage::

  python benchmarks/large_k_training.py [--tasks 64] [--steps 300]
      [--batch 66] [--methods upgrad mgda ...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

INPUTS, HIDDEN = 250, 32


class Teacher:
  """Seeded draws of ``(x, y)``: ``y_k = tanh(x W) v_k + 0.1 noise``."""

  def __init__(self, num_tasks: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    self.w = rng.standard_normal((INPUTS, HIDDEN)) / np.sqrt(INPUTS)
    self.v = rng.standard_normal((HIDDEN, num_tasks)) / np.sqrt(HIDDEN)
    self.num_tasks = num_tasks
    self.rng = np.random.default_rng(seed + 1)

  def batch(self, size: int) -> dict[str, np.ndarray]:
    x = self.rng.standard_normal((size, INPUTS))
    y = np.tanh(x @ self.w) @ self.v
    y = y + 0.1 * self.rng.standard_normal(y.shape)
    return {"image": x.astype(np.float32),
            "y": y[..., None].astype(np.float32)}  # (B, K, 1)


def gramian_methods() -> list[str]:
  """Every registered gradient-space method that reads the Gramian."""
  import mtl_jax  # pylint: disable=g-import-not-at-top
  return [n for n in mtl_jax.aggregation.names()
          if isinstance(_common.make_gradient_method(n, num_tasks=1),
                        mtl_jax.aggregation.Aggregator)]


def run_one(name: str, args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top

  from mtl_jax import losses, models  # pylint: disable=g-import-not-at-top
  teacher = Teacher(args.tasks, args.seed)
  model = models.MLPTrunk(num_tasks=args.tasks, out_dim=1)
  method = _common.make_gradient_method(name, args.tasks) if name != "ew" \
      else _common.make_weighting("ew", args.tasks)
  jacobian = ({} if name == "ew"
              else {"task_params": models.task_params(model)})
  start = time.perf_counter()
  step, state, _ = _common.jit_step(model, teacher.batch(args.batch),
                                    losses.synthetic_losses, method,
                                    args.tasks,
                                    learning_rate=args.lr, seed=args.seed,
                                    **jacobian)
  compile_s = time.perf_counter() - start
  losses, skipped, times = [], 0, []
  for _ in range(args.steps):
    batch = jax.device_put(teacher.batch(args.batch))
    t0 = time.perf_counter()
    state, metrics = step(state, batch)
    metrics = jax.device_get(metrics)
    times.append(time.perf_counter() - t0)
    losses.append(float(np.mean(metrics["losses"])))
    skipped += int(metrics["skipped"])
  return {"method": name, "first10": float(np.mean(losses[:10])),
          "last10": float(np.mean(losses[-10:])), "skipped": skipped,
          "step_ms": 1e3 * _common.median(times), "compile_s": compile_s}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tasks", type=int, default=64)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch", type=int, default=66,
                      help="divisible by 3 (SDMGrad and MoDo split it)")
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--methods", nargs="+", default=None)
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  methods = args.methods or ["ew", *gramian_methods()]
  print(_common.machine_line(), flush=True)
  rows = []
  for name in methods:
    row = run_one(name, args)
    print(json.dumps(row), flush=True)
    rows.append(row)
  print(_common.markdown_table(
      ["method", "mean loss, first 10 steps", "last 10 steps",
       "skipped steps", "ms / step", "compile s"],
      [[r["method"], f"{r['first10']:.4f}", f"{r['last10']:.4f}",
        r["skipped"], f"{r['step_ms']:.1f}", f"{r['compile_s']:.1f}"]
       for r in rows]))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": _common.machine_line(), "args": vars(args),
                 "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
