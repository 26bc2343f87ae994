"""Gradient-space methods: training steps per second, mtl_jax against LibMTL
and TorchJD (PyTorch, CPU).

Not a test. The same hard-sharing models, fixed batch, optimiser (Adam, lr
1e-3) and number of tasks as ``vs_pytorch.py`` (whose PyTorch models this
script reuses), trained with a gradient-space method by

* mtl_jax: the engine's jitted ``make_train_step`` with the method from
  ``mtl_jax.get`` (the Jacobian path: one forward pass, the K per-task
  gradients of the shared parameters as a vmapped VJP, the method's weights
  from the K x K Gramian, heads trained on their own task's gradient, from
  ``mtl_jax.models.task_params``), plus Adam, the non-finite guard and the
  norms; with ``--chunk-sizes c``, also as a second mtl_jax candidate
  with ``chunk_size=c`` (rows ``name [chunk c]``: the K VJPs ``c`` at a
  time, one chunk after the other; ``chunk_size=1`` is K ordinary VJPs in a
  row), timed against the same peer steps;
* LibMTL 1.1.5: its ``HPS`` architecture mixed with its weighting class, as
  its ``Trainer`` builds it, with ``rep_grad=False``: ``model.backward``
  runs K backward passes (one per task, the shared gradients copied into a
  K x P matrix in between), the method, and writes the combined gradient
  into the shared parameters (the heads keep their own task's gradient);
* TorchJD: forward through the shared encoder and the heads, then
  ``torchjd.autojac.mtl_backward(losses, features=...)`` (each head's own
  gradient, and the K x P Jacobian of the shared parameters by a vmapped
  VJP through the encoder) and ``jac_to_grad(encoder params, aggregator)``,
  then ``optimizer.step()``.

Method names map as follows (a row is left out where the peer has no such
method): mgda (LibMTL MGDA, ``mgda_gn="none"``; TorchJD ``MGDA()``), pcgrad,
cagrad (``c = 0.4``: LibMTL ``calpha=0.4, rescale=1``; TorchJD
``CAGrad(c=0.4)``), imtl_g (LibMTL ``IMTL``, which also learns IMTL-L's
loss scales; TorchJD ``IMTLG()``), nash_mtl (TorchJD ``NashMTL(n_tasks=K)``:
cvxpy and ECOS), aligned_mtl, upgrad, dualproj, fairgrad (``alpha=1.0``),
gradvac (``beta = 0.5``), config (TorchJD ``ConFIG()``); part 2 of the
family: imtl (LibMTL ``IMTL``: IMTL-G with IMTL-L's loss scales, as ours;
no TorchJD peer), gradnorm (LibMTL ``GradNorm``, ``alpha=1.5``, at epoch 2,
past its warm-up; no TorchJD peer), graddrop (LibMTL ``GradDrop``,
``leak=0.0``, which LibMTL runs **only with** ``rep_grad=True``: its sign
rule on the per-example gradients of the shared representation, one
backward per task through the encoder; TorchJD ``GradDrop()``, like mtl_jax
on the Jacobian of the shared parameters), mean / sum / random / constant
(TorchJD ``Mean()``, ``Sum()``, ``Random()``, ``Constant(ones)``; not in
LibMTL, whose RLW is the loss-space form of random, in ``vs_pytorch.py``),
excess_mtl (TorchJD ``ExcessMTL(robust_step_size=1.0)``), sdmgrad and modo
(TorchJD ``SDMGradWeighting(lambda_=0.3, lr=10, momentum=0.5, n_iter=20)``
and ``MoDoWeighting(gamma=1e-3, rho=0.1)``: weightings of a cross Gramian,
run as the three-batch loop of their docstrings: ``jac`` of the K losses on
parts 1 and 2, the weights from ``J_1 J_2^T``, ``backward`` of part 3's
losses with them), moco and db_mtl (no TorchJD peer). LibMTL 1.1.5, the
release on PyPI, has MGDA, PCGrad, CAGrad, IMTL, GradVac, GradNorm and
GradDrop only; its GitHub ``main`` also has MoCo, DB_MTL, ExcessMTL,
SDMGrad and MoDo: with ``--libmtl-src DIR`` (the ``LibMTL/`` package folder
of a clone) they are loaded from there, apart from the installed release
and with that tree's ``HPS`` and ``AbsWeighting``, and stepped as its
trainer does (``zero_grad(set_to_none=False)``; SDMGrad and MoDo get the
``(3, K)`` losses of three forward passes; ``robust_step_size=1.0`` for
ExcessMTL, as ours and TorchJD's). SDMGrad and MoDo split the batch in 3:
a batch not divisible by 3 is cut to its largest multiple of 3 for mtl_jax
and both peers (rows ``sdmgrad (batch 63)``), the peers getting the same
three interleaved parts (example i in part i mod 3) as three batches. Every
mtl_jax method comes from ``mtl_jax.aggregation.names()`` at run time (but
``constant``: ``--methods constant`` adds it); a row
``jacobian (w = 1)`` times the mtl_jax Jacobian path with constant weights
(EW's update) against TorchJD's ``Sum()``: the engines without a solver.
Where a peer lacks a method its column is empty, with a note.

Models (``--cases``): GradNorm's MLP trunk with 3 and 10 tasks, batch 64
(``mlp3``, ``mlp10``), and the digit scene conv net (DigitSceneNet, 4 tasks,
batch 32 of 32x32x3, ``conv``). Timing: everything is compiled / warmed up
first, then all candidates of one model are timed interleaved (each repeat
runs ``--steps`` steps of every candidate in a fresh random order);
speed-ups are medians of the per-repeat ratios t(peer) / t(mtl_jax). One
thread each (``torch.set_num_threads(1)``; XLA with its Eigen pool off and
one intra-op thread), as ``vs_pytorch.py`` does and for the same reason.

Target: >= 1.5x LibMTL on the conv net, for every method LibMTL has.

Needs the ``bench`` extra (``pip install -e .[bench]`` and ``pip install
--no-deps LibMTL==1.1.5``): torch, LibMTL, torchjd; TorchJD's Nash-MTL and
CAGrad also need cvxpy (and ECOS for Nash-MTL), its UPGrad and DualProj
quadprog and qpsolvers, its FairGrad scipy; a row whose peer lacks one is
skipped with the reason.

Usage::

  python benchmarks/vs_pytorch_gradient.py [--cases mlp3 mlp10 conv]
      [--methods mgda pcgrad ...] [--chunk-sizes 1] [--repeats 20]
      [--steps 3] [--libmtl-src path/to/LibMTL/LibMTL] [--json out.json]

``--json`` writes ``{case: {row: {...}}}``, a row being a method's name,
``name (batch b)`` (SDMGrad, MoDo on a cut batch; with ``batch_size``) or
either with `` [chunk c]``.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import vs_pytorch  # pylint: disable=g-import-not-at-top,wrong-import-position

CASES = {"mlp3": vs_pytorch.CASES["mlp3"], "mlp10": vs_pytorch.CASES["mlp10"],
         "conv": vs_pytorch.CASES["conv"]}
LEARNING_RATE = vs_pytorch.LEARNING_RATE
JACOBIAN = "jacobian (w = 1)"
TARGET = 1.5  # speed-up over LibMTL on the conv net

# our name: (LibMTL 1.1.5 class, kwargs of its backward)
LIBMTL_GRADIENT = {
    "mgda": ("MGDA", {"mgda_gn": "none"}),
    "pcgrad": ("PCGrad", {}),
    "cagrad": ("CAGrad", {"calpha": 0.4, "rescale": 1}),
    "imtl_g": ("IMTL", {}),
    "gradvac": ("GradVac", {"beta": 0.5}),
    "imtl": ("IMTL", {}),
    "gradnorm": ("GradNorm", {"alpha": 1.5}),
    "graddrop": ("GradDrop", {"leak": 0.0}),
}
# LibMTL runs GradDrop only with rep_grad=True (its backward raises a
# ValueError otherwise): the sign rule on the gradients of the shared
# representation, per example, not of the shared parameters.
LIBMTL_REP_GRAD = ("graddrop",)
# our name: (class, kwargs of its backward), only in LibMTL's GitHub main:
# loaded from a source checkout with --libmtl-src, with that tree's HPS.
LIBMTL_SOURCE_GRADIENT = {
    "moco": ("MoCo", {"MoCo_beta": 0.5, "MoCo_beta_sigma": 0.5,
                      "MoCo_gamma": 0.1, "MoCo_gamma_sigma": 0.5,
                      "MoCo_rho": 0.0}),
    "db_mtl": ("DB_MTL", {"DB_beta": 0.9, "DB_beta_sigma": 0.0}),
    "excess_mtl": ("ExcessMTL", {"robust_step_size": 1.0}),
    "sdmgrad": ("SDMGrad", {"SDMGrad_lamda": 0.3, "SDMGrad_niter": 20}),
    "modo": ("MoDo", {"MoDo_gamma": 1e-3, "MoDo_rho": 0.1}),
}
# Methods on 3 independent samples: mtl_jax splits the batch into 3
# interleaved parts; the peers get the same 3 parts as 3 forward passes.
SPLIT_METHODS = ("sdmgrad", "modo")
# our name: (TorchJD aggregator, kwargs, optional modules it needs)
TORCHJD_GRADIENT = {
    JACOBIAN: ("Sum", {}, ()),
    "graddrop": ("GradDrop", {}, ()),
    "mean": ("Mean", {}, ()),
    "sum": ("Sum", {}, ()),
    "random": ("Random", {}, ()),
    "constant": ("Constant", {"weights": "ones"}, ()),
    "excess_mtl": ("ExcessMTL", {"robust_step_size": 1.0}, ()),
    # Weightings of a cross Gramian J_1 J_2^T: the three-batch loop of their
    # docstrings (TorchJDSplitRunner), not mtl_backward.
    "sdmgrad": ("SDMGradWeighting", {"lambda_": 0.3, "lr": 10.0,
                                     "momentum": 0.5, "n_iter": 20}, ()),
    "modo": ("MoDoWeighting", {"gamma": 1e-3, "rho": 0.1}, ()),
    "mgda": ("MGDA", {}, ()),
    "pcgrad": ("PCGrad", {}, ()),
    "cagrad": ("CAGrad", {"c": 0.4}, ("cvxpy",)),
    "imtl_g": ("IMTLG", {}, ()),
    "nash_mtl": ("NashMTL", {"n_tasks": None}, ("cvxpy", "ecos")),
    "aligned_mtl": ("AlignedMTL", {}, ()),
    "upgrad": ("UPGrad", {}, ("quadprog", "qpsolvers")),
    "dualproj": ("DualProj", {}, ("quadprog", "qpsolvers")),
    "fairgrad": ("FairGrad", {"alpha": 1.0}, ("scipy",)),
    "gradvac": ("GradVac", {"beta": 0.5}, ()),
    "config": ("ConFIG", {}, ()),
}


# ------------------------------------------------------------ requirements

def missing_requirements() -> list[str]:
  """What the benchmark lacks, as readable lines (empty when all is there)."""
  return vs_pytorch.missing_requirements(
      [cls for cls, _ in LIBMTL_GRADIENT.values()], torchjd=True)


def missing_optional(method: str) -> list[str]:
  """Optional modules TorchJD's version of ``method`` needs and lacks."""
  if method not in TORCHJD_GRADIENT:
    return []
  return [m for m in TORCHJD_GRADIENT[method][2]
          if importlib.util.find_spec(m) is None]


