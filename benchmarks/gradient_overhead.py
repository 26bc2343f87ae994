"""Step time of every gradient-space method relative to equal weighting (EW).

Not a test. One fixed model and batch; the engine's jitted ``make_train_step``
(Adam, non-finite guard, norms) with EW (the loss-based ``mtl_jax.get("ew")``:
one backward pass of the summed losses) and with every registered
gradient-space method (``mtl_jax.aggregation.names()`` at run time; CAGrad
with ``c=0.4``, FairGrad with ``alpha=1.0``), heads from
``mtl_jax.models.task_params(model)``, in both Jacobian modes:

* ``params`` (the default): the K x P Jacobian of the shared parameters, one
  forward pass and a vmapped VJP over the K unit cotangents;
* ``features``: the Jacobian of the shared features the model marks, then
  one VJP through the trunk with the weighted cotangent;

and, for each of ``--chunk-sizes``, in ``params`` mode with that
``chunk_size`` (rows ``name [chunk c]``): the K VJPs ``c`` at a time, one
vmapped VJP per chunk, the chunks one after the other (``chunk_size=1``: K
ordinary VJPs in a row).

Two more rows split a method's cost into engine and solver: ``jacobian
(w = 1)`` is the Jacobian path with a method that returns constant weights
(ones: EW's update, no solver), so ``t(method) / t(jacobian (w = 1))`` is
what the method's own computation on the K x K Gramian adds (``solver ms``:
that quotient minus one, times the ``jacobian (w = 1)`` step); ``ew
(control)`` is a second, separately compiled EW step (the noise floor of the
ratios).

Timing: every step is compiled first; then each of ``--repeats`` repeats
visits the candidates in a fresh random order and times ``--steps`` steps of
the candidate right next to ``--steps`` steps of EW (random order of the
two). Figures are medians over repeats of ``t(candidate) / t(EW)`` and, for
``/ jacobian``, of the per-repeat quotient of a method's ratio by the
``jacobian (w = 1)`` ratio (same mode). Independent of timing, the table
counts the compiled step's fusions (kernels) in its entry computation and
its ``while`` loops (a solver's fixed iteration budget shows up as one).

Models: ``mlp`` (GradNorm's MLP trunk, ``--num-tasks`` heads), ``digits``
(DigitSceneNet, 4 tasks, 32x32 inputs), ``segnet`` (NYUv2's SegNet, 3 tasks,
``--image-size`` 288x384; meant for an accelerator, see ``gpu_check.sh``).

Usage::

  python benchmarks/gradient_overhead.py [--model mlp|digits|segnet]
      [--num-tasks 10] [--batch-size 32] [--repeats 40] [--steps 3]
      [--modes params features] [--chunk-sizes 1 2] [--methods mgda ...]
      [--json out.json]

``--json`` writes ``{candidate: {variant: {"ratio": median ratio to EW,
"iqr": [q1, q3], "ms": median ms / step, "vs_jacobian": ...}}}``, the
variant being ``params``, ``features`` or ``params, chunk c``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

CONTROL = "ew (control)"
JACOBIAN = "jacobian (w = 1)"
MODES = ("params", "features")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=("digits", "mlp", "segnet"),
                      default="digits",
                      help="digits: DigitSceneNet, 4 tasks, 32x32 inputs; "
                      "mlp: GradNorm's MLP trunk with --num-tasks heads; "
                      "segnet: NYUv2's SegNet, 3 tasks, --image-size")
  parser.add_argument("--image-size", default="288x384",
                      help="HxW of the segnet model's inputs")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--num-tasks", type=int, default=10,
                      help="tasks of the mlp model")
  parser.add_argument("--repeats", type=int, default=40)
  parser.add_argument("--steps", type=int, default=3,
                      help="steps per candidate per repeat")
  parser.add_argument("--methods", nargs="*", default=None,
                      help="default: every registered gradient-space method")
  parser.add_argument("--modes", nargs="*", default=list(MODES),
                      choices=MODES)
  parser.add_argument("--feature-methods", nargs="*", default=None,
                      help="methods also timed in jacobian_mode='features' "
                      "(default: all of --methods)")
  parser.add_argument("--chunk-sizes", nargs="*", type=int, default=[],
                      help="also time these chunk sizes of the Jacobian "
                      "(params mode), as rows 'name [chunk c]'")
  parser.add_argument("--chunk-methods", nargs="*", default=None,
                      help="methods also timed with each of --chunk-sizes "
                      "(default: all of --methods)")
  parser.add_argument("--compile-budget-s", type=float, default=None,
                      help="stop compiling new candidates after this many "
                      "seconds (the rest are skipped and listed)")
  parser.add_argument("--json", type=pathlib.Path, default=None)
  return parser.parse_args(argv)


def hlo_counts(runner: _common.JaxRunner) -> tuple[int, int]:
  """(fusions in the ENTRY computation, while loops in the module) of the
  compiled step."""
  text = runner.step.lower(runner.state, runner.batch).compile().as_text()
  entry = text[text.index("\nENTRY"):]
  return entry.count(" fusion("), len(re.findall(r"\swhile\(", text))


def variant_key(mode: str, chunk: int | None) -> str:
  """The JSON key of a variant: 'params', 'features', 'params, chunk 1'."""
  return mode if chunk is None else f"{mode}, chunk {chunk}"


def label(name: str, mode: str, chunk: int | None = None) -> str:
  """'name', 'name [features]', 'name [chunk 1]' ('ew' stays 'ew')."""
  if name in ("ew", CONTROL):
    return name
  tags = ([] if mode == "params" else [mode]) + (
      [] if chunk is None else [f"chunk {chunk}"])
  return f"{name} [{', '.join(tags)}]" if tags else name


def main(argv=None) -> int:
  args = parse_args(argv)
  from mtl_jax import models  # pylint: disable=g-import-not-at-top
  if args.model == "digits":
    model, batch, task_losses = _common.digit_problem(args.batch_size)
    num_tasks = 4
    what = f"DigitSceneNet (4 tasks), batch {args.batch_size} of 32x32x3"
  elif args.model == "segnet":
    height, width = (int(x) for x in args.image_size.lower().split("x"))
    model, batch, task_losses = _common.segnet_problem(args.batch_size,
                                                       height, width)
    num_tasks = 3
    what = (f"SegNet, NYUv2 heads (3 tasks), batch {args.batch_size} of "
            f"{height}x{width}x3")
  else:
    num_tasks = args.num_tasks
    model, batch, task_losses = _common.mlp_problem(num_tasks, args.batch_size)
    what = f"MLPTrunk ({num_tasks} tasks), batch {args.batch_size} of 250"
  methods = (list(_common.gradient_methods()) if args.methods is None
             else list(args.methods))
  feature_methods = (methods if args.feature_methods is None
                     else list(args.feature_methods))
  chunk_methods = (methods if args.chunk_methods is None
                   else list(args.chunk_methods))
  # (mode, chunk_size, methods) of every Jacobian-path variant timed.
  variants = [(mode, None, methods if mode == "params" else feature_methods)
              for mode in args.modes]
  variants += [("params", c, chunk_methods) for c in args.chunk_sizes]
  task_params = models.task_params(model)

  runners, skipped = {}, []
  start = time.perf_counter()
  for name in ("ew", CONTROL):
    runners[name] = _common.JaxRunner(*_common.jit_step(
        model, batch, task_losses, _common.make_weighting("ew", num_tasks),
        num_tasks))
  for mode, chunk, names in variants:
    for name in [JACOBIAN] + names:
      key = label(name, mode, chunk)
      if (args.compile_budget_s is not None
          and time.perf_counter() - start > args.compile_budget_s):
        skipped.append(f"{key}: compile budget of "
                       f"{args.compile_budget_s:g} s spent")
        continue
      try:
        method = (_common.constant_weights(num_tasks) if name == JACOBIAN
                  else _common.make_gradient_method(name))
        runners[key] = _common.JaxRunner(*_common.jit_step(
            model, batch, task_losses, method, num_tasks,
            task_params=task_params, jacobian_mode=mode, chunk_size=chunk))
      except Exception as e:  # noqa: BLE001  pylint: disable=broad-except
        skipped.append(f"{key}: {type(e).__name__}: {str(e)[:200]}")
  counts = {name: hlo_counts(run) for name, run in runners.items()}
  ratios, times = _common.adjacent_pairs(
      runners, "ew", repeats=args.repeats, steps=args.steps)
  ratios["ew"] = [1.0] * args.repeats

  result, rows = {}, []
  for name in ["ew", CONTROL, JACOBIAN] + methods:
    for mode, chunk, _ in ([("params", None, [])] if name in ("ew", CONTROL)
                           else variants):
      key = label(name, mode, chunk)
      if key not in runners:
        continue
      ratio = _common.median(ratios[key])
      lo, hi = _common.quartiles(ratios[key])
      ms = 1e3 * _common.median(times[key])
      jac = label(JACOBIAN, mode, chunk)
      entry = {"ratio": round(ratio, 4), "iqr": [round(lo, 4), round(hi, 4)],
               "ms": round(ms, 3)}
      vs_jac = solver_ms = ""
      if name not in ("ew", CONTROL, JACOBIAN) and jac in ratios:
        quotients = [a / b for a, b in zip(ratios[key], ratios[jac])]
        entry["vs_jacobian"] = round(_common.median(quotients), 4)
        vs_jac = f"{entry['vs_jacobian']:.3f}"
        # The method's own cost, from the per-repeat quotient (robust to
        # the machine's noise, unlike a difference of two medians).
        solver = (entry["vs_jacobian"] - 1) * 1e3 * _common.median(times[jac])
        entry["solver_ms"] = round(solver, 3)
        solver_ms = f"{solver:+.2f}"
      result.setdefault(name, {})[variant_key(mode, chunk)] = entry
      fusions, loops = counts[key]
      rows.append((key, f"{ms:.2f}", f"{ratio:.3f}", f"{lo:.3f} .. {hi:.3f}",
                   vs_jac, solver_ms, fusions, loops))

  print(f"# Gradient-method overhead: {what}, Adam, jit")
  print(f"# {_common.machine_line()}")
  print(f"# {args.repeats} interleaved repeats, each candidate's {args.steps} "
        f"steps next to {args.steps} of EW; heads: task_params="
        f"{task_params!r}; '{JACOBIAN}': the Jacobian path with constant "
        "weights (engine only); '[features]': jacobian_mode='features'; "
        "'[chunk c]': chunk_size=c")
  print(_common.markdown_table(
      ("candidate", "ms / step (median)", "ratio to EW (median)", "ratio IQR",
       "/ jacobian (w = 1)", "solver ms", "entry fusions",
       "while loops"), rows))
  for line in skipped:
    print(f"# skipped {line}")
  if args.json is not None:
    args.json.write_text(json.dumps(result, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
