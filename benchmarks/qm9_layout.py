"""QM9Net's two graph layouts: which one XLA runs fastest, measured.

Not a test. :class:`mtl_jax.models.QM9Net` takes a batch of molecules in
one of two layouts:

* ``dense``: padded dense graphs, (B, 29, 29, 5) edge features and a
  (B, 29, 29) adjacency; NNConv in factored form (a node-side product and a
  pair-side contraction), the per-edge d x d matrices never formed;
* ``edges``: edge lists padded to ``experiments.common.QM9_MAX_EDGES``
  per molecule (812 for the complete graph, 56 for the bonded one); the
  per-edge matrices Theta(e) formed once per forward pass, messages
  gathered and summed with ``jax.ops.segment_sum``.

This script times the jitted training step of equal weighting (the engine's
``make_train_step``: forward, the 11 per-target MSE losses, backward, Adam
at lr 1e-3) for every {complete, bonded} edge set x {dense, edges} layout x
{the papers' size (d = 64, edge hidden 128), the CPU config's (d = 32,
hidden 64)}, batch 120, on the first batch of the unshuffled train split
(``mtl_jax.data.qm9.load``; the QM9 dataset must be built, ``pip install
".[qm9]"``), and reports XLA's compiled memory of each step
(``jax.jit(step).lower(...).compile().memory_analysis()``: the temporaries
and the arguments). Timing: compiled first, then interleaved (each repeat
runs ``--steps`` steps of every configuration in a fresh random order);
the ``dense / edges`` column is the median over repeats of the per-repeat
ratio of the two layouts' step times. XLA uses every core of the machine.

Usage::

  python benchmarks/qm9_layout.py [--repeats 3] [--steps 1] [--json PATH]
  python benchmarks/qm9_layout.py --quick   # tiny network and batch (smoke)

``--json`` writes a list of rows, one per configuration.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

LEARNING_RATE = 1e-3
BATCH_SIZE = 120
# name: (dim, edge hidden width)
SIZES = {"papers": (64, 128), "cpu": (32, 64)}
QUICK_SIZES = {"tiny": (8, 8)}
EDGE_SETS = ("complete", "bonded")
LAYOUTS = ("dense", "edges")


FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "fixtures" / "qm9"


def fixed_batch(edges: str, batch_size: int, index: int = 0,
                fixtures: bool = False):
  """Batch ``index`` of the unshuffled train split (padded dense, numpy).

  ``fixtures``: the 7 molecules of tests/data/fixtures/qm9 with their
  recorded bonds (no rdkit, no qm9pack) split 3 / 2 / 2, for smoke tests;
  the batch is then cut to at most 3.
  """
  from mtl_jax.data import qm9  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if fixtures:
    kwargs = {"source_dir": FIXTURES,
              "perception_table": FIXTURES / "perception.json",
              "num_validation": 2, "num_test": 2}
    batch_size = min(batch_size, 3)
  it = iter(qm9.load("train", batch_size=batch_size, edges=edges,
                     shuffle=False, **kwargs))
  for _ in range(index):
    next(it)
  return next(it)


def engine_batch(batch, layout: str, edges: str):
  """The engine's batch (``{"graph": ..., "targets": ...}``) in ``layout``."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  inputs = common.qm9_inputs(batch, layout, common.QM9_MAX_EDGES[edges])
  return {"graph": inputs["graph"], "targets": inputs["targets"]}


