"""Step time of every gradient-space method relative to equal weighting (EW).

Not a test. One fixed model and batch; the engine's jitted ``make_train_step``
(Adam, non-finite guard, norms) with EW (the loss-based ``mtl_jax.get("ew")``:
one backward pass of the summed losses) and with every registered
gradient-space method (``mtl_jax.aggregation.names()`` at run time but
``constant``, whose step is the ``jacobian (w = 1)`` row's, though
``--methods constant`` times it with weights of ones; CAGrad with
``c=0.4``, FairGrad with ``alpha=1.0``, the rest with their defaults),
heads from
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

Methods that need more than the Gramian (``docs/gradient_methods.md``,
"Methods that do more than weight the rows of J"): GradDrop, MoCo, DB-MTL
and ExcessMTL read the flat K x P Jacobian (their buffers are sized by the
same ``task_params`` given to ``create_train_state``); they and SDMGrad and
MoDo (which split the batch) run in ``params`` mode only, so by default they
are left out of ``features`` mode (listed under the table). SDMGrad and MoDo
split each batch into 3 interleaved parts, so the batch must be divisible by
3: when ``--batch-size`` is not, they are timed on its first ``b`` examples,
``b`` the largest multiple of 3 (rows ``sdmgrad (batch 63)``), next to two
more references on that batch, ``ew (batch 63)`` and ``jacobian (w = 1)
(batch 63)``; their ratio to EW is still to EW on the whole batch, their
``/ jacobian`` column divides by the ``w = 1`` step on the same ``b``, and a
line under the table gives their ratio to EW on the same ``b``.

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
variant being ``params``, ``features`` or ``params, chunk c``; a candidate
timed on a truncated batch is keyed ``name (batch b)`` and its entries also
hold ``batch_size`` and ``ratio_vs_ew_same_batch`` (with its IQR).
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


def sized(name: str, size: int | None) -> str:
  """'name', or 'name (batch 63)' for a candidate timed on a truncated batch."""
  return name if size is None else f"{name} (batch {size})"


def label(name: str, mode: str, chunk: int | None = None,
          size: int | None = None) -> str:
  """'name', 'name [features]', 'name [chunk 1]', 'name (batch 63) [chunk 1]'
  ('ew' stays 'ew')."""
  if name in ("ew", CONTROL):
    return sized(name, size)
  tags = ([] if mode == "params" else [mode]) + (
      [] if chunk is None else [f"chunk {chunk}"])
  base = sized(name, size)
  return f"{base} [{', '.join(tags)}]" if tags else base


def split_sizes(methods, num_tasks: int, batch_size: int
                ) -> tuple[dict[str, int | None], list[str]]:
  """The batch each method is timed on: ``None`` (the whole batch) unless
  the method splits the batch (``batch_splits``: SDMGrad, MoDo) and the
  batch does not divide, in which case the largest size that does. Returns
  ``({name: size or None}, [notes])``."""
  sizes, notes = {}, []
  for name in methods:
    try:
      splits = _common.batch_splits(
          _common.make_gradient_method(name, num_tasks))
    except Exception:
      splits = 1  # the build fails again below, and is listed there
    if splits > 1 and batch_size < splits:
      sizes[name] = 0
      notes.append(f"{name} splits each batch into {splits} parts, more "
                   f"than the {batch_size} examples: left out (use "
                   f"--batch-size {splits} or more)")
    elif splits > 1 and batch_size % splits:
      size = batch_size - batch_size % splits
      sizes[name] = size
      notes.append(
          f"{name} splits each batch into {splits} parts, and {batch_size} "
          f"is not divisible by {splits}: timed on the first {size} "
          f"examples (rows '{sized(name, size)}'); its '/ {JACOBIAN}' column "
          f"divides by '{sized(JACOBIAN, size)}' (same batch), and "
          f"'{sized('ew', size)}' is EW on that batch")
    else:
      sizes[name] = None
  return sizes, notes


def features_applicable(methods, num_tasks: int) -> list[str]:
  """The methods that can run in jacobian_mode='features': not those that
  read the Jacobian of the shared parameters itself (``inputs ==
  "jacobian"``: GradDrop, MoCo, DB-MTL, ExcessMTL) nor those that split the
  batch (SDMGrad, MoDo: the parts' feature gradients are orthogonal). The
  engine rejects them in that mode with an error that says so."""
  out = []
  for name in methods:
    try:
      method = _common.make_gradient_method(name, num_tasks)
    except Exception:
      out.append(name)  # fails again when built, and is listed there
      continue
    if (getattr(method, "inputs", "gramian") == "gramian"
        and _common.batch_splits(method) == 1):
      out.append(name)
  return out


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
  feature_methods = (features_applicable(methods, num_tasks)
                     if args.feature_methods is None
                     else list(args.feature_methods))
  chunk_methods = (methods if args.chunk_methods is None
                   else list(args.chunk_methods))
  # (mode, chunk_size, methods) of every Jacobian-path variant timed.
  variants = [(mode, None, methods if mode == "params" else feature_methods)
              for mode in args.modes]
  variants += [("params", c, chunk_methods) for c in args.chunk_sizes]
  task_params = models.task_params(model)
  sizes, size_notes = split_sizes(
      dict.fromkeys(methods + feature_methods + chunk_methods), num_tasks,
      args.batch_size)
  too_small = [n for n, size in sizes.items() if size == 0]
  methods = [m for m in methods if m not in too_small]
  feature_methods = [m for m in feature_methods if m not in too_small]
  chunk_methods = [m for m in chunk_methods if m not in too_small]
  variants = [(mode, chunk, [n for n in names if n not in too_small])
              for mode, chunk, names in variants]
  truncated = sorted({s for s in sizes.values() if s})
  batches = {None: batch}
  batches.update({s: _common.truncate_batch(batch, s) for s in truncated})

  def variant_candidates(names):
    """(name, size) of a variant's candidates: the w = 1 step on every batch
    a method of it is timed on, then the methods."""
    here = sorted({sizes[n] for n in names if sizes[n] is not None})
    return ([(JACOBIAN, None)] + [(JACOBIAN, s) for s in here]
            + [(n, sizes[n]) for n in names])

  runners, skipped = {}, []
  start = time.perf_counter()
  for name, size in [("ew", None), (CONTROL, None)] + [
      ("ew", s) for s in truncated]:
    runners[sized(name, size)] = _common.JaxRunner(*_common.jit_step(
        model, batches[size], task_losses,
        _common.make_weighting("ew", num_tasks), num_tasks))
  for mode, chunk, names in variants:
    for name, size in variant_candidates(names):
      key = label(name, mode, chunk, size)
      if (args.compile_budget_s is not None
          and time.perf_counter() - start > args.compile_budget_s):
        skipped.append(f"{key}: compile budget of "
                       f"{args.compile_budget_s:g} s spent")
        continue
      try:
        method = (_common.constant_weights(num_tasks) if name == JACOBIAN
                  else _common.make_gradient_method(name, num_tasks))
        runners[key] = _common.JaxRunner(*_common.jit_step(
            model, batches[size], task_losses, method, num_tasks,
            task_params=task_params, mode=mode, chunk_size=chunk))
      except Exception as e:
        skipped.append(f"{key}: {type(e).__name__}: {str(e)[:200]}")
  counts = {name: hlo_counts(run) for name, run in runners.items()}
  ratios, times = _common.adjacent_pairs(
      runners, "ew", repeats=args.repeats, steps=args.steps)
  ratios["ew"] = [1.0] * args.repeats

  result, rows, same_batch = {}, [], []
  # Rows: the EW steps, then each candidate with all its variants together.
  candidates = [(n, sz, "params", None) for n, sz in
                [("ew", None), (CONTROL, None)] + [("ew", t) for t in truncated]]
  for name in [JACOBIAN] + methods:
    for mode, chunk, names in variants:
      candidates += [(name, sz, mode, chunk)
                     for n, sz in variant_candidates(names) if n == name]
  seen = set()
  for name, size, mode, chunk in candidates:
    key = label(name, mode, chunk, size)
    if key not in runners or key in seen:
      continue
    seen.add(key)
    ratio = _common.median(ratios[key])
    lo, hi = _common.quartiles(ratios[key])
    ms = 1e3 * _common.median(times[key])
    jac = label(JACOBIAN, mode, chunk, size)
    entry = {"ratio": round(ratio, 4), "iqr": [round(lo, 4), round(hi, 4)],
             "ms": round(ms, 3)}
    if size is not None:
      entry["batch_size"] = size
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
    if (size is not None and name not in ("ew", CONTROL)
        and sized("ew", size) in ratios):
      # The same-batch ratio: per-repeat quotient by EW on that batch.
      quotients = [a / b for a, b in zip(ratios[key],
                                         ratios[sized("ew", size)])]
      entry["ratio_vs_ew_same_batch"] = round(_common.median(quotients), 4)
      q1, q3 = _common.quartiles(quotients)
      entry["ratio_vs_ew_same_batch_iqr"] = [round(q1, 4), round(q3, 4)]
      same_batch.append(f"{key}: {entry['ratio_vs_ew_same_batch']:.3f} x "
                        f"'{sized('ew', size)}' (IQR {q1:.3f} .. {q3:.3f})")
    result.setdefault(sized(name, size), {})[variant_key(mode, chunk)] = entry
    fusions, loops = counts[key]
    rows.append((key, f"{ms:.2f}", f"{ratio:.3f}", f"{lo:.3f} .. {hi:.3f}",
                 vs_jac, solver_ms, fusions, loops))

  print(f"# Gradient-method overhead: {what}, Adam, jit")
  print(f"# {_common.machine_line()}")
  print(f"# {args.repeats} interleaved repeats, each candidate's {args.steps} "
        f"steps next to {args.steps} of EW; heads: task_params="
        f"{task_params!r}; '{JACOBIAN}': the Jacobian path with constant "
        "weights (engine only); '[features]': jacobian_mode='features'; "
        "'[chunk c]': chunk_size=c; '(batch b)': timed on the first b "
        f"examples (ratios still to EW on all {args.batch_size})")
  print(_common.markdown_table(
      ("candidate", "ms / step (median)", "ratio to EW (median)", "ratio IQR",
       "/ jacobian (w = 1)", "solver ms", "entry fusions",
       "while loops"), rows))
  for line in size_notes:
    print(f"# {line}")
  if "features" in args.modes:
    left = [m for m in methods if m not in feature_methods]
    if left and args.feature_methods is None:
      print(f"# not timed in 'features' mode (the engine rejects them there: "
            f"they read J of the shared parameters or split the batch): "
            f"{', '.join(left)}")
  for line in same_batch:
    print(f"# same batch: {line}")
  for line in skipped:
    print(f"# skipped {line}")
  if args.json is not None:
    args.json.write_text(json.dumps(result, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
