"""Training steps per second: mtl_jax against LibMTL (PyTorch, CPU).

Not a test. The same hard-sharing models, batch, optimiser (Adam, lr 1e-3)
and number of tasks, trained by

* mtl_jax: the engine's jitted ``make_train_step`` (forward, task losses,
  weighting, backward, Adam, non-finite guard, gradient and parameter norms);
* LibMTL 1.1.5: its ``HPS`` architecture mixed with its weighting class, as
  its ``Trainer`` does, and the inner step of ``Trainer.train``
  (``zero_grad``, forward, losses, ``model.backward(losses, **weight_args)``,
  ``optimizer.step()``; the trainer's metric meter is left out);
* for FAMO and STCH, which LibMTL 1.1.5 lacks: TorchJD's scalarizers
  (``torchjd.scalarization.FAMO(K, lr=0.025, weight_decay=1e-3)``, its
  ``update`` after each step on the losses of the same batch, recomputed
  without gradient; ``STCH(mu=1)``, the stateless form, against mtl_jax's
  ``stch_stateless``), and, with ``--libmtl-src DIR``, LibMTL's own FAMO
  and STCH from a source checkout of its GitHub main (``DIR`` is the
  ``LibMTL/`` package folder of the clone; its modules are loaded apart
  from the installed 1.1.5, with their own ``HPS`` and ``AbsWeighting``),
  stepped as its trainer does: ``zero_grad(set_to_none=False)``, FAMO's
  ``update_w`` on the losses of the same batch after the step, STCH past
  its 4 warm-up epochs (``model.epoch = 5``, nadir vector set first)
  against mtl_jax's ``stch`` (LibMTL's form, mu = 1). FAMO's row times
  its extra forward pass on both sides;
* UW-SO as the authors' PyTorch code runs it: a LibMTL-style weighting that
  first computes every task's gradient of the shared parameters with
  ``torch.autograd.grad`` (K extra backward passes, never used), then the
  softmax of ``1 / L`` over ``T`` and one backward of the weighted sum.
  Written here from that description.

Models: GradNorm's MLP trunk (250 -> 4 x 100 ReLU, one linear head of 100 per
task): batch 8 with 3 tasks (``mlp3_b8``: framework overhead dominates),
batch 64 with 3 and 10 tasks (``mlp3``, ``mlp10``: overhead and compute
mixed); and the digit scene conv net (DigitSceneNet's U-Net with widths 8,
16, 32 and its four heads; batch 32 of 32x32x3: compute bound, ``conv``). Batches are fixed tensors in
memory, so no loader is timed.

Timing: every step is compiled / warmed up first, then all candidates of one
model are timed interleaved (each repeat runs ``--steps`` steps of every
candidate in a fresh random order); speed-ups are medians of the per-repeat
ratios. Threads: ``--threads 1`` (the default) runs both frameworks on one
thread (``torch.set_num_threads(1)``; XLA with
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``);
``--threads N`` gives PyTorch N threads and leaves XLA its default pool (one
thread per core). On a 2-core machine shared with other jobs, PyTorch's
OpenMP pool with 2 threads was 2 to 25 times slower than with 1 (its threads
spin-wait for a peer that another process has descheduled), so one thread
each is the fair and stable comparison there.

Needs the ``bench`` extra (``pip install -e .[bench]``; a CPU build of torch
is enough). LibMTL 1.1.5's package ``__init__`` imports
``torchvision.models.utils``, which current torchvision lacks, so this script
loads LibMTL's architecture and weighting modules from their files, bypassing
that ``__init__``; torchvision is not needed.

Usage::

  python benchmarks/vs_pytorch.py [--repeats 30] [--steps 5] [--json out.json]
      [--cases mlp3 mlp10 conv] [--methods ew famo ...]
      [--libmtl-src path/to/LibMTL/LibMTL]

``--json`` writes ``{case: {row: {"speedup": ..., "speedup_iqr": [q1, q3],
"peer": ..., ...}}}``, a row being the method's name (its first peer) or
``name vs LibMTL main`` (a second peer from ``--libmtl-src``). A method with
no peer here is left out, with a note under the tables.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import pathlib
import sys
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

LIBMTL_METHODS = {"ew": "EW", "uw": "UW", "dwa": "DWA", "gls": "GLS",
                  "rlw": "RLW"}
LIBMTL_KWARGS = {"dwa": {"T": 2.0}, "rlw": {"dist": "Normal"},
                 "uw_so": {"T": 2.0}}
# Loss-based methods that LibMTL has only in its GitHub main (not in 1.1.5):
# our name: (class, kwargs of its backward, model.epoch). STCH at epoch 5,
# past its 4 warm-up epochs (its nadir vector is set up before timing).
LIBMTL_SOURCE_METHODS = {
    "famo": ("FAMO", {"FAMO_w_lr": 0.025, "FAMO_w_gamma": 1e-3}, 2),
    "stch": ("STCH", {"STCH_mu": 1.0, "STCH_warmup_epoch": 4}, 5),
}
# Loss-based methods TorchJD has as a scalarizer: our name: (class, kwargs).
TORCHJD_SCALARIZERS = {
    "famo": ("FAMO", {"lr": 0.025, "weight_decay": 1e-3}),
    "stch_stateless": ("STCH", {"mu": 1.0}),
}
CASES = {
    # name: (model, num_tasks, batch size)
    "mlp3_b8": ("mlp", 3, 8),
    "mlp3": ("mlp", 3, 64),
    "mlp10": ("mlp", 10, 64),
    "conv": ("conv", 4, 32),
}
LEARNING_RATE = 1e-3


# ------------------------------------------------------------ requirements

def missing_requirements(weighting_classes=None,
                         torchjd: bool = False) -> list[str]:
  """What the benchmark lacks, as readable lines (empty when all is there).

  ``weighting_classes``: the LibMTL weighting modules it loads (default:
  this script's); ``torchjd``: whether it needs TorchJD too.
  """
  if weighting_classes is None:
    weighting_classes = LIBMTL_METHODS.values()
  missing = []
  if importlib.util.find_spec("torch") is None:
    missing.append("torch (a CPU build is enough: pip install torch)")
  if torchjd and importlib.util.find_spec("torchjd") is None:
    missing.append("torchjd (pip install torchjd)")
  libmtl = importlib.util.find_spec("LibMTL")
  if libmtl is None:
    missing.append("LibMTL (pip install --no-deps LibMTL==1.1.5; its "
                   "weighting modules need only torch and numpy)")
  else:
    root = pathlib.Path(next(iter(libmtl.submodule_search_locations)))
    needed = ["architecture/abstract_arch.py", "architecture/HPS.py",
              "weighting/abstract_weighting.py"]
    needed += [f"weighting/{cls}.py" for cls in weighting_classes]
    missing += [f"LibMTL file {root / f}" for f in needed
                if not (root / f).is_file()]
  return missing


def load_libmtl(methods: dict[str, str] | None = None):
  """LibMTL's HPS and weighting classes, loaded from their files.

  Stub parent packages are put in ``sys.modules`` so that the modules'
  ``from LibMTL.x.y import ...`` lines resolve without running the package
  ``__init__`` (which imports torchvision's removed ``models.utils``).
  ``methods`` maps our names to LibMTL class names (default
  :data:`LIBMTL_METHODS`). Returns ``(HPS, AbsWeighting, {method: class})``.
  """
  methods = LIBMTL_METHODS if methods is None else methods
  root = pathlib.Path(
      next(iter(importlib.util.find_spec("LibMTL").submodule_search_locations)))
  for package in ("LibMTL", "LibMTL.architecture", "LibMTL.weighting"):
    if package not in sys.modules or not hasattr(sys.modules[package],
                                                 "__path__"):
      stub = types.ModuleType(package)
      stub.__path__ = [str(root.joinpath(*package.split(".")[1:]))]
      sys.modules[package] = stub

  def load(dotted: str):
    if dotted in sys.modules and hasattr(sys.modules[dotted], "__file__"):
      return sys.modules[dotted]
    path = root.joinpath(*dotted.split(".")[1:]).with_suffix(".py")
    spec = importlib.util.spec_from_file_location(dotted, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[dotted] = module
    spec.loader.exec_module(module)
    return module

  load("LibMTL.architecture.abstract_arch")
  hps = load("LibMTL.architecture.HPS").HPS
  abs_weighting = load("LibMTL.weighting.abstract_weighting").AbsWeighting
  classes = {name: getattr(load(f"LibMTL.weighting.{cls}"), cls)
             for name, cls in methods.items()}
  return hps, abs_weighting, classes


class _NumpyShim:
  """numpy, plus ``alltrue`` (removed in NumPy 2.0; LibMTL's SDMGrad still
  calls it in its simplex projection): the module ``np`` of a LibMTL file
  loaded by :func:`load_libmtl_source`, so numpy itself is left alone."""

  def __getattr__(self, name):
    if name == "alltrue":
      return np.all
    return getattr(np, name)


def load_libmtl_source(root: str | os.PathLike, methods: dict[str, str]):
  """LibMTL's HPS, AbsWeighting and weighting classes from a source tree.

  ``root`` is the ``LibMTL`` package directory of a LibMTL checkout (e.g.
  ``LibMTL/LibMTL`` of a clone of the GitHub repository, whose ``main`` has
  MoCo, DB_MTL, ExcessMTL, SDMGrad, MoDo, FAMO and STCH; the PyPI release
  1.1.5 has none of them). Its modules are loaded under the package name
  ``LibMTL_src`` (their ``from LibMTL.`` imports rewritten to it), so that
  they do not mix with the installed release: a class from the tree gets
  the tree's ``AbsWeighting``, ``AbsArchitecture`` and ``HPS``. Returns
  ``(HPS, AbsWeighting, {method: class})``.
  """
  root = pathlib.Path(root)
  if not (root / "weighting" / "abstract_weighting.py").is_file():
    raise FileNotFoundError(
        f"{root} is not LibMTL's package directory (no "
        "weighting/abstract_weighting.py); give the LibMTL/ folder inside "
        "a clone of https://github.com/median-research-group/LibMTL")
  for package in ("LibMTL_src", "LibMTL_src.architecture",
                  "LibMTL_src.weighting"):
    if package not in sys.modules:
      stub = types.ModuleType(package)
      stub.__path__ = [str(root.joinpath(*package.split(".")[1:]))]
      sys.modules[package] = stub

  def load(dotted: str):
    if dotted in sys.modules and hasattr(sys.modules[dotted], "__file__"):
      return sys.modules[dotted]
    path = root.joinpath(*dotted.split(".")[1:]).with_suffix(".py")
    source = path.read_text().replace("from LibMTL.", "from LibMTL_src.")
    module = types.ModuleType(dotted)
    module.__file__ = str(path)
    sys.modules[dotted] = module
    exec(compile(source, str(path), "exec"), module.__dict__)  # pylint: disable=exec-used
    if "np" in module.__dict__:
      module.np = _NumpyShim()
    return module

  load("LibMTL_src.architecture.abstract_arch")
  hps = load("LibMTL_src.architecture.HPS").HPS
  abs_weighting = load("LibMTL_src.weighting.abstract_weighting").AbsWeighting
  classes = {name: getattr(load(f"LibMTL_src.weighting.{cls}"), cls)
             for name, cls in methods.items()}
  return hps, abs_weighting, classes


def libmtl_source_commit(root: str | os.PathLike) -> str:
  """The git commit of the checkout holding ``root`` ('unknown' if none)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12",
                        "HEAD"], capture_output=True, text=True, check=False)
  return out.stdout.strip() or "unknown"


