"""Projected epoch and run time of the papers' QM9 protocol, from timed steps.

Not a test, and not a training run: the molecules are *generated* here, on
the machine that runs the script (nothing is carried to it, no dataset is
read), with QM9's size distribution: the atom count of each molecule is drawn
from the histogram of all 130,831 molecules (:data:`ATOM_COUNTS`, 3 to 29
atoms), padded to 29, with the complete graph of its real atoms (every
ordered pair i != j, as the papers train). Each molecule gets features of
the right kind, random but plausible: at most 9 heavy atoms (C, N, O, F) and
hydrogens; the 11 atom features of ``mtl_jax.data.qm9`` (one-hot element,
atomic number, aromatic flag, one-hot sp/sp2/sp3, bonded hydrogens); the 5
pair features (one-hot single/double/triple/aromatic bond on a random
spanning tree of the atoms, zero elsewhere; the distance in Å, about 1 to 8,
on every pair); 11 standardised targets drawn from N(0, 1). The model does
not care that the chemistry is made up: its cost depends only on the shapes,
which are QM9's.

Timed, at the papers' size (``mtl_jax.models.QM9Net``, dim 64, edge hidden
128, 617,675 parameters; batch 120; padded dense layout; float32), each on
``--batches`` distinct batches already on the device, cycled:

* the engine's jitted train step (``mtl_jax.train.make_train_step`` +
  ``create_train_state``, ``input_key="graph"``, Adam 1e-3 with a method's
  own parameters at 0.025: ``make_optimizer(1e-3,
  method_learning_rate=0.025)``) with EW (``mtl_jax.get("ew")``: one
  backward pass of the summed losses) and with ``--method`` (default
  Nash-MTL, ``max_norm=1``, the papers' headline method) on the Jacobian
  path as experiments/configs/qm9.py runs it: ``task_params=("head_*",)``,
  ``jacobian_mode="params"``, all 11 task gradients at once;
* the evaluation forward pass (the jitted ``model.apply`` with
  ``train=False``) on batches of 500.

For each: the compile time (``lower`` + ``compile``), then ``--warmup``
untimed calls, then the median of ``--steps`` individually timed calls
(each waits for its result), and steps/s = 1 / median. The projection
extrapolates from those medians: an epoch of the papers' protocol is 923
train steps (110,831 // 120) and 40 evaluation batches (10,000 validation
and 10,000 test molecules, 500 at a time), so

    epoch = 923 x step + 40 x eval batch,   run = 300 x epoch,   3 seeds = 3 x run

It leaves out the input pipeline, logging, checkpoints and the plateau
schedule's bookkeeping (the real loop's overheads), so it is a floor.

Usage::

  python benchmarks/qm9_epoch.py [--quick] [--steps 20] [--method nash_mtl]
      [--json out.json]

``--quick``: a CPU-sized check of the script (batch 12, dim 16, edge hidden
16, eval batches of 24, 3 timed steps, compiled at XLA's
``--xla_backend_optimization_level=0``); its figures mean nothing. Rows are
printed (and ``--json`` rewritten) as each candidate finishes, so a run
stopped by a timeout keeps what it measured. ``--json`` writes ``{"setup":
{...}, "rows": {candidate: {"compile_s", "ms", "iqr_ms", "per_s",
"epoch_min", "run_h", "seeds_h"}}}`` (the eval row has no projection of its
own). Imports only ``mtl_jax`` (models, train, losses) and ``benchmarks/
_common.py``: not ``mtl_jax.data`` or ``experiments`` (grain, tfds,
ml_collections), which the lent GPU machine lacks.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

# Atom counts (hydrogens included) of QM9's 130,831 molecules: {atoms:
# molecules}, measured on the whole dataset here.
ATOM_COUNTS = {3: 2, 4: 4, 5: 5, 6: 12, 7: 20, 8: 65, 9: 172, 10: 483,
               11: 1053, 12: 2189, 13: 4027, 14: 6758, 15: 10216, 16: 13824,
               17: 16969, 18: 17442, 19: 18146, 20: 12403, 21: 13166,
               22: 4428, 23: 6362, 24: 712, 25: 1923, 26: 59, 27: 356,
               29: 35}
MAX_ATOMS = 29
NODE_FEATURES = 11
EDGE_FEATURES = 5
NUM_TASKS = 11

# The papers' protocol (experiments/configs/qm9.py).
TRAIN_MOLECULES = 110831
EVAL_MOLECULES = 10000 + 10000  # validation and test, every epoch
EPOCHS = 300
SEEDS = 3

FULL = {"batch_size": 120, "eval_batch_size": 500, "dim": 64,
        "edge_hidden": 128, "steps": 20, "warmup": 3, "batches": 4}
QUICK = {"batch_size": 12, "eval_batch_size": 24, "dim": 16,
         "edge_hidden": 16, "steps": 3, "warmup": 1, "batches": 2}

# --quick only (a check of the script, not a measurement): XLA compiles at
# LLVM's lowest optimisation level, about half the compile time on a CPU.
FAST_COMPILE = "--xla_backend_optimization_level=0"

# Hyperparameters of the gradient methods as the QM9 config sets them.
QM9_HPARAMS = {"nash_mtl": {"max_norm": 1.0}, "cagrad": {"c": 0.4},
               "fairgrad": {"alpha": 2.0}}

# Heavy elements (symbol, atomic number, share of QM9's heavy atoms, about).
HEAVY = (("C", 6, 0.70), ("N", 7, 0.11), ("O", 8, 0.16), ("F", 9, 0.03))
ELEMENTS = ("H", "C", "N", "O", "F")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="CPU-sized check of the script: "
                      + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
  parser.add_argument("--steps", type=int, default=None,
                      help=f"timed steps per candidate (default "
                      f"{FULL['steps']}; --quick {QUICK['steps']})")
  parser.add_argument("--warmup", type=int, default=None,
                      help="untimed calls after the compile")
  parser.add_argument("--batches", type=int, default=None,
                      help="distinct generated batches, cycled")
  parser.add_argument("--batch-size", type=int, default=None)
  parser.add_argument("--eval-batch-size", type=int, default=None)
  parser.add_argument("--dim", type=int, default=None)
  parser.add_argument("--edge-hidden", type=int, default=None)
  parser.add_argument("--method", default="nash_mtl",
                      help="the gradient-space method timed beside EW "
                      "(jacobian_mode='params'); '' for EW only")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", type=pathlib.Path, default=None)
  args = parser.parse_args(argv)
  for key, value in (QUICK if args.quick else FULL).items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  if min(args.steps, args.batches, args.batch_size, args.eval_batch_size) < 1:
    parser.error("--steps, --batches and the batch sizes must be >= 1")
  return args


# ---------------------------------------------------------------- molecules

def molecule(rng: np.random.Generator, n: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One made-up molecule of ``n`` atoms: (atom features (n, 11), bond
  types (n, n) in 0..4, distances in Å (n, n), symmetric, zero diagonal)."""
  # Heavy atoms: at most 9 (QM9), at least enough to carry the hydrogens
  # of a saturated molecule (n - h <= 2 h + 2).
  low, high = max(1, -(-(n - 2) // 3)), min(9, n - 1)
  h = int(rng.integers(low, max(low, high) + 1))
  shares = np.array([s for _, _, s in HEAVY])
  kind = np.concatenate([1 + rng.choice(4, size=h, p=shares / shares.sum()),
                         np.zeros(n - h, np.int64)])
  bonds = np.zeros((n, n), np.int8)
  # A random spanning tree: the heavy atoms as a tree, each H on a heavy atom.
  for i in range(1, h):
    j = int(rng.integers(0, i))
    bonds[i, j] = bonds[j, i] = rng.choice(4, p=(0.70, 0.15, 0.05, 0.10)) + 1
  hosts = rng.integers(0, h, size=n - h)
  bonds[np.arange(h, n), hosts] = bonds[hosts, np.arange(h, n)] = 1
  aromatic = np.zeros(n, bool)
  aromatic[:h] = (bonds[:h, :h] == 4).any(axis=1)
  hybrid = np.zeros(n, np.int64)
  hybrid[:h] = np.where(aromatic[:h], 2, rng.choice(3, size=h,
                                                    p=(0.1, 0.3, 0.6)) + 1)
  nodes = np.zeros((n, NODE_FEATURES), np.float32)
  nodes[np.arange(n), kind] = 1.0
  nodes[:, 5] = np.array([1] + [z for _, z, _ in HEAVY])[kind]
  nodes[:, 6] = aromatic
  for k in (1, 2, 3):
    nodes[:, 6 + k] = hybrid == k
  nodes[:, 10] = ((bonds > 0) & (kind == 0)[None, :]).sum(axis=1)
  # Distances: bonded pairs 0.95 to 1.1 (X-H) or 1.2 to 1.55 Å, the others
  # 1.5 to 8 Å.
  dist = rng.uniform(1.5, 8.0, size=(n, n))
  heavy_pair = (kind[:, None] > 0) & (kind[None, :] > 0)
  dist = np.where(bonds > 0, np.where(heavy_pair,
                                      rng.uniform(1.2, 1.55, (n, n)),
                                      rng.uniform(0.95, 1.1, (n, n))), dist)
  dist = np.triu(dist, 1)
  return nodes, bonds, (dist + dist.T).astype(np.float32)


def generate_batch(rng: np.random.Generator, batch_size: int
                   ) -> dict[str, object]:
  """A batch of made-up molecules in the model's padded dense layout, complete
  graphs: ``{"graph": {nodes, node_mask, edges, edge_mask}, "targets"}``."""
  sizes = np.array(sorted(ATOM_COUNTS))
  p = np.array([ATOM_COUNTS[s] for s in sizes], np.float64)
  n_atoms = rng.choice(sizes, size=batch_size, p=p / p.sum())
  nodes = np.zeros((batch_size, MAX_ATOMS, NODE_FEATURES), np.float32)
  edges = np.zeros((batch_size, MAX_ATOMS, MAX_ATOMS, EDGE_FEATURES),
                   np.float32)
  for b, n in enumerate(n_atoms):
    atoms, bonds, dist = molecule(rng, int(n))
    nodes[b, :n] = atoms
    for t in (1, 2, 3, 4):
      edges[b, :n, :n, t - 1] = bonds == t
    edges[b, :n, :n, 4] = dist
  node_mask = (np.arange(MAX_ATOMS) < n_atoms[:, None]).astype(np.float32)
  edge_mask = (node_mask[:, :, None] * node_mask[:, None, :]
               * (1.0 - np.eye(MAX_ATOMS, dtype=np.float32)))
  targets = rng.standard_normal((batch_size, NUM_TASKS)).astype(np.float32)
  return {"graph": {"nodes": nodes, "node_mask": node_mask, "edges": edges,
                    "edge_mask": edge_mask},
          "targets": targets, "n_atoms": n_atoms}


# ---------------------------------------------------------------- timing

def time_calls(fn, args_list, steps: int, warmup: int,
               carry: bool) -> list[float]:
  """Seconds of each of ``steps`` calls after ``warmup`` untimed ones; the
  argument tuples cycle. ``carry``: ``fn(state, x) -> (state, out)`` and the
  state is threaded (a donated train state), else ``fn(*args)``."""
  import jax  # pylint: disable=g-import-not-at-top
  state = args_list[0][0] if carry else None
  times = []
  for i in range(warmup + steps):
    args = args_list[i % len(args_list)]
    start = time.perf_counter()
    if carry:
      state, out = fn(state, args[1])
      jax.block_until_ready((state, out))
    else:
      jax.block_until_ready(fn(*args))
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return times


def main(argv=None) -> int:
  args = parse_args(argv)
  t_start = time.perf_counter()
  if args.quick and FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    # Before jax starts: --quick checks the script, and its time is nearly
    # all compilation, which LLVM's lowest level roughly halves.
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip())
  import jax  # pylint: disable=g-import-not-at-top

  import mtl_jax  # pylint: disable=g-import-not-at-top
  from mtl_jax import losses, models, train  # pylint: disable=g-import-not-at-top

  device = jax.devices()[0]
  steps_per_epoch = TRAIN_MOLECULES // 120  # the papers' batch: 923 steps
  eval_per_epoch = -(-EVAL_MOLECULES // 500)  # batches of 500: 40
  rng = np.random.default_rng(args.seed)
  t0 = time.perf_counter()
  train_batches = [generate_batch(rng, args.batch_size)
                   for _ in range(args.batches)]
  eval_batches = [generate_batch(rng, args.eval_batch_size)
                  for _ in range(args.batches)]
  gen_s = time.perf_counter() - t0
  atoms = np.concatenate([b["n_atoms"] for b in train_batches])
  qm9_mean = (sum(n * c for n, c in ATOM_COUNTS.items())
              / sum(ATOM_COUNTS.values()))
  for b in train_batches + eval_batches:
    del b["n_atoms"]
  train_batches = [jax.device_put(b) for b in train_batches]
  eval_batches = [jax.device_put(b["graph"]) for b in eval_batches]

  model = models.QM9Net(dim=args.dim, edge_hidden_size=args.edge_hidden)
  task_params = models.task_params(model)
  optimizer = train.make_optimizer(1e-3, method_learning_rate=0.025)
  apply_fn = train.module_apply_fn(model, input_key="graph")

  setup = {
      "device_kind": device.device_kind, "platform": device.platform,
      "jax": jax.__version__, "quick": args.quick,
      "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
      "dim": args.dim, "edge_hidden": args.edge_hidden, "steps": args.steps,
      "warmup": args.warmup, "batches": args.batches,
      "method": args.method, "task_params": list(task_params),
      "jacobian_mode": "params", "generated_molecules": True,
      "mean_atoms": round(float(atoms.mean()), 2),
      "steps_per_epoch": steps_per_epoch, "eval_batches_per_epoch":
      eval_per_epoch, "epochs": EPOCHS, "seeds": SEEDS}
  result = {"setup": setup, "rows": {}}

  def dump():
    if args.json is not None:
      args.json.parent.mkdir(parents=True, exist_ok=True)
      args.json.write_text(json.dumps(result, indent=2) + "\n")

  print(f"# QM9 epoch, projected from timed steps: QM9Net (dim {args.dim}, "
        f"edge hidden {args.edge_hidden}), batch {args.batch_size}, eval "
        f"batches of {args.eval_batch_size}, padded dense layout, float32"
        + (f" (--quick: CPU-sized, compiled with {FAST_COMPILE}; the "
           "figures mean nothing)" if args.quick else ""))
  print(f"# device_kind: {device.device_kind}; {_common.machine_line()}")
  print(f"# GENERATED molecules, not QM9's: atom counts drawn from QM9's "
        f"size distribution (3 to 29 atoms, padded to {MAX_ATOMS}), complete "
        f"graphs (every ordered pair of real atoms), random plausible "
        f"features, N(0, 1) targets; {args.batches} distinct batches of each "
        f"size, made on this machine in {gen_s:.1f} s (train batches: "
        f"{atoms.mean():.1f} atoms per molecule on average; QM9: "
        f"{qm9_mean:.1f})")
  print(f"# each row: compile (lower + compile), {args.warmup} untimed "
        f"call(s), then the median of {args.steps} timed calls; Adam 1e-3 "
        f"(method parameters 0.025); gradient method in "
        f"jacobian_mode='params', task_params={task_params!r}, all "
        f"{NUM_TASKS} task gradients at once")
  print(f"# PROJECTION (extrapolated from the timed medians, not measured): "
        f"epoch = {steps_per_epoch} x step + {eval_per_epoch} x eval batch "
        f"(the papers: batch 120, {TRAIN_MOLECULES:,} train molecules; "
        f"{EVAL_MOLECULES:,} validation + test molecules every epoch in "
        f"batches of 500); run = {EPOCHS} epochs; {SEEDS} seeds = "
        f"{SEEDS} runs; without the input pipeline, logging or checkpoints"
        + (f"; at batch {args.batch_size} and eval batch "
           f"{args.eval_batch_size} the counts are still the papers'"
           if (args.batch_size, args.eval_batch_size) != (120, 500) else ""))
  headers = ("candidate", "compile s", f"ms / call (median of {args.steps})",
             "IQR ms", "steps / s (eval: batches / s)", "epoch (projected) min",
             f"{EPOCHS} epochs h", f"{SEEDS} seeds x {EPOCHS} epochs h")
  print(_common.markdown_table(headers, []), flush=True)

  def row(name, compile_s, times, eval_ms):
    ms = 1e3 * _common.median(times)
    lo, hi = (1e3 * q for q in _common.quartiles(times))
    entry = {"compile_s": round(compile_s, 2), "ms": round(ms, 3),
             "iqr_ms": [round(lo, 3), round(hi, 3)],
             "per_s": round(1e3 / ms, 2)}
    cells = ["", "", ""]
    if eval_ms is not None:
      epoch_s = (steps_per_epoch * ms + eval_per_epoch * eval_ms) / 1e3
      entry.update(epoch_min=round(epoch_s / 60, 3),
                   run_h=round(EPOCHS * epoch_s / 3600, 3),
                   seeds_h=round(SEEDS * EPOCHS * epoch_s / 3600, 3))
      cells = [f"{entry['epoch_min']:.2f}", f"{entry['run_h']:.2f}",
               f"{entry['seeds_h']:.1f}"]
    result["rows"][name] = entry
    line = _common.markdown_table(headers, [(
        name, f"{compile_s:.1f}", f"{ms:.2f}", f"{lo:.2f} .. {hi:.2f}",
        f"{1e3 / ms:.1f}", *cells)]).splitlines()[-1]
    print(line, flush=True)
    dump()
    return ms

  # Evaluation forward pass.
  state = train.create_train_state(
      jax.random.PRNGKey(args.seed), model, train_batches[0],
      mtl_jax.get("ew"), optimizer, num_tasks=NUM_TASKS, input_key="graph")
  params = state.params["model"]
  evaluate = jax.jit(lambda p, g: model.apply({"params": p}, g, train=False))
  t0 = time.perf_counter()
  compiled = evaluate.lower(params, eval_batches[0]).compile()
  compile_s = time.perf_counter() - t0
  times = time_calls(compiled, [(params, g) for g in eval_batches],
                     args.steps, args.warmup, carry=False)
  eval_ms = row(f"eval forward (batch {args.eval_batch_size})", compile_s,
                times, None)
  del state

  skipped = []
  methods = ["ew"] + ([args.method] if args.method else [])
  for name in methods:
    gradient = name in mtl_jax.aggregation.names()
    method = mtl_jax.get(name, **QM9_HPARAMS.get(name, {}))
    kwargs = ({"task_params": task_params, "mode": "params",
               "chunk_size": None} if gradient else {})
    try:
      state = train.create_train_state(
          jax.random.PRNGKey(args.seed), model, train_batches[0], method,
          optimizer, num_tasks=NUM_TASKS, input_key="graph",
          task_params=kwargs.get("task_params"))
      step = jax.jit(train.make_train_step(
          apply_fn, losses.qm9_losses, method, optimizer,
          jacobian=train.JacobianOptions(**kwargs) if kwargs else None),
                     donate_argnums=0)
      t0 = time.perf_counter()
      compiled = step.lower(state, train_batches[0]).compile()
      compile_s = time.perf_counter() - t0
      times = time_calls(compiled, [(state, b) for b in train_batches],
                         args.steps, args.warmup, carry=True)
    except Exception as e:  # e.g. out of memory: report, go on
      skipped.append(f"{name}: {type(e).__name__}: {str(e)[:300]}")
      continue
    label = (f"{name} (params mode, train step)" if gradient
             else f"{name} (train step)")
    row(label, compile_s, times, eval_ms)
    del state

  rows = result["rows"]
  ew = next((v for k, v in rows.items() if k.startswith("ew ")), None)
  for key, value in rows.items():
    if ew is not None and "epoch_min" in value and not key.startswith("ew "):
      print(f"# {key}: {value['ms'] / ew['ms']:.1f} x EW's step; "
            f"{value['epoch_min'] / ew['epoch_min']:.1f} x EW's epoch")
  for line in skipped:
    print(f"# FAILED {line}")
  setup["wall_s"] = round(time.perf_counter() - t_start, 1)
  dump()
  print(f"# device_kind: {device.device_kind}; whole script "
        f"{setup['wall_s']:.0f} s (compiles included)")
  return 1 if skipped else 0


if __name__ == "__main__":
  sys.exit(main())
