"""Peak memory of one train step on CelebA's 40 tasks, by Jacobian chunk size.

Not a test. The bundled ResNet-18 (``mtl_jax.models.ResNet18(num_attributes=
40)``) on a fixed random CelebA-shaped batch (``--batch-size`` 32 of 64x64x3,
40 binary attributes), the 40 attribute BCE losses of ``experiments/``
(``mtl_jax.losses.celeba_losses``), Adam; the engine's jitted train step with

* EW (the loss-based path: one backward pass), for reference;
* a gradient-space method (``--method``, default UPGrad, or MGDA where UPGrad
  is not registered) on the Jacobian path, heads from
  ``mtl_jax.models.task_params``, with ``chunk_size`` None (the 40 VJPs in
  one vmap), 8, 4 and 1 (that many at a time: one vmapped VJP per chunk, the
  chunks one after the other, chained by ``lax.optimization_barrier``; see
  ``mtl_jax.train.jacobian.batched_vjp``).

For each setting, in a fresh subprocess (so that nothing else shares its
memory): XLA's compiled memory analysis
(``jax.jit(step).lower(state, batch).compile().memory_analysis()``: the
temporaries, the arguments and the outputs; the state is donated, so the
outputs alias it), and, for the settings in ``--run`` whose estimate is
under ``--max-run-gb``, a real step on this machine: the subprocess's peak
resident memory (``VmHWM``, the same as ``getrusage().ru_maxrss``) after
compiling and after ``--steps`` steps, and the median time of a step.

Usage::

  python benchmarks/jacobian_memory.py [--chunks none 8 4 1] [--run ew none 8]
      [--method upgrad] [--batch-size 32] [--steps 3] [--json out.json]
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

NUM_TASKS = 40
GB = 1e9


def celeba_problem(batch_size: int, image_size: int, width: int,
                   blocks: int = 2, seed: int = 0,
                   num_tasks: int = NUM_TASKS):
  """ResNet-18 with 40 heads, a fixed random batch, the CelebA losses
  (``blocks`` basic blocks per stage: 2 is ResNet-18; ``num_tasks`` other
  than 40 only for smoke tests)."""
  from mtl_jax import losses  # pylint: disable=g-import-not-at-top
  from mtl_jax.models import ResNet18  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  batch = {
      "image": rng.random((batch_size, image_size, image_size, 3),
                          dtype=np.float32),
      "attributes": rng.integers(0, 2, (batch_size, num_tasks)).astype(
          np.float32),
  }
  return (ResNet18(num_attributes=num_tasks, width=width,
                   stage_sizes=(blocks,) * 4), batch, losses.celeba_losses)


def _status_kb(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  return 0


def peak_rss_bytes() -> int:
  """This process's peak resident memory so far (``VmHWM``, ``ru_maxrss``)."""
  try:
    return 1024 * _status_kb("VmHWM")
  except OSError:  # not Linux
    import resource  # pylint: disable=g-import-not-at-top
    return 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(args) -> dict:
  """Compiles one setting, reads its memory analysis, and runs it for real
  when asked to and XLA's estimate is under the budget."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from mtl_jax import models, train  # pylint: disable=g-import-not-at-top
  setting = args.child
  model, batch, task_losses = celeba_problem(args.batch_size, args.image_size,
                                             args.width, args.blocks,
                                             num_tasks=args.num_tasks)
  if setting == "ew":
    method, kwargs = _common.make_weighting("ew", args.num_tasks), {}
  else:
    method = _common.make_gradient_method(args.method)
    kwargs = {"task_params": models.task_params(model),
              "chunk_size": None if setting == "none" else int(setting)}
  optimizer = train.make_optimizer(optax.adam(1e-3),
                                   method_learning_rate=1e-3)
  # task_params sizes the (K, P) buffers of MoCo, DB-MTL and ExcessMTL.
  state = train.create_train_state(jax.random.PRNGKey(0), model, batch,
                                   method, optimizer,
                                   num_tasks=args.num_tasks,
                                   task_params=kwargs.get("task_params"))
  batch = jax.device_put(dict(batch))
  step = jax.jit(train.make_train_step(
      train.module_apply_fn(model), task_losses, method, optimizer,
      jacobian=train.JacobianOptions(**kwargs) if kwargs else None),
                 donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  out = {"setting": setting, "compile_s": compile_s,
         "temp": int(mem.temp_size_in_bytes),
         "argument": int(mem.argument_size_in_bytes),
         "output": int(mem.output_size_in_bytes),
         "alias": int(mem.alias_size_in_bytes),
         "params": int(sum(np.size(x) for x in
                           jax.tree.leaves(state.params["model"]))),
         "peak_rss_compile": peak_rss_bytes()}
  # Donated arguments alias the outputs: live at once are the arguments,
  # the temporaries and the outputs that do not reuse an argument's buffer.
  out["estimate"] = out["argument"] + out["temp"] + out["output"] - out["alias"]
  if args.run_steps > 0 and out["estimate"] / GB >= args.max_run_gb:
    out["skipped"] = (f"estimate {out['estimate'] / GB:.1f} GB >= "
                      f"--max-run-gb {args.max_run_gb}")
  elif args.run_steps > 0:
    times = []
    for _ in range(args.run_steps):  # the first one also loads
      start = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready(state)
      times.append(time.perf_counter() - start)
    out["step_s"] = _common.median(times[1:]) if len(times) > 1 else times[0]
    out["first_step_s"] = times[0]
    out["peak_rss"] = peak_rss_bytes()
    out["finite"] = bool(np.all(np.isfinite(np.asarray(metrics["losses"]))))
  return out


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--method", default=None,
                      help="gradient-space method (default: upgrad if "
                      "registered, else mgda)")
  parser.add_argument("--chunks", nargs="*", default=["none", "8", "4", "1"],
                      help="chunk sizes of the Jacobian ('none': all at once)")
  parser.add_argument("--no-ew", action="store_true",
                      help="leave out the EW reference")
  parser.add_argument("--run", nargs="*", default=["ew", "none", "8"],
                      help="settings also run for real ('ew', 'none', or a "
                      "chunk size)")
  parser.add_argument("--steps", type=int, default=3,
                      help="steps of a real run; the time is the median of "
                      "those after the first (of the first if only one)")
  parser.add_argument("--max-run-gb", type=float, default=18.0,
                      help="run a setting for real only if XLA's estimate "
                      "is below this (the machine has 24 GB, shared)")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--image-size", type=int, default=64)
  parser.add_argument("--width", type=int, default=64,
                      help="ResNet-18's first-stage channels (64; smaller "
                      "only for smoke tests)")
  parser.add_argument("--blocks", type=int, default=2,
                      help=argparse.SUPPRESS)  # per stage; 1: smoke tests
  parser.add_argument("--num-tasks", type=int, default=NUM_TASKS,
                      help=argparse.SUPPRESS)  # 40 (CelebA); fewer: smoke tests
  parser.add_argument("--json", type=pathlib.Path, default=None)
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--run-steps", type=int, default=0,
                      help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def run_child(args, setting: str, steps: int) -> dict:
  cmd = [sys.executable, __file__, "--child", setting, "--method",
         args.method, "--run-steps", str(steps), "--batch-size",
         str(args.batch_size), "--image-size", str(args.image_size),
         "--width", str(args.width), "--blocks", str(args.blocks),
         "--num-tasks", str(args.num_tasks),
         "--max-run-gb", str(args.max_run_gb)]
  env = dict(os.environ)
  out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                       check=False)
  if out.returncode != 0:
    return {"setting": setting, "error": out.stderr.strip()[-600:] or
            f"exit {out.returncode}"}
  return json.loads([l for l in out.stdout.splitlines()
                     if l.startswith("{")][-1])


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.method is None:
    names = _common.gradient_methods()
    args.method = "upgrad" if "upgrad" in names else "mgda"
  if args.child is not None:
    print(json.dumps(child(args)))
    return 0
  settings = ([] if args.no_ew else ["ew"]) + [c.lower() for c in args.chunks]
  results = []
  run = [r.lower() for r in args.run]
  for setting in settings:
    results.append(run_child(args, setting,
                             args.steps if setting in run else 0))

  rows = []
  for r in results:
    name = ("EW (one backward pass)" if r["setting"] == "ew" else
            f"{args.method}, chunk_size={r['setting'].replace('none', 'None')}")
    if "error" in r and "estimate" not in r:
      rows.append((name, "failed: " + r["error"].splitlines()[-1][:120],
                   "", "", "", "", "", ""))
      continue
    if "peak_rss" in r:
      real = (f"{r['peak_rss_compile'] / GB:.2f} / "
              f"{r['peak_rss'] / GB:.2f}")
      fits = "yes" if r["peak_rss"] < 24e9 * 0.9 else "no"
      step = f"{r['step_s']:.2f}"
    else:
      real, step = ("not run" if "skipped" not in r else
                    f"not run ({r['skipped']})"), ""
      fits = "yes (estimate)" if r["estimate"] < 24e9 * 0.9 else "no (estimate)"
    rows.append((name, f"{r['temp'] / GB:.2f}", f"{r['argument'] / GB:.2f}",
                 f"{r['output'] / GB:.2f}", f"{r['estimate'] / GB:.2f}", real,
                 step, fits))
  params = next((r["params"] for r in results if "params" in r), 0)
  net = ("ResNet-18" if args.blocks == 2 else
         f"ResNet ({args.blocks} blocks per stage)")
  print(f"# Jacobian memory: {net} (width {args.width}, {params:,} "
        f"parameters), {args.num_tasks} CelebA attribute tasks, batch "
        f"{args.batch_size} of {args.image_size}x{args.image_size}x3, Adam, "
        "jit, state donated")
  print(f"# {_common.machine_line()}")
  print("# XLA estimate = arguments + temporaries + outputs not aliased to "
        "a donated argument; real = the subprocess's peak RSS (VmHWM) "
        "once compiled, then after the steps; fits = under 90 % of the "
        "machine's 24 GB")
  print(_common.markdown_table(
      ("step", "XLA temp GB", "arguments GB", "outputs GB",
       "XLA estimate GB", "peak RSS GB: compiled / after steps (real)",
       "s / step (real)",
       "fits in 24 GB"), rows))
  for r in results:
    if "error" in r:
      print(f"# {r['setting']}: {r['error'].splitlines()[-1][:300]}")
  if args.json is not None:
    args.json.write_text(json.dumps(results, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