# ---------------------------------------------------------------- PyTorch

def torch_models():
  """The PyTorch twins of MLPTrunk and DigitSceneNet (same layer sizes)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class MLPEncoder(nn.Module):

    def __init__(self, width=100, depth=4, in_dim=250):
      super().__init__()
      layers = []
      for i in range(depth):
        layers += [nn.Linear(in_dim if i == 0 else width, width), nn.ReLU()]
      self.net = nn.Sequential(*layers)

    def forward(self, x):
      return self.net(x)

  def conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1),
                         nn.BatchNorm2d(cout), nn.ReLU())

  class ConvEncoder(nn.Module):
    """DigitSceneNet's trunk: returns (full-res features, bottleneck)."""

    def __init__(self, widths=(8, 16, 32)):
      super().__init__()
      self.enc = nn.ModuleList()
      cin = 3
      for w in widths:
        self.enc.append(conv_bn_relu(cin, w))
        cin = w
      self.dec = nn.ModuleList()
      for i in reversed(range(len(widths) - 1)):
        self.dec.append(conv_bn_relu(cin + widths[i], widths[i]))
        cin = widths[i]

    def forward(self, x):
      skips = []
      for i, block in enumerate(self.enc):
        x = block(x)
        if i < len(self.enc) - 1:
          skips.append(x)
          x = F.max_pool2d(x, 2)
      bottleneck = x
      for block, skip in zip(self.dec, reversed(skips)):
        x = block(torch.cat([F.interpolate(x, scale_factor=2.0,
                                           mode="nearest"), skip], dim=1))
      return x, bottleneck

  class PixelHead(nn.Module):

    def __init__(self, cin, cout, normalize=False):
      super().__init__()
      self.conv = nn.Conv2d(cin, cout, 1)
      self.normalize = normalize

    def forward(self, rep):
      y = self.conv(rep[0])
      return F.normalize(y, dim=1) if self.normalize else y

  class CountHead(nn.Module):

    def __init__(self, cin, classes):
      super().__init__()
      self.linear = nn.Linear(cin, classes)

    def forward(self, rep):
      return self.linear(rep[1].mean(dim=(2, 3)))

  def conv_decoders():
    return nn.ModuleDict({"segmentation": PixelHead(8, 11),
                          "depth": PixelHead(8, 1),
                          "normal": PixelHead(8, 3, normalize=True),
                          "count": CountHead(32, 5)})

  def mlp_decoders(num_tasks):
    return nn.ModuleDict({f"task{k}": nn.Linear(100, 100)
                          for k in range(num_tasks)})

  return MLPEncoder, ConvEncoder, conv_decoders, mlp_decoders


