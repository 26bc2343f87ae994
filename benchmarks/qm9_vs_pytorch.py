"""QM9: training steps per second of mtl_jax's QM9Net against the official
PyTorch model (PyTorch Geometric's NNConv and Set2Set), on CPU.

Not a test. The PyTorch side is the model of Nash-MTL's
``experiments/quantum_chemistry/models.py`` (which FAMO and FairGrad reuse),
written out here: ``lin0 = Linear(11, d)`` + ReLU; ``NNConv(d, d,
Sequential(Linear(5, H), ReLU(), Linear(H, d * d)), aggr="mean")``;
``GRU(d, d)``; 3 steps of ``m = relu(conv(out, edge_index, edge_attr)); out,
h = gru(m.unsqueeze(0), h)``; ``Set2Set(d, processing_steps=3)``; ``lin1 =
Linear(2d, d)`` + ReLU; 11 heads ``Linear(d, 1)``. Its parameter count is
checked against ``mtl_jax.models.qm9.official_parameter_count`` and its
outputs against QM9Net's on the same weights (QM9Net's initial parameters
copied into it) before anything is timed.

Both libraries get the same molecules: the first batch of the unshuffled
train split from ``mtl_jax.data.qm9.load`` (no download; the dataset must be
built, ``pip install ".[qm9]"``), converted outside the timed region to
QM9Net's layout (``experiments.common.qm9_inputs``) and to a PyG ``Batch``
(``x`` = the real atoms, ``edge_index`` = the nonzeros of ``edge_mask``,
sender -> receiver, ``edge_attr``, the batch vector). One training step is:
forward, the 11 per-target MSE losses, backward, Adam (lr 1e-3). Rows:

* ``ew``: the sum of the losses, one backward pass, in both;
* ``mgda`` (``--gradient-methods``; also ``nash_mtl``): mtl_jax's
  ``make_train_step(..., jacobian=JacobianOptions(task_params=("head_*",)))``
  with ``mtl_jax.get("mgda")`` (the 11 per-task gradients of the shared
  parameters as one vmapped VJP, the weights from the 11 x 11 Gramian, the
  heads on their own task's gradient); PyTorch: the 11 per-task gradients
  of the shared parameters with 11 ``torch.autograd.grad`` calls, as
  Nash-MTL's code computes them (each call also returns its own head's
  gradient), stacked into the 11 x P Jacobian and combined by TorchJD's
  aggregator (``torchjd.aggregation.MGDA()``: Frank-Wolfe, at most 100
  steps; ``NashMTL(n_tasks=11)``), written into ``.grad``, then Adam.
  (Nash-MTL's own code then runs a 12th backward pass of the weighted sum
  of the losses instead of writing the combination in; this peer is one
  backward pass cheaper than that.) mtl_jax's MGDA solves the same QP by an
  active-set method (exact; K + 10 steps).

Sizes (``--cases``): ``papers``: d = 64, edge hidden 128 (617,675
parameters), complete graphs, QM9Net in the padded dense layout, as
``experiments/configs/qm9.py``; ``cpu``: d = 32, hidden 64, bonded graphs,
QM9Net in the edge-list layout, as ``experiments/configs/qm9_cpu.py``
(which trains its gradient methods on the shared representation's Jacobian;
here both sides use the shared parameters'). Batch 120.

Threads: XLA uses the machine's cores (its defaults); PyTorch runs once
with 1 thread and once with 2 (``torch.set_num_threads``, set by each
PyTorch candidate before its steps), both timed in the same interleaved
repeats as mtl_jax (each repeat runs ``--steps`` steps of every candidate
in a fresh random order). ``ours / theirs`` = the median over repeats of
t(PyTorch) / t(mtl_jax) per repeat, i.e. how many times more steps per
second mtl_jax makes.

Usage::

  pip install ".[bench]"     # torch, torch-geometric, torchjd[full]
  python benchmarks/qm9_vs_pytorch.py [--cases cpu papers]
      [--gradient-methods mgda] [--repeats 5] [--papers-repeats 3]
      [--papers-gradient-repeats 1] [--threads 1 2] [--json PATH]
  python benchmarks/qm9_vs_pytorch.py --quick   # tiny sizes (smoke)
  python benchmarks/qm9_vs_pytorch.py --quick --fixtures  # no dataset needed

At the papers' size a step takes seconds (EW) to tens of seconds (MGDA)
on 2 CPU cores, hence the fewer repeats there; each row is printed, and the
JSON rewritten, as soon as it is timed. ``--json`` writes ``{"versions":
..., "threads": [...], case: {method: {...}}}``.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import qm9_layout  # pylint: disable=g-import-not-at-top,wrong-import-position

LEARNING_RATE = 1e-3
BATCH_SIZE = 120
# name: (dim, edge hidden, edge set, QM9Net layout)
CASES = {"cpu": (32, 64, "bonded", "edges"),
         "papers": (64, 128, "complete", "dense")}
QUICK = (8, 8)  # --quick: dim and edge hidden of every case, batch 8
# our name: (TorchJD aggregator, kwargs)
TORCHJD = {"mgda": ("MGDA", {}), "nash_mtl": ("NashMTL", {"n_tasks": 11})}


def missing_requirements() -> list[str]:
  missing = []
  for module, package in (("torch", "torch"),
                          ("torch_geometric", "torch-geometric")):
    if importlib.util.find_spec(module) is None:
      missing.append(f"{package} (pip install -e .[bench])")
  return missing


# ---------------------------------------------------------------- PyTorch

def torch_net(dim: int, edge_hidden: int, num_tasks: int = 11,
              num_features: int = 11, edge_features: int = 5):
  """The official QM9 model (Nash-MTL's ``Net``), heads in a ModuleList."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from torch_geometric.nn import NNConv, Set2Set  # pylint: disable=g-import-not-at-top

  class Net(nn.Module):

    def __init__(self):
      super().__init__()
      self.lin0 = nn.Linear(num_features, dim)
      edge_net = nn.Sequential(nn.Linear(edge_features, edge_hidden),
                               nn.ReLU(), nn.Linear(edge_hidden, dim * dim))
      self.conv = NNConv(dim, dim, edge_net, aggr="mean")
      self.gru = nn.GRU(dim, dim)
      self.set2set = Set2Set(dim, processing_steps=3)
      self.lin1 = nn.Linear(2 * dim, dim)
      self.heads = nn.ModuleList(nn.Linear(dim, 1) for _ in range(num_tasks))

    def forward(self, data):
      out = F.relu(self.lin0(data.x))
      h = out.unsqueeze(0)
      for _ in range(3):
        m = F.relu(self.conv(out, data.edge_index, data.edge_attr))
        out, h = self.gru(m.unsqueeze(0), h)
        out = out.squeeze(0)
      out = self.set2set(out, data.batch)
      features = F.relu(self.lin1(out))
      return torch.cat([head(features) for head in self.heads], dim=1)

  return Net()


def pyg_batch(batch):
  """A padded dense QM9 batch (numpy) as a PyG ``Batch``: per molecule, the
  real atoms' features, the edges (``edge_mask[i, j] > 0``: j sends to i, so
  ``edge_index = [j, i]``) and their features, targets (1, 11)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from torch_geometric.data import Batch, Data  # pylint: disable=g-import-not-at-top
  graphs = []
  for b in range(len(batch["nodes"])):
    n = int(np.asarray(batch["node_mask"][b]).sum())
    recv, send = np.nonzero(np.asarray(batch["edge_mask"][b]) > 0)
    graphs.append(Data(
        x=torch.from_numpy(np.asarray(batch["nodes"][b, :n], np.float32)),
        edge_index=torch.from_numpy(np.stack([send, recv]).astype(np.int64)),
        edge_attr=torch.from_numpy(
            np.asarray(batch["edges"][b], np.float32)[recv, send]),
        y=torch.from_numpy(np.asarray(batch["targets"][b:b + 1], np.float32))))
  return Batch.from_data_list(graphs)


def load_flax_params(net, params) -> None:
  """Copies QM9Net's parameters into ``net`` (kernels transposed)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  from mtl_jax.models.qm9 import QM9_TARGETS  # pylint: disable=g-import-not-at-top

  def put(tensor, value, transpose=False):
    value = np.array(value, np.float32)
    tensor.data.copy_(torch.from_numpy(np.ascontiguousarray(
        value.T if transpose else value)))

  def linear(module, p):
    put(module.weight, p["kernel"], transpose=True)
    if "bias" in p:
      put(module.bias, p["bias"])

  linear(net.lin0, params["lin0"]["linear"])
  conv = params["conv"]
  linear(net.conv.nn[0], conv["edge_in"]["linear"])
  put(net.conv.nn[2].weight, conv["edge_out_kernel"], transpose=True)
  put(net.conv.nn[2].bias, conv["edge_out_bias"])
  linear(net.conv.lin, conv["root"]["linear"])
  put(net.conv.bias, conv["bias"])
  for rnn, p in ((net.gru, params["gru"]), (net.set2set.lstm,
                                             params["set2set"]["lstm"])):
    put(rnn.weight_ih_l0, p["input"]["kernel"], transpose=True)
    put(rnn.bias_ih_l0, p["input"]["bias"])
    put(rnn.weight_hh_l0, p["hidden"]["kernel"], transpose=True)
    put(rnn.bias_hh_l0, p["hidden"]["bias"])
  linear(net.lin1, params["lin1"]["linear"])
  for head, task in zip(net.heads, QM9_TARGETS):
    linear(head, params[f"head_{task}"]["linear"])


class TorchRunner:
  """n PyTorch training steps with ``threads`` intra-op threads.

  ``aggregator`` None: the sum of the 11 losses, one backward pass. Else:
  11 ``torch.autograd.grad`` calls (task k: the shared parameters and head
  k), the stacked 11 x P Jacobian of the shared parameters combined by
  ``aggregator`` (TorchJD) into their ``.grad``; then Adam.
  """

  def __init__(self, net, data, threads: int, aggregator=None):
    import torch  # pylint: disable=g-import-not-at-top
    self.net, self.data, self.threads = net, data, threads
    self.aggregator = aggregator
    self.heads = [list(h.parameters()) for h in net.heads]
    head_ids = {id(p) for ps in self.heads for p in ps}
    self.shared = [p for p in net.parameters() if id(p) not in head_ids]
    self.optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

  def losses(self):
    return ((self.net(self.data) - self.data.y) ** 2).mean(dim=0)

  def __call__(self, n: int) -> None:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(self.threads)
    for _ in range(n):
      losses = self.losses()
      self.optimizer.zero_grad()
      if self.aggregator is None:
        losses.sum().backward()
      else:
        k_tasks, rows, shared = len(self.heads), [], len(self.shared)
        for k in range(k_tasks):
          grads = torch.autograd.grad(losses[k], self.shared + self.heads[k],
                                      retain_graph=k < k_tasks - 1)
          rows.append(torch.cat([g.reshape(-1) for g in grads[:shared]]))
          for p, g in zip(self.heads[k], grads[shared:]):
            p.grad = g
        combined = self.aggregator(torch.stack(rows))
        offset = 0
        for p in self.shared:
          p.grad = combined[offset:offset + p.numel()].view_as(p).clone()
          offset += p.numel()
      self.optimizer.step()


# ---------------------------------------------------------------- driver

def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cases", nargs="*", default=list(CASES),
                      choices=list(CASES))
  parser.add_argument("--gradient-methods", nargs="*", default=["mgda"],
                      choices=list(TORCHJD))
  parser.add_argument("--no-ew", action="store_true")
  parser.add_argument("--threads", nargs="*", type=int, default=[1, 2],
                      help="PyTorch intra-op thread counts, each a candidate")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--papers-repeats", type=int, default=3,
                      help="repeats of EW at the papers' size (seconds a "
                      "step)")
  parser.add_argument("--papers-gradient-repeats", type=int, default=1,
                      help="repeats of the gradient methods at the papers' "
                      "size (tens of seconds a step on 2 cores)")
  parser.add_argument("--steps", type=int, default=1)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
  parser.add_argument("--quick", action="store_true",
                      help="d = 8, hidden 8, batch 8, one repeat: a smoke "
                      "test, not a measurement")
  parser.add_argument("--fixtures", action="store_true",
                      help="the 7 test molecules (tests/data/fixtures/qm9; "
                      "batch 3) instead of the built QM9 dataset (smoke)")
  parser.add_argument("--json", type=pathlib.Path, default=None)
  args = parser.parse_args(argv)
  if args.quick:
    args.repeats = args.papers_repeats = args.steps = args.warmup = 1
    args.papers_gradient_repeats = 1
    args.batch_size = min(args.batch_size, 8)
  if args.fixtures:
    args.batch_size = min(args.batch_size, 3)
  return args