def compiled_step(model, batch, weighting, *, learning_rate=LEARNING_RATE,
                  seed=0, **jacobian):
  """The engine's train step with Adam, compiled once for ``batch``.

  ``jacobian`` holds the fields of ``mtl_jax.train.JacobianOptions``
  (``task_params``, ``mode``, ``chunk_size``). Returns ``(runner, memory)``: a
  :class:`_common.JaxRunner` and XLA's memory analysis of the compiled step
  (a dict of bytes), plus ``compile_s``.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from mtl_jax import losses, train  # pylint: disable=g-import-not-at-top
  num_tasks = len(model.tasks)
  optimizer = train.make_optimizer(optax.adam(learning_rate),
                                   method_learning_rate=learning_rate)
  state = train.create_train_state(
      jax.random.PRNGKey(seed), model, batch, weighting, optimizer,
      num_tasks=num_tasks, input_key="graph",
      task_params=jacobian.get("task_params"))
  step = train.make_train_step(train.module_apply_fn(model, input_key="graph"),
                               losses.qm9_losses, weighting, optimizer,
                               jacobian=(train.JacobianOptions(**jacobian)
                                         if jacobian else None))
  batch = jax.device_put(dict(batch))
  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  memory = {"compile_s": compile_s}
  for field in ("temp_size_in_bytes", "argument_size_in_bytes",
                "output_size_in_bytes", "alias_size_in_bytes",
                "generated_code_size_in_bytes"):
    memory[field] = int(getattr(analysis, field, 0) or 0)
  state, _ = compiled(state, batch)  # leave the donated input behind
  jax.block_until_ready(state)
  return _common.JaxRunner(compiled, state, batch), memory


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", nargs="*", default=list(SIZES),
                      choices=list(SIZES))
  parser.add_argument("--edge-sets", nargs="*", default=list(EDGE_SETS),
                      choices=list(EDGE_SETS))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--steps", type=int, default=1)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
  parser.add_argument("--quick", action="store_true",
                      help="a tiny network (d = 8, hidden 8) on batch 8, one "
                      "repeat: a smoke test, not a measurement")
  parser.add_argument("--fixtures", action="store_true",
                      help="the 7 test molecules (tests/data/fixtures/qm9; "
                      "batch 3) instead of the built QM9 dataset (smoke)")
  parser.add_argument("--json", type=pathlib.Path, default=None)
  args = parser.parse_args(argv)
  if args.quick:
    args.repeats, args.steps, args.warmup = 1, 1, 1
    args.batch_size = min(args.batch_size, 8)
  if args.fixtures:
    args.batch_size = min(args.batch_size, 3)
  return args


def mib(n: int) -> str:
  return f"{n / 2**20:,.1f}"


def main(argv=None) -> int:
  args = parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top

  import mtl_jax  # pylint: disable=g-import-not-at-top
  from mtl_jax import models  # pylint: disable=g-import-not-at-top
  sizes = QUICK_SIZES if args.quick else {s: SIZES[s] for s in args.sizes}
  print("# QM9Net layouts: EW train step (Adam), padded dense vs edge lists")
  print(f"# {_common.machine_line()}")
  where = ("the test fixtures' train split" if args.fixtures
           else "the unshuffled train split")
  print(f"# batch {args.batch_size} (its first batch of {where}); "
        f"{args.repeats} interleaved repeats x {args.steps} steps "
        f"after {args.warmup} warm-up; XLA on {jax.devices()[0].platform} "
        "with its default threads")
  runners, info = {}, {}
  for edges in args.edge_sets:
    batch = fixed_batch(edges, args.batch_size, fixtures=args.fixtures)
    n_edges = int((batch["edge_mask"] > 0).sum())
    n_atoms = int((batch["node_mask"] > 0).sum())
    for size, (dim, hidden) in sizes.items():
      for layout in LAYOUTS:
        key = (edges, size, layout)
        model = models.QM9Net(dim=dim, edge_hidden_size=hidden)
        runner, memory = compiled_step(model, engine_batch(batch, layout,
                                                           edges),
                                       mtl_jax.get("ew"))
        runners[key] = runner
        info[key] = {"edges": edges, "size": size, "dim": dim,
                     "edge_hidden": hidden, "layout": layout,
                     "atoms": n_atoms, "edges_in_batch": n_edges, **memory}
        print(f"# compiled {edges} {size} {layout} in "
              f"{memory['compile_s']:.1f} s", flush=True)
  times = _common.interleaved(runners, repeats=args.repeats, steps=args.steps,
                              warmup=args.warmup)
  rows, result = [], []
  for key, row in info.items():
    edges, size, layout = key
    t = times[key]
    row["ms_per_step"] = 1e3 * _common.median(t)
    row["ms_per_step_all"] = [1e3 * x for x in t]
    ratio = "-"
    if layout == "dense" and (edges, size, "edges") in times:
      ratios = [d / e for d, e in zip(t, times[(edges, size, "edges")])]
      row["dense_over_edges"] = _common.median(ratios)
      ratio = f"{row['dense_over_edges']:.2f}"
    result.append(row)
    rows.append([edges, f"{size} ({row['dim']}/{row['edge_hidden']})",
                 layout, f"{row['ms_per_step']:.0f}",
                 mib(row["temp_size_in_bytes"]),
                 mib(row["argument_size_in_bytes"]), ratio])
  print(_common.markdown_table(
      ["edges", "size (d/H)", "layout", "ms/step (median)",
       "XLA temp MiB", "XLA args MiB", "dense / edges"], rows))
  if args.json is not None:
    args.json.write_text(json.dumps(result, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