def authors_uw_so(abs_weighting):
  """UW-SO as the authors' LibMTL-based code runs it (written from its
  description): per-task gradients of the shared parameters first, unused."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  class AuthorsUWSO(abs_weighting):

    def backward(self, losses, **kwargs):
      shared = list(self.get_share_params())
      per_task = torch.zeros(self.task_num, sum(p.numel() for p in shared))
      for k in range(self.task_num):  # computed, then never used
        grads = torch.autograd.grad(losses[k], shared, retain_graph=True,
                                    allow_unused=True)
        per_task[k] = torch.cat([
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, shared)])
      weights = F.softmax(1.0 / ((losses.detach() + 1e-8) * kwargs["T"]),
                          dim=-1)
      loss = torch.mul(losses, weights).sum()
      loss.backward()
      return weights.detach().cpu().numpy()

  return AuthorsUWSO


class TorchRunner:
  """n LibMTL training steps (Trainer.train's inner loop, no meter).

  ``parts``: a list of ``(inputs, targets)``, one per forward pass of a step
  (LibMTL's trainer draws 3 batches a step for SDMGrad and MoDo and hands
  ``model.backward`` their ``(3, K)`` losses); ``None``: the one batch.
  ``famo``: after the optimiser step, the losses of the same batch without
  gradient and ``model.update_w(losses)``, as LibMTL's trainer does for
  FAMO. ``set_to_none``: the ``optimizer.zero_grad`` argument (LibMTL 1.1.5's
  trainer: the torch default; its GitHub main: False).
  """

  def __init__(self, model, optimizer, inputs, targets, loss_fns, kwargs,
               parts=None, famo=False, set_to_none=True):
    self.model, self.optimizer = model, optimizer
    self.inputs, self.targets, self.loss_fns = inputs, targets, loss_fns
    self.kwargs = kwargs
    self.task_names = list(loss_fns)
    self.parts = parts
    self.famo, self.set_to_none = famo, set_to_none

  def losses(self, inputs, targets):
    import torch  # pylint: disable=g-import-not-at-top
    preds = self.model(inputs)
    losses = torch.zeros(len(self.task_names))
    for k, task in enumerate(self.task_names):
      losses[k] = self.loss_fns[task](preds[task], targets[task])
    return losses

  def __call__(self, n: int) -> None:
    import torch  # pylint: disable=g-import-not-at-top
    for _ in range(n):
      if self.parts is None:
        losses = self.losses(self.inputs, self.targets)
      else:
        losses = torch.stack([self.losses(x, y) for x, y in self.parts])
      self.optimizer.zero_grad(set_to_none=self.set_to_none)
      self.model.backward(losses, **self.kwargs)
      self.optimizer.step()
      if self.famo:
        with torch.no_grad():
          self.model.update_w(self.losses(self.inputs, self.targets).detach())


def torch_problem(model_name, num_tasks, np_batch):
  """(encoder class, decoders factory, inputs, targets, loss fns)."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  mlp_encoder, conv_encoder, conv_decoders, mlp_decoders = torch_models()
  if model_name == "mlp":
    inputs = torch.from_numpy(np_batch["image"])
    y = torch.from_numpy(np_batch["y"])
    tasks = [f"task{k}" for k in range(num_tasks)]
    targets = {t: y[:, k].contiguous() for k, t in enumerate(tasks)}
    loss_fns = dict.fromkeys(tasks, F.mse_loss)
    return mlp_encoder, lambda: mlp_decoders(num_tasks), inputs, targets, \
        loss_fns
  inputs = torch.from_numpy(np_batch["image"]).permute(0, 3, 1, 2).contiguous()
  targets = {
      "segmentation": torch.from_numpy(np_batch["segmentation"]).long(),
      "depth": torch.from_numpy(np_batch["depth"]).permute(0, 3, 1, 2)
               .contiguous(),
      "normal": torch.from_numpy(np_batch["normal"]).permute(0, 3, 1, 2)
                .contiguous(),
      "count": torch.from_numpy(np_batch["count"]).long(),
  }

  def normal_loss(pred, gt):
    return 1.0 - (pred * gt).sum(dim=1).mean()

  loss_fns = {"segmentation": lambda p, t: F.cross_entropy(p, t,
                                                           ignore_index=-1),
              "depth": F.l1_loss, "normal": normal_loss,
              "count": F.cross_entropy}
  return conv_encoder, conv_decoders, inputs, targets, loss_fns


def split_batch(np_batch, parts: int):
  """``parts`` interleaved parts of a batch (example i in part i mod parts),
  as mtl_jax's train step splits it for SDMGrad and MoDo."""
  return [{k: np.asarray(v)[i::parts] for k, v in np_batch.items()}
          for i in range(parts)]


def make_torch_runner(hps, weighting_cls, method, model_name, num_tasks,
                      np_batch, seed=0, kwargs=None, rep_grad=False, parts=1,
                      epoch=2, set_to_none=True):
  """A LibMTL model (HPS + ``weighting_cls``) and its step; ``kwargs`` go to
  ``model.backward`` (default: :data:`LIBMTL_KWARGS` of ``method``).

  ``rep_grad``: LibMTL's representation-gradient mode (GradDrop needs it);
  ``parts``: forward passes a step, each on one interleaved part of
  ``np_batch`` (3 for SDMGrad and MoDo); ``epoch``: ``model.epoch`` (2: past
  DWA's and GradNorm's warm-up). FAMO (a class with ``update_w``) also gets
  its update after each step.
  """
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  encoder, decoders, inputs, targets, loss_fns = torch_problem(
      model_name, num_tasks, np_batch)

  class MTLmodel(hps, weighting_cls):  # what LibMTL's Trainer builds

    def __init__(self):
      super().__init__(task_name=list(loss_fns), encoder_class=encoder,
                       decoders=decoders(), rep_grad=rep_grad,
                       multi_input=False, device=torch.device("cpu"))
      self.init_param()

  model = MTLmodel()
  model.train()
  model.epoch = epoch  # DWA: past its two warm-up epochs, the ratio rule runs
  model.train_loss_buffer = np.ones((num_tasks, 3))
  optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
  split = None
  if parts > 1:
    split = [torch_problem(model_name, num_tasks, part)[2:4]
             for part in split_batch(np_batch, parts)]
  return TorchRunner(model, optimizer, inputs, targets, loss_fns,
                     LIBMTL_KWARGS.get(method, {}) if kwargs is None
                     else kwargs, parts=split,
                     famo=hasattr(weighting_cls, "update_w"),
                     set_to_none=set_to_none)


class ScalarizerRunner:
  """n TorchJD steps with a scalarizer: forward, ``scalarizer(losses)``,
  ``backward``, Adam; FAMO also recomputes the losses of the same batch
  after the step (no gradient) and calls ``scalarizer.update``, as its
  docstring does."""

  def __init__(self, encoder, decoders, inputs, targets, loss_fns,
               scalarizer):
    import torch  # pylint: disable=g-import-not-at-top
    self.encoder, self.decoders = encoder, decoders
    self.inputs, self.targets, self.loss_fns = inputs, targets, loss_fns
    self.scalarizer = scalarizer
    self.task_names = list(loss_fns)
    params = list(encoder.parameters()) + list(decoders.parameters())
    self.optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)
    self.update = getattr(scalarizer, "update", None)

  def losses(self):
    import torch  # pylint: disable=g-import-not-at-top
    rep = self.encoder(self.inputs)
    return torch.stack([self.loss_fns[t](self.decoders[t](rep),
                                         self.targets[t])
                        for t in self.task_names])

  def __call__(self, n: int) -> None:
    import torch  # pylint: disable=g-import-not-at-top
    for _ in range(n):
      loss = self.scalarizer(self.losses())
      self.optimizer.zero_grad()
      loss.backward()
      self.optimizer.step()
      if self.update is not None:
        with torch.no_grad():
          self.update(self.losses())