def check_against_flax(model, params, net, graph, data) -> float:
  """QM9Net's ``params`` copied into ``net``; the largest absolute
  difference of the two models' outputs on the batch (also fails loudly on
  a parameter count that is not the official one)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  from mtl_jax.models.qm9 import QM9_TARGETS, official_parameter_count  # pylint: disable=g-import-not-at-top
  count = sum(p.numel() for p in net.parameters())
  official = official_parameter_count(dim=model.dim,
                                      edge_hidden=model.edge_hidden_size)
  if count != official:
    raise AssertionError(f"PyTorch model has {count} parameters, the official "
                         f"one {official}")
  load_flax_params(net, params)
  ours = model.apply({"params": params}, graph)
  ours = np.stack([np.asarray(ours[t]) for t in QM9_TARGETS], axis=1)
  with torch.no_grad():
    theirs = net(data).numpy()
  return float(np.max(np.abs(ours - theirs)))


def run_case(case, args, notes, save):
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  import mtl_jax  # pylint: disable=g-import-not-at-top
  from mtl_jax import models  # pylint: disable=g-import-not-at-top
  dim, hidden, edges, layout = CASES[case]
  if args.quick:
    dim, hidden = QUICK
  batch = qm9_layout.fixed_batch(edges, args.batch_size,
                                 fixtures=args.fixtures)
  batch_size = len(batch["nodes"])
  ours_batch = qm9_layout.engine_batch(batch, layout, edges)
  data = pyg_batch(batch)
  model = models.QM9Net(dim=dim, edge_hidden_size=hidden)
  params = model.init(jax.random.PRNGKey(0), ours_batch["graph"])["params"]
  torch.manual_seed(0)
  diff = check_against_flax(model, params, torch_net(dim, hidden),
                            ours_batch["graph"], data)
  if not diff < 1e-3:
    raise AssertionError(f"{case}: PyTorch and QM9Net disagree on the same "
                         f"weights by {diff}")
  info = {"dim": dim, "edge_hidden": hidden, "edges": edges,
          "layout": layout, "batch_size": batch_size,
          "atoms": int(data.num_nodes), "edges_in_batch": int(data.num_edges),
          "parameters": sum(p.numel() for p in torch_net(dim, hidden)
                            .parameters()),
          "max_abs_output_difference": diff}
  print(f"\n## {case}: d = {dim}, edge hidden {hidden}, {edges} graphs "
        f"({info['atoms']} atoms, {info['edges_in_batch']} edges in the "
        f"batch of {batch_size}), QM9Net layout {layout}, "
        f"{info['parameters']:,} parameters; outputs on the same weights "
        f"agree to {diff:.1e}", flush=True)
  methods = ([] if args.no_ew else ["ew"]) + list(args.gradient_methods)
  headers = ["method", "mtl_jax steps/s"]
  for threads in args.threads:
    headers += [f"PyTorch {threads} thread{'s' if threads > 1 else ''} "
                "steps/s", f"ours / theirs ({threads}t; IQR)"]
  headers.append("repeats")
  # The header now, each row once it is timed (the papers' size takes
  # minutes a row).
  print(_common.markdown_table(headers, []), flush=True)
  result = {}
  for method in methods:
    repeats = args.repeats
    if case == "papers":
      repeats = (args.papers_repeats if method == "ew"
                 else args.papers_gradient_repeats)
    if method != "ew" and importlib.util.find_spec("torchjd") is None:
      notes.append(f"{case} {method}: needs torchjd (pip install "
                   "'torchjd[full]'); row skipped")
      continue
    if method == "ew":
      runner, memory = qm9_layout.compiled_step(model, ours_batch,
                                                mtl_jax.get("ew"))
      aggregator = None
    else:
      import torchjd.aggregation  # pylint: disable=g-import-not-at-top
      runner, memory = qm9_layout.compiled_step(
          model, ours_batch, mtl_jax.get(method), task_params=("head_*",),
          mode="params")
      name, kwargs = TORCHJD[method]
      aggregator = getattr(torchjd.aggregation, name)(**kwargs)
    runners = {"mtl_jax": runner}
    for threads in args.threads:
      torch.manual_seed(0)
      net = torch_net(dim, hidden)
      load_flax_params(net, params)
      runners[f"torch x{threads}"] = TorchRunner(net, data, threads,
                                                 aggregator)
    times = _common.interleaved(runners, repeats=repeats, steps=args.steps,
                                warmup=args.warmup)
    ours = times["mtl_jax"]
    out = {"mtl_jax_steps_per_s": 1 / _common.median(ours),
           "mtl_jax_s_per_step": list(ours),
           "mtl_jax_compile_s": memory["compile_s"],
           "mtl_jax_temp_bytes": memory["temp_size_in_bytes"],
           "repeats": repeats, **info}
    row = [method, f"{1 / _common.median(ours):.3g}"]
    for threads in args.threads:
      theirs = times[f"torch x{threads}"]
      ratios = [t / o for t, o in zip(theirs, ours)]
      lo, hi = _common.quartiles(ratios)
      out[f"torch_{threads}_threads_steps_per_s"] = 1 / _common.median(theirs)
      out[f"torch_{threads}_threads_s_per_step"] = list(theirs)
      out[f"ours_over_torch_{threads}_threads"] = _common.median(ratios)
      out[f"ours_over_torch_{threads}_threads_iqr"] = [lo, hi]
      row += [f"{1 / _common.median(theirs):.3g}",
              f"{_common.median(ratios):.2f}x ({lo:.2f} .. {hi:.2f})"]
    row.append(str(repeats))
    print("| " + " | ".join(row) + " |", flush=True)
    result[method] = out
    save(case, result)
  return result


def main(argv=None) -> int:
  args = parse_args(argv)
  missing = missing_requirements()
  if missing:
    print("qm9_vs_pytorch.py needs the `bench` extra; missing:\n  "
          + "\n  ".join(missing), file=sys.stderr)
    return 2
  import torch  # pylint: disable=g-import-not-at-top
  versions = {"torch": torch.__version__,
              "torch_geometric": importlib.metadata.version("torch-geometric")}
  if importlib.util.find_spec("torchjd") is not None:
    versions["torchjd"] = importlib.metadata.version("torchjd")
  print("# QM9 (NNConv + GRU + Set2Set, 11 targets): mtl_jax vs the official "
        "PyTorch model (PyTorch Geometric), training steps per second")
  print(f"# {_common.machine_line()}")
  print(f"# {', '.join(f'{k} {v}' for k, v in versions.items())}; XLA "
        f"threads: its defaults; PyTorch threads: {args.threads}; "
        f"{args.repeats} interleaved repeats (at the papers' size: "
        f"{args.papers_repeats} for EW, {args.papers_gradient_repeats} for "
        f"the gradient methods) x {args.steps} steps after {args.warmup} "
        "warm-up; "
        "ours / theirs = median over repeats of t(PyTorch) / t(mtl_jax)")
  notes = []
  results = {"versions": versions, "threads": args.threads}

  def save(case, result):  # after every row: a long run keeps what it timed
    results[case] = result
    if args.json is not None:
      args.json.write_text(json.dumps(results, indent=2) + "\n")

  for case in args.cases:
    save(case, run_case(case, args, notes, save))
  for note in notes:
    print(f"# {note}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