def torch2_hps(hps):
  """LibMTL's HPS with its shared gradients zeroed in place between tasks.

  LibMTL 1.1.5 (written for torch 1.x) zeroes the encoder's gradients
  between the K backward passes with ``encoder.zero_grad()``, which since
  torch 2.0 sets them to ``None``; its ``_reset_grad`` then fails writing
  the combined gradient into ``param.grad.data``. Zeroing in place restores
  the behaviour LibMTL was written for (and costs a memset per pass).
  """

  class HPS(hps):  # pylint: disable=invalid-name

    def zero_grad_share_params(self):
      self.encoder.zero_grad(set_to_none=False)

  return HPS


# ---------------------------------------------------------------- TorchJD

class TorchJDRunner:
  """n TorchJD steps: forward, ``mtl_backward``, ``jac_to_grad``, Adam."""

  def __init__(self, encoder, decoders, inputs, targets, loss_fns,
               aggregator):
    import torch  # pylint: disable=g-import-not-at-top
    self.encoder, self.decoders = encoder, decoders
    self.inputs, self.targets, self.loss_fns = inputs, targets, loss_fns
    self.aggregator = aggregator
    self.task_names = list(loss_fns)
    self.shared = list(encoder.parameters())
    params = self.shared + list(decoders.parameters())
    self.optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)

  def __call__(self, n: int) -> None:
    from torchjd.autojac import jac_to_grad, mtl_backward  # pylint: disable=g-import-not-at-top
    for _ in range(n):
      rep = self.encoder(self.inputs)
      if isinstance(rep, tuple):
        # The conv net's heads read the decoder's output and the pooled
        # bottleneck. mtl_backward needs shared features of which none is
        # computed from another (the decoder's output is computed from the
        # bottleneck), so the count head gets the pooled bottleneck as a
        # 1x1 map: its own mean over H and W is then the identity.
        pooled = rep[1].mean(dim=(2, 3))
        features = [rep[0], pooled]
        rep = (rep[0], pooled[:, :, None, None])
      else:
        features = [rep]
      losses = [self.loss_fns[t](self.decoders[t](rep), self.targets[t])
                for t in self.task_names]
      self.optimizer.zero_grad()
      mtl_backward(losses, features=features)
      jac_to_grad(self.shared, self.aggregator)
      self.optimizer.step()