def make_scalarizer_runner(method, model_name, num_tasks, np_batch, seed=0):
  import torch  # pylint: disable=g-import-not-at-top
  import torchjd.scalarization  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  encoder, decoders, inputs, targets, loss_fns = torch_problem(
      model_name, num_tasks, np_batch)
  name, kwargs = TORCHJD_SCALARIZERS[method]
  if name == "FAMO":
    kwargs = dict(kwargs, shape=num_tasks)
  scalarizer = getattr(torchjd.scalarization, name)(**kwargs)
  encoder, decoders = encoder(), decoders()
  encoder.train()
  decoders.train()
  return ScalarizerRunner(encoder, decoders, inputs, targets, loss_fns,
                          scalarizer)


# ---------------------------------------------------------------- driver

def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cases", nargs="*", default=list(CASES),
                      choices=list(CASES))
  parser.add_argument("--methods", nargs="*",
                      default=list(LIBMTL_METHODS) + [
                          "uw_so", "famo", "stch", "stch_stateless"])
  parser.add_argument("--libmtl-src", type=pathlib.Path, default=None,
                      help="the LibMTL/ package folder of a LibMTL source "
                      "checkout (GitHub main): FAMO and STCH from there")
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--threads", type=int, default=1,
                      help="1: one thread for both frameworks; N > 1: "
                      "torch.set_num_threads(N) and XLA's default pool")
  parser.add_argument("--json", type=pathlib.Path, default=None)
  return parser.parse_args(argv)


