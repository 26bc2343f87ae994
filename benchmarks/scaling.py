"""Data-parallel scaling: the collectives of the pmapped step, and throughput.

Not a test. Two parts:

1. Collectives (default). The engine's train step under ``jax.pmap`` on 1,
   2, 4 and 8 fake CPU devices (``--xla_force_host_platform_device_count``;
   the device count is fixed when jax is imported, so the script runs itself
   once per count in a subprocess). For each model and method it reads the
   compiled HLO with :func:`mtl_jax.train.count_collectives` and reports the
   number of all-reduce ops per step, the elements and bytes they carry, and
   the split expected from the step's maths: every gradient once (P
   parameters), the K losses once, and the floating model state (BatchNorm
   statistics, S elements) once. Target: all-reduced elements = P + K (+ S),
   that is gradients reduced once plus at most one K-element reduction for
   the losses. It also times the step (fixed global batch split over the
   devices); fake devices share the same CPU cores, so these times show the
   overhead of the collectives, not a speed-up.

2. Throughput (``--throughput``), on the default backend: examples per
   second of the jitted train step of the digit scenes (DigitSceneNet, batch
   32 of 32x32) and of NYUv2's SegNet (batch 8 of 288x384, three tasks), with
   the device name (``jax.devices()[0].device_kind``). SegNet is skipped on a
   CPU unless ``--segnet-on-cpu`` (a step takes minutes on 2 cores).

Usage::

  python benchmarks/scaling.py [--devices 1 2 4 8] [--models mlp digits]
      [--methods ew uw uw_so gls] [--json out.json]
  python benchmarks/scaling.py --throughput [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

DTYPE_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4,
               "s64": 8, "u64": 8, "pred": 1, "s8": 1, "u8": 1}
GLOBAL_BATCH = 32
NUM_MLP_TASKS = 10


def problem(model_name: str):
  if model_name == "mlp":
    model, batch, losses = _common.mlp_problem(NUM_MLP_TASKS, GLOBAL_BATCH)
    return model, batch, losses, NUM_MLP_TASKS
  model, batch, losses = _common.digit_problem(GLOBAL_BATCH)
  return model, batch, losses, 4


def collectives_child(args) -> dict:
  """Runs in a process with ``args.child`` fake devices; returns its rows."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from mtl_jax import train  # pylint: disable=g-import-not-at-top
  n = jax.local_device_count()
  assert n == args.child, (n, args.child)
  rows = []
  for model_name in args.models:
    model, batch, task_losses, num_tasks = problem(model_name)
    for method in args.methods:
      weighting = _common.make_weighting(method, num_tasks)
      optimizer = train.make_optimizer(optax.adam(1e-3),
                                       method_learning_rate=1e-3)
      state = train.create_train_state(jax.random.PRNGKey(0), model, batch,
                                       weighting, optimizer, num_tasks)
      num_params = sum(np.size(x) for x in jax.tree.leaves(state.params))
      num_state = sum(np.size(x) for x in jax.tree.leaves(state.model_state)
                      if np.issubdtype(np.asarray(x).dtype, np.floating))
      step = train.pmap_step(train.make_train_step(
          train.module_apply_fn(model), task_losses, weighting, optimizer,
          axis_name="batch"), "batch")
      rstate = train.replicate(state)
      rbatch = train.shard_batch(batch, n)
      text = step.lower(rstate, rbatch).compile().as_text()
      ops = train.count_collectives(text)
      reduces = [op for op in ops if op.kind == "all-reduce"]
      elements = sum(op.num_elements for op in reduces)
      nbytes = sum(DTYPE_BYTES.get(dtype, 4) * int(np.prod(dims))
                   for op in reduces for dtype, dims in op.shapes)
      # Time the step on the fixed global batch split over the devices.
      rstate, _ = step(rstate, rbatch)
      jax.block_until_ready(rstate)
      times = []
      for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
          rstate, _ = step(rstate, rbatch)
        jax.block_until_ready(rstate)
        times.append((time.perf_counter() - start) / args.steps)
      rows.append({
          "devices": n, "model": model_name, "method": method,
          "num_tasks": num_tasks, "params": int(num_params),
          "model_state": int(num_state),
          "all_reduce_ops": len(reduces),
          "all_reduce_sizes": [op.num_elements for op in reduces],
          "other_collectives": [op.kind for op in ops
                                if op.kind != "all-reduce"],
          "all_reduce_elements": int(elements),
          "all_reduce_bytes": int(nbytes),
          "expected_elements": int(num_params + num_tasks + num_state),
          "host_transfers": len(train.host_transfers(text)),
          "ms_per_step": 1e3 * _common.median(times),
      })
  return {"device_kind": jax.devices()[0].device_kind, "rows": rows}