class TorchJDSplitRunner:
  """n TorchJD steps of a weighting of a cross Gramian (SDMGrad, MoDo), as
  the three-batch examples of their docstrings: on parts 1 and 2, forward
  and ``torchjd.autojac.jac`` of the K losses in the shared parameters;
  ``A = J_1 J_2^T``; ``w = weighting(A)``; on part 3, forward and
  ``losses.backward(w)``; Adam. (The heads thus get part 3's w-weighted
  gradient; mtl_jax gives each head its own task's gradient on the batch.)
  """

  def __init__(self, encoder, decoders, parts, loss_fns, weighting):
    import torch  # pylint: disable=g-import-not-at-top
    self.encoder, self.decoders = encoder, decoders
    self.parts, self.loss_fns = parts, loss_fns
    self.weighting = weighting
    self.task_names = list(loss_fns)
    self.shared = list(encoder.parameters())
    params = self.shared + list(decoders.parameters())
    self.optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)

  def losses(self, inputs, targets):
    import torch  # pylint: disable=g-import-not-at-top
    rep = self.encoder(inputs)
    return torch.stack([self.loss_fns[t](self.decoders[t](rep), targets[t])
                        for t in self.task_names])

  def __call__(self, n: int) -> None:
    import torch  # pylint: disable=g-import-not-at-top
    from torchjd.autojac import jac  # pylint: disable=g-import-not-at-top
    for _ in range(n):
      jacobians = []
      for inputs, targets in self.parts[:2]:
        jacs = jac(self.losses(inputs, targets), self.shared)
        jacobians.append(torch.cat([j.flatten(1) for j in jacs], dim=1))
      weights = self.weighting(jacobians[0] @ jacobians[1].T)
      losses = self.losses(*self.parts[2])
      self.optimizer.zero_grad()
      losses.backward(weights)
      self.optimizer.step()


