"""Step time of every weighting method relative to equal weighting (EW).

Not a test. One fixed model and batch; every registered method's train step
(the engine's ``make_train_step`` under ``jax.jit``, Adam) is compiled first,
then the steps are timed interleaved in one process: every repeat visits
the methods in a fresh random order, and times ``--steps`` steps of the
method right next to ``--steps`` steps of EW (in a random order of the two).
The figure is the median over repeats of ``time(method) / time(EW)``. A
second, separately compiled EW step (``ew (control)``) measures the noise
floor of that ratio: on a quiet machine it is 1.000. On a shared machine
the table also gives the ratio of the fastest visits (``min / min``) and,
independent of timing, the number of top-level ops (kernels: fusions and
others) in the compiled step's entry computation next to EW's.

Target: every loss-based method within 2 % of EW (its own arithmetic is a
handful of scalars next to a forward and backward pass). FAMO is the
exception by design: its step (``Weighting.after_update``) runs one more
forward pass, on the same batch at the updated parameters, to learn its
logits, so its ratio to EW is about 1 + forward / (forward + backward). To
show that cost, when ``famo`` is timed the table has a reference row
``forward (reference)``: the model's forward pass and task losses in train
mode alone, jitted, the extra work FAMO's step does (timed and paired with
EW like the methods; no verdict). STCH runs as ``stch`` (LibMTL's form:
warm-up of 4 epochs, 10 steps each, then the nadir-normalised smooth max,
mu = 1; the step computes both phases and selects one, so the phase does
not change its cost) and as ``stch_stateless`` (TorchJD's stateless form,
mu = 1).

Usage::

  python benchmarks/weighting_overhead.py [--model digits|mlp]
      [--batch-size 32] [--repeats 30] [--steps 5] [--json ratios.json]

``--json`` writes ``{"method": median ratio to EW, ...}`` (with
``"forward (reference)"`` when FAMO was timed).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=("digits", "mlp"), default="digits",
                      help="digits: DigitSceneNet, 4 tasks, 32x32 inputs; "
                      "mlp: GradNorm's MLP trunk with --num-tasks heads")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--num-tasks", type=int, default=10,
                      help="tasks of the mlp model")
  parser.add_argument("--repeats", type=int, default=60)
  parser.add_argument("--steps", type=int, default=3,
                      help="steps per method per repeat")
  parser.add_argument("--methods", nargs="*", default=list(_common.METHODS))
  parser.add_argument("--target", type=float, default=0.02,
                      help="allowed relative overhead (0.02: 2 %%)")
  parser.add_argument("--json", type=pathlib.Path, default=None)
  return parser.parse_args(argv)


CONTROL = "ew (control)"
FORWARD = "forward (reference)"


class ForwardRunner:
  """n jitted forward passes with the task losses, in train mode (batch
  statistics and dropout as in a train step): the work FAMO's
  ``after_update`` adds to a step."""

  def __init__(self, model, batch, task_losses, num_tasks):
    import jax  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top

    from mtl_jax import train  # pylint: disable=g-import-not-at-top
    optimizer = train.make_optimizer(optax.adam(1e-3),
                                     method_learning_rate=1e-3)
    state = train.create_train_state(
        jax.random.PRNGKey(0), model, batch,
        _common.make_weighting("ew", num_tasks), optimizer,
        num_tasks=num_tasks)
    apply = train.module_apply_fn(model)
    key = jax.random.PRNGKey(1)

    def forward(variables, batch):
      outputs, _ = apply(variables, batch, train=True, rngs={"dropout": key})
      return task_losses(outputs, batch)

    self.step = jax.jit(forward)
    self.state = {"params": state.params["model"], **state.model_state}
    self.batch = jax.device_put(dict(batch))
    jax.block_until_ready(self.step(self.state, self.batch))  # compile

  def __call__(self, n: int) -> None:
    import jax  # pylint: disable=g-import-not-at-top
    out = None
    for _ in range(n):
      out = self.step(self.state, self.batch)
    jax.block_until_ready(out)


def entry_ops(runner: _common.JaxRunner) -> tuple[int, int]:
  """(instructions, fusions) of the compiled step's ENTRY computation."""
  text = runner.step.lower(runner.state, runner.batch).compile().as_text()
  entry = text[text.index("\nENTRY"):]
  return (len(re.findall(r"^\s+\S+ = ", entry, re.MULTILINE)), entry.count(" fusion("))


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.model == "digits":
    model, batch, task_losses = _common.digit_problem(args.batch_size)
    num_tasks = 4
    what = f"DigitSceneNet (4 tasks), batch {args.batch_size} of 32x32x3"
  else:
    num_tasks = args.num_tasks
    model, batch, task_losses = _common.mlp_problem(num_tasks, args.batch_size)
    what = f"MLPTrunk ({num_tasks} tasks), batch {args.batch_size} of 250"
  methods = ["ew", CONTROL] + [m for m in args.methods if m != "ew"]

  runners = {}
  for name in methods:
    weighting = _common.make_weighting(
        "ew" if name == CONTROL else name, num_tasks)
    runners[name] = _common.JaxRunner(*_common.jit_step(
        model, batch, task_losses, weighting, num_tasks))
  if "famo" in methods:
    runners[FORWARD] = ForwardRunner(model, batch, task_losses, num_tasks)
    methods.append(FORWARD)
  ops = {name: entry_ops(run) for name, run in runners.items()}
  ratios, times = _common.adjacent_pairs(
      runners, "ew", repeats=args.repeats, steps=args.steps)
  ratios["ew"] = [1.0] * args.repeats

  rows, result = [], {}
  for name in methods:
    ratio = _common.median(ratios[name])
    lo, hi = _common.quartiles(ratios[name])
    if name != CONTROL:
      result[name] = round(ratio, 4)
    verdict = "ok" if ratio <= 1 + args.target else "OVER"
    best = min(times[name]) / min(times["ew"])
    extra_ops = ops[name][0] - ops["ew"][0]
    extra_fusions = ops[name][1] - ops["ew"][1]
    rows.append((name, f"{1e3 * _common.median(times[name]):.2f}",
                 f"{ratio:.3f}", f"{lo:.3f} .. {hi:.3f}", f"{best:.3f}",
                 f"{ops[name][0]} ({extra_ops:+d})",
                 f"{ops[name][1]} ({extra_fusions:+d})",
                 "" if name in ("ew", CONTROL, FORWARD) else verdict))
  print(f"# Weighting overhead: {what}, Adam, jit")
  print(f"# {_common.machine_line()}")
  print(f"# {args.repeats} interleaved repeats, each method's {args.steps} "
        f"steps next to {args.steps} of EW; "
        f"target <= {1 + args.target:.2f} x EW")
  print(_common.markdown_table(
      ("method", "ms / step (median)", "ratio to EW (median)",
       "ratio IQR", "min / min EW", "entry ops (vs EW)",
       "fusions (vs EW)", f"median <= {1 + args.target:.2f}"), rows))
  if args.json is not None:
    args.json.write_text(json.dumps(result, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