def peers_of(method, args, hps, abs_weighting, classes, src, model_name,
             num_tasks, np_batch):
  """``[(row, peer label, builder)]`` of ``method``: LibMTL 1.1.5, the
  authors' UW-SO, TorchJD's scalarizer, LibMTL's source tree (``src``:
  ``(HPS, {method: class}, commit)`` or None)."""
  out = []
  if method in classes:
    out.append((method, f"LibMTL 1.1.5 {LIBMTL_METHODS[method]}",
                lambda: make_torch_runner(hps, classes[method], method,
                                          model_name, num_tasks, np_batch)))
  if method == "uw_so":
    out.append((method, "authors' UW-SO",
                lambda: make_torch_runner(hps, authors_uw_so(abs_weighting),
                                          method, model_name, num_tasks,
                                          np_batch)))
  if method in TORCHJD_SCALARIZERS and importlib.util.find_spec("torchjd"):
    version = importlib.metadata.version("torchjd")
    out.append((method, f"TorchJD {version} "
                f"{TORCHJD_SCALARIZERS[method][0]}",
                lambda: make_scalarizer_runner(method, model_name, num_tasks,
                                               np_batch)))
  if src is not None and method in src[1]:
    cls_name, kwargs, epoch = LIBMTL_SOURCE_METHODS[method]

    def build():
      runner = make_torch_runner(src[0], src[1][method], method, model_name,
                                 num_tasks, np_batch, kwargs=kwargs,
                                 epoch=epoch, set_to_none=False)
      if method == "stch":  # the nadir epoch (4), then past it
        runner.model.epoch = kwargs["STCH_warmup_epoch"]
        runner(1)
        runner.model.epoch = epoch
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the nadir
          runner(1)
      return runner

    row = method if not out else f"{method} vs LibMTL main"
    out.append((row, f"LibMTL main ({src[2]}) {cls_name}", build))
  return out