def make_torchjd_runner(method, model_name, num_tasks, np_batch, seed=0):
  import torch  # pylint: disable=g-import-not-at-top
  import torchjd.aggregation  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  encoder, decoders, inputs, targets, loss_fns = vs_pytorch.torch_problem(
      model_name, num_tasks, np_batch)
  name, kwargs, _ = TORCHJD_GRADIENT[method]
  kwargs = {k: (num_tasks if v is None else
                torch.ones(num_tasks) if v == "ones" else v)
            for k, v in kwargs.items()}
  aggregator = getattr(torchjd.aggregation, name)(**kwargs)
  encoder, decoders = encoder(), decoders()
  encoder.train()
  decoders.train()
  if method in SPLIT_METHODS:
    parts = [vs_pytorch.torch_problem(model_name, num_tasks, part)[2:4]
             for part in vs_pytorch.split_batch(np_batch, 3)]
    return TorchJDSplitRunner(encoder, decoders, parts, loss_fns, aggregator)
  return TorchJDRunner(encoder, decoders, inputs, targets, loss_fns,
                       aggregator)


# ---------------------------------------------------------------- driver

def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cases", nargs="*", default=list(CASES),
                      choices=list(CASES))
  parser.add_argument("--methods", nargs="*", default=None,
                      help="default: every registered gradient-space method")
  parser.add_argument("--no-jacobian-row", action="store_true",
                      help=f"leave out the '{JACOBIAN}' row")
  parser.add_argument("--chunk-sizes", nargs="*", type=int, default=[],
                      help="also time mtl_jax with these chunk sizes of the "
                      "Jacobian, as rows 'name [chunk c]'")
  parser.add_argument("--libmtl-src", type=pathlib.Path, default=None,
                      help="the LibMTL/ package folder of a LibMTL source "
                      "checkout (GitHub main): MoCo, DB_MTL, ExcessMTL, "
                      "SDMGrad and MoDo from there")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--json", type=pathlib.Path, default=None)
  return parser.parse_args(argv)


