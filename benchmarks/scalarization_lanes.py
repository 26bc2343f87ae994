"""Vmapped scalarization lanes: L weight vectors in one program vs one by one.

Not a test. ``experiments/scalarization.py --config.scalarization.lanes=L``
trains L fixed weight vectors at a time with ``jax.vmap`` of the pure train
step over the stacked states (same batch, same initial model; the weights
live in the method state, ``mtl_jax.weighting.ScalarizationState``).
This script times that step for each L in ``--lanes`` against the one-lane
step run L times, on one fixed batch: each repeat times ``--steps`` steps of
every candidate in a fresh random order (all compiled first). The figure is
the median over repeats of ``t(L lanes, one vmapped step) / (L * t(one
lane))``: below 1, the lanes pay; above 1, run them one after another (on a
CPU the batched convolutions are slower, hence the default ``lanes=1``).

Usage::

  python benchmarks/scalarization_lanes.py [--model digits|segnet]
      [--lanes 2 4 8] [--batch-size 8] [--image-size 288x384]
      [--repeats 10] [--steps 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=("digits", "segnet"),
                      default="digits")
  parser.add_argument("--lanes", type=int, nargs="*", default=[2, 4, 8])
  parser.add_argument("--batch-size", type=int, default=None,
                      help="default: 32 (digits), 8 (segnet)")
  parser.add_argument("--image-size", default="288x384",
                      help="HxW of the segnet model's inputs")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--json", type=pathlib.Path, default=None)
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from experiments import common  # pylint: disable=g-import-not-at-top
  from mtl_jax import train  # pylint: disable=g-import-not-at-top
  if args.model == "digits":
    batch_size = args.batch_size or 32
    model, batch, task_losses = _common.digit_problem(batch_size)
    num_tasks = 4
    what = f"DigitSceneNet (4 tasks), batch {batch_size} of 32x32x3"
  else:
    batch_size = args.batch_size or 8
    height, width = (int(x) for x in args.image_size.lower().split("x"))
    model, batch, task_losses = _common.segnet_problem(batch_size, height,
                                                       width)
    num_tasks = 3
    what = f"SegNet, NYUv2 heads (3 tasks), batch {batch_size} of " \
        f"{height}x{width}x3"
  import mtl_jax  # pylint: disable=g-import-not-at-top
  weighting = mtl_jax.get("scalarization",
                          weights=(1.0 / num_tasks,) * num_tasks)
  optimizer = train.make_optimizer(optax.adam(1e-3),
                                   method_learning_rate=1e-3)
  state = train.create_train_state(jax.random.PRNGKey(0), model, batch,
                                   weighting, optimizer, num_tasks=num_tasks)
  step_fn = train.make_train_step(train.module_apply_fn(model), task_losses,
                                  weighting, optimizer)
  device_batch = jax.device_put(dict(batch))
  rng = jax.random.PRNGKey(1)

  def lane_weights(num_lanes):
    draws = jax.random.dirichlet(rng, jnp.ones(num_tasks), (num_lanes,))
    return [tuple(float(x) for x in w) for w in draws]

  def stacked(num_lanes):
    states = [common.with_weights(state, w) for w in lane_weights(num_lanes)]
    return jax.tree.map(lambda *x: jnp.stack(x), *states)

  one = jax.jit(step_fn, donate_argnums=0)
  runners = {1: _common.JaxRunner(one, jax.tree.map(jnp.copy, state),
                                  device_batch)}
  for num_lanes in args.lanes:
    step = jax.jit(jax.vmap(step_fn, in_axes=(0, None)), donate_argnums=0)
    runners[num_lanes] = _common.JaxRunner(step, stacked(num_lanes),
                                           device_batch)
  for run in runners.values():
    run(1)  # compile
  times = _common.interleaved(runners, repeats=args.repeats, steps=args.steps)
  rows, result = [], {"device_kind": jax.devices()[0].device_kind}
  for num_lanes in [1] + list(args.lanes):
    ratios = [t / (num_lanes * t1) for t, t1 in zip(times[num_lanes],
                                                    times[1])]
    lo, hi = _common.quartiles(ratios)
    ms = 1e3 * _common.median(times[num_lanes])
    ratio = _common.median(ratios)
    rows.append((num_lanes, f"{ms:.2f}", f"{ms / num_lanes:.2f}",
                 f"{ratio:.3f}", f"{lo:.3f} .. {hi:.3f}",
                 "" if num_lanes == 1 else ("yes" if ratio < 1 else "no")))
    result[str(num_lanes)] = {"ms_per_step": ms, "ratio": ratio,
                              "iqr": [lo, hi]}
  print(f"# Vmapped scalarization lanes: {what}, Adam, jit")
  print(f"# {_common.machine_line()}")
  print(f"# {args.repeats} interleaved repeats x {args.steps} steps; ratio = "
        "t(L lanes, one vmapped step) / (L x t(one lane))")
  print(_common.markdown_table(
      ("lanes", "ms / step", "ms / lane-step",
       ("ratio to L x one lane (median)"), "ratio IQR", "lanes pay"), rows))
  if args.json is not None:
    args.json.write_text(json.dumps(result, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