def run_case(case, args, hps, abs_weighting, classes, src, notes):
  model_name, num_tasks, batch_size = CASES[case]
  if model_name == "mlp":
    model, np_batch, task_losses = _common.mlp_problem(num_tasks, batch_size)
  else:
    model, np_batch, task_losses = _common.digit_problem(batch_size)
  runners, rows_of = {}, []
  for method in args.methods:
    runners[("mtl_jax", method)] = _common.JaxRunner(*_common.jit_step(
        model, np_batch, task_losses,
        _common.make_weighting(method, num_tasks), num_tasks,
        learning_rate=LEARNING_RATE))
    peers = peers_of(method, args, hps, abs_weighting, classes, src,
                     model_name, num_tasks, np_batch)
    if not peers:
      notes.append(
          f"{case} {method}: no PyTorch peer here (not in LibMTL 1.1.5"
          + ("" if method in TORCHJD_SCALARIZERS else " nor in TorchJD")
          + ("; LibMTL's GitHub main has it: pass --libmtl-src"
             if method in LIBMTL_SOURCE_METHODS and src is None else "")
          + "); row left out")
    for row, label, build in peers:
      try:  # one step now: a peer that fails is left out, with the reason
        runner = build()
        runner(1)
        runners[("torch", row)] = runner
        rows_of.append((row, method, label))
      except Exception as e:
        notes.append(f"{case} {row}: {label} fails ({type(e).__name__}: "
                     f"{str(e)[:160]}); row left out")
  times = _common.interleaved(runners, repeats=args.repeats, steps=args.steps)
  rows, result = [], {}
  for row, method, label in rows_of:
    jax_t, torch_t = times[("mtl_jax", method)], times[("torch", row)]
    speedups = [t / j for t, j in zip(torch_t, jax_t)]
    lo, hi = _common.quartiles(speedups)
    speedup = _common.median(speedups)
    rows.append((method, label, f"{1 / _common.median(jax_t):.1f}",
                 f"{1 / _common.median(torch_t):.1f}", f"{speedup:.2f}x",
                 f"{lo:.2f} .. {hi:.2f}"))
    result[row] = {"mtl_jax_steps_per_s": 1 / _common.median(jax_t),
                   "torch_steps_per_s": 1 / _common.median(torch_t),
                   "speedup": speedup, "speedup_iqr": [lo, hi],
                   "peer": label}
  what = ("MLPTrunk 250 -> 4 x 100, heads of 100" if model_name == "mlp"
          else "DigitSceneNet (8, 16, 32), 32x32x3")
  print(f"\n## {case}: {what}, {num_tasks} tasks, batch {batch_size}, Adam")
  print(_common.markdown_table(
      ("method", "PyTorch peer", "mtl_jax steps/s", "PyTorch steps/s",
       "speed-up (median)", "speed-up IQR"), rows))
  sys.stdout.flush()
  return result