def jax_runner(method, model, np_batch, task_losses, num_tasks,
               chunk_size=None):
  from mtl_jax import models  # pylint: disable=g-import-not-at-top
  agg = (_common.constant_weights(num_tasks) if method == JACOBIAN
         else _common.make_gradient_method(method, num_tasks))
  return _common.JaxRunner(*_common.jit_step(
      model, np_batch, task_losses, agg, num_tasks,
      learning_rate=LEARNING_RATE, task_params=models.task_params(model),
      chunk_size=chunk_size))


def engine(chunk_size):
  """The runner key (and row suffix) of mtl_jax with ``chunk_size``."""
  return "mtl_jax" if chunk_size is None else f"mtl_jax [chunk {chunk_size}]"


def method_batch(method, num_tasks, np_batch):
  """``(batch, size or None)``: the batch ``method`` is timed on. SDMGrad
  and MoDo need a batch divisible by 3: a batch that is not is cut to its
  first ``b`` examples, ``b`` the largest multiple of 3, for mtl_jax and the
  peers alike."""
  if method == JACOBIAN:
    return np_batch, None
  try:
    splits = _common.batch_splits(
        _common.make_gradient_method(method, num_tasks))
  except Exception:
    return np_batch, None  # fails again when built, and is noted there
  size = len(next(iter(np_batch.values())))
  if splits > 1 and size % splits:
    size -= size % splits
    return _common.truncate_batch(np_batch, size), size
  return np_batch, None


def row_name(method, chunk, size):
  base = method if size is None else f"{method} (batch {size})"
  return base if chunk is None else f"{base} [chunk {chunk}]"