def run_collectives(args) -> int:
  results = []
  for n in args.devices:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={n}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, __file__, "--child", str(n), "--models",
           *args.models, "--methods", *args.methods, "--steps",
           str(args.steps), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
      print(out.stderr[-3000:], file=sys.stderr)
      return out.returncode
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    child = json.loads(line)
    results += child["rows"]

  print("# Collectives of the pmapped train step (fake CPU devices)")
  print(f"# {_common.machine_line()}")
  print(f"# global batch {GLOBAL_BATCH} split over the devices; Adam; "
        "expected all-reduced elements = P (params) + K (losses) + S "
        "(floating model state)")
  table = []
  for r in results:
    ok = (r["all_reduce_elements"] == r["expected_elements"]
          and not r["other_collectives"] and r["host_transfers"] == 0)
    table.append((
        r["devices"], r["model"], r["method"], r["all_reduce_ops"],
        " + ".join(str(s) for s in r["all_reduce_sizes"]) or "-",
        f"{r['all_reduce_bytes']:,}",
        f"{r['params']:,} + {r['num_tasks']} + {r['model_state']:,}",
        "yes" if ok else ("-" if r["devices"] == 1 and not r["all_reduce_ops"]
                          else "NO"),
        f"{r['ms_per_step']:.2f}"))
  print(_common.markdown_table(
      ("devices", "model", "method", "all-reduce ops / step",
       "elements per op", "bytes / step", "P + K + S",
       "gradients once, losses once", "ms / step"), table))
  if args.json is not None:
    args.json.write_text(json.dumps(results, indent=2) + "\n")
  return 0


def run_throughput(args) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  print("# Train-step throughput (jit, one device, Adam, EW; fixed batch)")
  print(f"# {_common.machine_line()}")
  print(f"# device_kind: {device.device_kind}")
  cases = [("digit scenes, DigitSceneNet", 32, "digits")]
  if device.platform != "cpu" or args.segnet_on_cpu:
    cases.append(("NYUv2, SegNet (288x384)", 8, "segnet"))
  rows, result = [], {"device_kind": device.device_kind}
  for what, batch_size, name in cases:
    if name == "digits":
      model, batch, task_losses = _common.digit_problem(batch_size)
      num_tasks = 4
    else:
      model, batch, task_losses = segnet_problem(batch_size)
      num_tasks = 3
    run = _common.JaxRunner(*_common.jit_step(
        model, batch, task_losses, _common.make_weighting("ew", num_tasks),
        num_tasks))
    run(2)
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      run(args.steps)
      times.append((time.perf_counter() - start) / args.steps)
    sec = _common.median(times)
    rows.append((what, batch_size, f"{1e3 * sec:.1f}",
                 f"{batch_size / sec:.1f}", device.device_kind))
    result[name] = {"batch": batch_size, "ms_per_step": 1e3 * sec,
                    "examples_per_s": batch_size / sec}
  if device.platform == "cpu" and not args.segnet_on_cpu:
    print("# SegNet skipped on CPU (pass --segnet-on-cpu to force it)")
  print(_common.markdown_table(
      ("step", "batch", "ms / step", "examples / s", "device"), rows))
  if args.json is not None:
    args.json.write_text(json.dumps(result, indent=2) + "\n")
  return 0


def segnet_problem(batch_size: int):
  """SegNet with NYUv2's heads and a fixed random NYUv2-shaped batch."""
  from mtl_jax import losses  # pylint: disable=g-import-not-at-top
  from mtl_jax.models import NYUV2_HEADS, SegNet  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  s = (batch_size, 288, 384)
  normal = rng.normal(size=s + (3,))
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  batch = {"image": rng.random(s + (3,), dtype=np.float32),
           "segmentation": rng.integers(-1, 13, s).astype(np.int32),
           "depth": rng.uniform(0.5, 10, s + (1,)).astype(np.float32),
           "normal": normal.astype(np.float32)}
  return SegNet(heads=NYUV2_HEADS), batch, losses.nyuv2_losses


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4, 8])
  parser.add_argument("--models", nargs="*", default=["mlp", "digits"],
                      choices=["mlp", "digits"])
  parser.add_argument("--methods", nargs="*",
                      default=["ew", "uw", "uw_so", "gls"])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--throughput", action="store_true")
  parser.add_argument("--segnet-on-cpu", action="store_true")
  parser.add_argument("--json", type=pathlib.Path, default=None)
  parser.add_argument("--child", type=int, default=None,
                      help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.child is not None:
    print(json.dumps(collectives_child(args)))
    return 0
  if args.throughput:
    return run_throughput(args)
  return run_collectives(args)


if __name__ == "__main__":
  sys.exit(main())