def main(argv=None) -> int:
  args = parse_args(argv)
  missing = missing_requirements()
  if missing:
    print("vs_pytorch.py needs the `bench` extra (pip install -e .[bench]); "
          "missing:\n  " + "\n  ".join(missing), file=sys.stderr)
    return 2
  if args.threads == 1:
    if "jax" in sys.modules:
      raise RuntimeError("XLA_FLAGS must be set before jax is imported")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        " intra_op_parallelism_threads=1").strip()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  hps, abs_weighting, classes = load_libmtl(
      {m: c for m, c in LIBMTL_METHODS.items() if m in args.methods})
  src = None
  if args.libmtl_src is not None:
    wanted = {m: LIBMTL_SOURCE_METHODS[m][0] for m in args.methods
              if m in LIBMTL_SOURCE_METHODS}
    src_hps, _, src_classes = load_libmtl_source(args.libmtl_src, wanted)
    src = (src_hps, src_classes, libmtl_source_commit(args.libmtl_src))
  print("# mtl_jax vs LibMTL 1.1.5 (PyTorch) on CPU: training steps per "
        "second" + ("; FAMO and STCH also vs TorchJD's scalarizers"
                    if {"famo", "stch_stateless"} & set(args.methods) else "")
        + (f"; LibMTL main ({src[2]}) from {args.libmtl_src}"
           if src is not None else ""))
  print(f"# {_common.machine_line()}")
  xla_threads = "1 (eigen pool off)" if args.threads == 1 else "default pool"
  print(f"# torch {torch.__version__}, torch.set_num_threads({args.threads}); "
        f"XLA threads: {xla_threads}; "
        f"{args.repeats} interleaved repeats x {args.steps} steps; speed-up = "
        "median over repeats of t(PyTorch) / t(mtl_jax)")
  notes = []
  results = {case: run_case(case, args, hps, abs_weighting, classes, src,
                            notes)
             for case in args.cases}
  for note in notes:
    print(f"# {note}")
  if args.json is not None:
    args.json.write_text(json.dumps(results, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