def run_case(case, methods, args, hps, classes, src, notes):
  model_name, num_tasks, batch_size = CASES[case]
  if model_name == "mlp":
    model, full_batch, task_losses = _common.mlp_problem(num_tasks,
                                                         batch_size)
  else:
    model, full_batch, task_losses = _common.digit_problem(batch_size)
  runners, done, sizes = {}, [], {}
  chunks = [None] + list(args.chunk_sizes)
  for method in methods:
    np_batch, sizes[method] = method_batch(method, num_tasks, full_batch)
    if sizes[method] is not None:
      notes.append(f"{case} {method}: splits the batch into 3 parts and "
                   f"{batch_size} is not divisible by 3: mtl_jax and the "
                   f"peers all run on the first {sizes[method]} examples "
                   f"(the peers as 3 forward passes of {sizes[method] // 3})")
    for chunk in chunks:
      try:
        runners[(engine(chunk), method)] = jax_runner(
            method, model, np_batch, task_losses, num_tasks, chunk)
        done.append((method, chunk))
      except Exception as e:
        notes.append(f"{case} {method}: {engine(chunk)} failed to build or "
                     f"compile ({type(e).__name__}: {str(e)[:200]}); row "
                     "skipped")
    if not any(m == method for m, _ in done):
      continue
    peers = {}
    parts = 3 if method in SPLIT_METHODS else 1
    if method in classes:
      cls, kwargs = classes[method], LIBMTL_GRADIENT[method][1]
      rep_grad = method in LIBMTL_REP_GRAD
      peers["libmtl"] = lambda cls=cls, kwargs=kwargs, method=method, \
          rep_grad=rep_grad, np_batch=np_batch, parts=parts: \
          vs_pytorch.make_torch_runner(hps, cls, method, model_name,
                                       num_tasks, np_batch, kwargs=kwargs,
                                       rep_grad=rep_grad, parts=parts)
    elif src is not None and method in src[1]:
      cls, kwargs = src[1][method], LIBMTL_SOURCE_GRADIENT[method][1]
      peers["libmtl"] = lambda cls=cls, kwargs=kwargs, method=method, \
          np_batch=np_batch, parts=parts: vs_pytorch.make_torch_runner(
              src[0], cls, method, model_name, num_tasks, np_batch,
              kwargs=kwargs, parts=parts, set_to_none=False)
    lacks = missing_optional(method)
    if method in TORCHJD_GRADIENT and not lacks:
      peers["torchjd"] = lambda method=method, np_batch=np_batch: \
          make_torchjd_runner(method, model_name, num_tasks, np_batch)
    for peer, build in peers.items():
      try:  # one step now: a peer that fails is left out, with the reason
        runner = build()
        runner(1)
        runners[(peer, method)] = runner
      except Exception as e:
        notes.append(f"{case} {method}: {peer} fails ({type(e).__name__}: "
                     f"{str(e)[:160]}); its column is empty")
    if lacks:
      notes.append(f"{case} {method}: TorchJD's version needs "
                   f"{', '.join(lacks)} (pip install 'torchjd[full]'); "
                   "its column is empty")
  times = _common.interleaved(runners, repeats=args.repeats, steps=args.steps)

  rows, result = [], {}
  for method, chunk in done:
    name = row_name(method, chunk, sizes[method])
    jax_t = times[(engine(chunk), method)]
    out = {"mtl_jax_steps_per_s": 1 / _common.median(jax_t),
           "chunk_size": chunk}
    if sizes[method] is not None:
      out["batch_size"] = sizes[method]
    row = [name, f"{1 / _common.median(jax_t):.1f}"]
    for peer in ("libmtl", "torchjd"):
      if (peer, method) not in times:
        row += ["-", "-", "-"]
        continue
      peer_t = times[(peer, method)]
      speedups = [p / j for p, j in zip(peer_t, jax_t)]
      lo, hi = _common.quartiles(speedups)
      speedup = _common.median(speedups)
      row += [f"{1 / _common.median(peer_t):.1f}", f"{speedup:.2f}x",
              f"{lo:.2f} .. {hi:.2f}"]
      out[f"{peer}_steps_per_s"] = 1 / _common.median(peer_t)
      out[f"speedup_vs_{peer}"] = speedup
      out[f"speedup_vs_{peer}_iqr"] = [lo, hi]
    if model_name == "conv" and "speedup_vs_libmtl" in out:
      met = out["speedup_vs_libmtl"] >= TARGET
      out["target_met"] = met
      row.append("met" if met else "NOT met")
    elif model_name == "conv":
      row.append("-")
    rows.append(row)
    result[name] = out
  what = ("MLPTrunk 250 -> 4 x 100, heads of 100" if model_name == "mlp"
          else "DigitSceneNet (8, 16, 32), 32x32x3")
  headers = ["method", "mtl_jax steps/s", "LibMTL steps/s",
             "vs LibMTL (median)", "vs LibMTL IQR", "TorchJD steps/s",
             "vs TorchJD (median)", "vs TorchJD IQR"]
  if model_name == "conv":
    headers.append(f">= {TARGET}x LibMTL")
  print(f"\n## {case}: {what}, {num_tasks} tasks, batch {batch_size}, Adam")
  print(_common.markdown_table(headers, rows))
  sys.stdout.flush()
  return result


def main(argv=None) -> int:
  args = parse_args(argv)
  missing = missing_requirements()
  if missing:
    print("vs_pytorch_gradient.py needs the `bench` extra (pip install -e "
          ".[bench] && pip install --no-deps LibMTL==1.1.5); missing:\n  "
          + "\n  ".join(missing), file=sys.stderr)
    return 2
  if "jax" in sys.modules:
    raise RuntimeError("XLA_FLAGS must be set before jax is imported")
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
      " intra_op_parallelism_threads=1").strip()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  methods = (list(_common.gradient_methods()) if args.methods is None
             else list(args.methods))
  if not args.no_jacobian_row:
    methods = [JACOBIAN] + methods
  libmtl_names = {m: LIBMTL_GRADIENT[m][0] for m in methods
                  if m in LIBMTL_GRADIENT}
  hps, _, classes = vs_pytorch.load_libmtl(libmtl_names)
  hps = torch2_hps(hps)
  src = None
  if args.libmtl_src is not None:
    wanted = {m: LIBMTL_SOURCE_GRADIENT[m][0] for m in methods
              if m in LIBMTL_SOURCE_GRADIENT and m not in LIBMTL_GRADIENT}
    src_hps, _, src_classes = vs_pytorch.load_libmtl_source(args.libmtl_src,
                                                            wanted)
    src = (src_hps, src_classes,
           vs_pytorch.libmtl_source_commit(args.libmtl_src))
  version = importlib.metadata.version("torchjd")
  print("# Gradient-space methods: mtl_jax vs LibMTL 1.1.5 and TorchJD "
        f"{version} (PyTorch) on CPU, training steps per second"
        + (f"; LibMTL main ({src[2]}, from {args.libmtl_src}) for "
           f"{', '.join(src[1])}" if src is not None and src[1] else ""))
  print(f"# {_common.machine_line()}")
  print(f"# torch {torch.__version__}, torch.set_num_threads(1); XLA threads: "
        f"1 (eigen pool off); {args.repeats} interleaved repeats x "
        f"{args.steps} steps; speed-up = median over repeats of "
        "t(peer) / t(mtl_jax)"
        + ("; rows 'name [chunk c]': mtl_jax with chunk_size=c against the "
           "same peer steps" if args.chunk_sizes else ""))
  notes = []
  results = {case: run_case(case, methods, args, hps, classes, src, notes)
             for case in args.cases}
  in_src = set(src[1]) if src is not None else set()
  absent = [m for m in methods if m != JACOBIAN and m not in LIBMTL_GRADIENT
            and m not in in_src]
  if absent:
    main_has = [m for m in absent if m in LIBMTL_SOURCE_GRADIENT]
    print(f"\n# LibMTL column empty (not in LibMTL 1.1.5): "
          f"{', '.join(absent)}"
          + (f"; LibMTL's GitHub main has {', '.join(main_has)} (pass "
             "--libmtl-src)" if main_has else ""))
  if "random" in absent:
    print("# random: LibMTL has RLW, a loss weighting whose update has the "
          "same distribution (softmax of normal draws on the losses, one "
          "backward pass); vs_pytorch.py's rlw row compares it with "
          "mtl_jax's loss-based rlw")
  if "graddrop" in methods:
    print("# graddrop: LibMTL runs GradDrop only with rep_grad=True (the "
          "sign rule on the per-example gradients of the shared "
          "representation, then one backward per task through the "
          "encoder); mtl_jax and TorchJD apply it to the K x P Jacobian of "
          "the shared parameters")
  no_jd = [m for m in methods if m not in TORCHJD_GRADIENT]
  if no_jd:
    print(f"# TorchJD column empty (no such aggregator or weighting in "
          f"TorchJD {version}): {', '.join(no_jd)}")
  for note in notes:
    print(f"# {note}")
  if args.json is not None:
    args.json.write_text(json.dumps(results, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
