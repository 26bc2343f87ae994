"""Solver scaling: every Gramian method from K = 2 to 512 tasks, against TorchJD.

Not a test. For each K, one random Jacobian ``J`` of ``K x P`` (``P = 2000``)
whose rows conflict (see :func:`gramian`) gives the Gramian ``G = J J^T``. Each method
gets the same ``G``:

* ours: the method's ``apply`` under ``jax.jit`` (state from ``init``),
  compiled once per K (the compile time is reported on its own), then the
  median wall time of ``--repeats`` calls with ``block_until_ready``;
* TorchJD: its ``*Weighting`` of the same name on the same ``G`` (a torch
  tensor), with ``torch.set_num_threads(1)`` as its CPU users run it, the
  median of the same number of calls.

Accuracy: each library's float32 weights against a float64 reference, as
the error of the update direction ``d = J^T w`` relative to the RMS norm of
the task gradients: ``||J^T (w - w_ref)|| / sqrt(tr(G) / K)``, computed
from ``G`` in float64. The direction, not the weights: MGDA's minimum-norm
point is unique but its weights are not when ``G`` is (nearly) singular; and
a task gradient's norm, not ``||d||``, because MGDA's ``d`` is nearly zero
at large K. The reference is TorchJD's
weighting in float64 where TorchJD calls an exact solver (quadprog for UPGrad
and DualProj, cvxpy for CAGrad, closed forms for IMTL-G and Aligned-MTL), and
ours in float64 for the methods TorchJD solves iteratively (MGDA's Frank-Wolfe
with ``epsilon=1e-3``, FairGrad) or not at all (Nash-MTL, ConFIG). A column
says which.

Without TorchJD (``pip install ".[bench]"``) only our columns are filled.
A library whose call takes longer than ``--cap`` seconds at some K is not run
at larger K (marked ``>cap``). Both libraries run in this one process, one
after the other for each (method, K), so the ratio is side by side.

Usage::

  python benchmarks/solver_scaling.py [--ks 2 4 8 ... 512] [--methods upgrad]
      [--repeats 15] [--cap 20] [--json out.json] [--plot out.png]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

HAVE_TORCHJD = importlib.util.find_spec("torchjd") is not None
KS = (2, 4, 8, 16, 32, 64, 128, 256, 512)
NUM_PARAMS = 2000
# our name: (our hparams, TorchJD weighting, its kwargs, float64 reference)
METHODS = {
    "upgrad": ({}, "UPGradWeighting", {}, "torchjd"),
    "dualproj": ({}, "DualProjWeighting", {}, "torchjd"),
    "mgda": ({}, "MGDAWeighting", {}, "ours"),
    "cagrad": ({"c": 0.4}, "CAGradWeighting", {"c": 0.4}, "torchjd"),
    "fairgrad": ({"alpha": 2.0}, "FairGradWeighting", {"alpha": 2.0}, "ours"),
    "imtl_g": ({}, "IMTLGWeighting", {}, "torchjd"),
    "aligned_mtl": ({}, "AlignedMTLWeighting", {}, "torchjd"),
    "nash_mtl": ({}, None, {}, "ours"),
    "config": ({}, None, {}, "ours"),
    "pcgrad": ({}, "PCGradWeighting", {}, None),   # random order: no reference
    "gradvac": ({}, "GradVacWeighting", {}, None),
}


def gramian(k: int, seed: int = 0, kind: str = "conflicting") -> np.ndarray:
  """``J J^T`` in float64 of a seeded ``k x P`` Jacobian whose rows share a
  few directions, so that tasks conflict as they do in training: ``J = C B
  + 0.1 N`` with ``C`` of ``k x r`` and ``B`` of ``r x P`` Gaussian, ``r =
  min(k, 8)``, and ``N`` Gaussian noise (a Gaussian ``J`` alone has nearly
  orthogonal rows when ``P >> K``: no conflict, nothing to solve; it is
  ``kind="gaussian"``)."""
  rng = np.random.default_rng(seed + k)
  if kind == "gaussian":  # the measurement: J Gaussian, K x 2000
    jac = rng.standard_normal((k, NUM_PARAMS)).astype(np.float32)
    return (jac @ jac.T).astype(np.float64)
  rank = min(k, 8)
  jac = (rng.standard_normal((k, rank)) @ rng.standard_normal(
      (rank, NUM_PARAMS)) + 0.1 * rng.standard_normal((k, NUM_PARAMS)))
  jac /= np.sqrt(NUM_PARAMS * rank)
  return jac @ jac.T


def ours(name: str, k: int, gram64: np.ndarray, repeats: int, cap: float,
         dtype=np.float32) -> dict:
  """Compile time, median call time and weights of our method ``name``."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  import mtl_jax  # pylint: disable=g-import-not-at-top
  method = mtl_jax.get(name, **METHODS[name][0])
  params, state = method.init(k, key=jax.random.PRNGKey(0))
  gram = jnp.asarray(gram64, dtype)
  losses = jnp.ones((k,), dtype)
  apply = jax.jit(lambda g: method.apply(params, state, g,
                                         losses=losses).weights)
  start = time.perf_counter()
  weights = apply(gram).block_until_ready()
  compile_s = time.perf_counter() - start
  times = _timed(lambda: apply(gram).block_until_ready(), repeats, cap)
  return {"compile_s": compile_s, "times": times,
          "weights": np.asarray(weights, np.float64)}


def torchjd(name: str, gram64: np.ndarray, repeats: int, cap: float,
            dtype: str = "float32") -> dict | None:
  """Median call time and weights of TorchJD's weighting (None if it has
  none)."""
  cls_name, kwargs = METHODS[name][1], METHODS[name][2]
  if cls_name is None or not HAVE_TORCHJD:
    return None
  import torch  # pylint: disable=g-import-not-at-top
  from torchjd import aggregation  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  weighting = getattr(aggregation, cls_name)(**kwargs)
  gram = torch.tensor(gram64, dtype=getattr(torch, dtype))
  with torch.no_grad():
    start = time.perf_counter()
    weights = weighting(gram)
    first_s = time.perf_counter() - start
    times = [first_s] if first_s > cap else _timed(
        lambda: weighting(gram), repeats, cap)
  return {"times": times, "weights": weights.double().numpy()}


def _timed(call, repeats: int, cap: float) -> list[float]:
  """Wall times of up to ``repeats`` calls, fewer when one exceeds ``cap``
  / ``repeats`` (at least 3 calls)."""
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
    if i >= 2 and sum(times) > cap:
      break
  return times


def reference(name: str, k: int, gram64: np.ndarray) -> np.ndarray | None:
  kind = METHODS[name][3]
  if kind == "torchjd" and HAVE_TORCHJD:
    return torchjd(name, gram64, 1, 0.0, "float64")["weights"]
  if kind is not None:
    import jax  # pylint: disable=g-import-not-at-top
    with jax.enable_x64(True):
      return ours(name, k, gram64, 1, 0.0, np.float64)["weights"]
  return None


def rel_error(w: np.ndarray, ref: np.ndarray | None,
              gram64: np.ndarray) -> float | None:
  """``||J^T (w - ref)|| / sqrt(tr(G) / K)`` from the float64 Gramian."""
  if ref is None:
    return None
  delta = w - ref
  num = max(float(delta @ gram64 @ delta), 0.0)
  den = max(float(np.trace(gram64)) / len(w), 1e-300)
  return float(np.sqrt(num / den))


def run(methods, ks, repeats: int, cap: float,
        kind: str = "conflicting") -> list[dict]:
  rows = []
  skip = set()  # (library, method) past the cap
  for name in methods:
    for k in ks:
      gram64 = gramian(k, kind=kind)
      row = {"method": name, "k": k}
      ref = reference(name, k, gram64)
      for lib in ("ours", "torchjd"):
        if (lib, name) in skip:
          row[lib] = "skipped"
          continue
        out = (ours(name, k, gram64, repeats, cap) if lib == "ours"
               else torchjd(name, gram64, repeats, cap))
        if out is None:
          row[lib] = None
          continue
        row[lib] = {"median_ms": 1e3 * _common.median(out["times"]),
                    "calls": len(out["times"]),
                    "error": rel_error(out["weights"], ref, gram64),
                    **({"compile_s": out["compile_s"]}
                       if "compile_s" in out else {})}
        if _common.median(out["times"]) > cap:
          skip.add((lib, name))
      print(json.dumps(row), flush=True)
      rows.append(row)
  return rows


def table(rows: list[dict]) -> str:
  out = []
  for row in rows:
    cells = [row["method"], row["k"]]
    for lib in ("ours", "torchjd"):
      r = row[lib]
      if r is None:
        cells += ["–", "–"]
      elif r == "skipped":
        cells += ["past the cap", "–"]
      else:
        err = "–" if r["error"] is None else f"{r['error']:.1e}"
        cells += [f"{r['median_ms']:.3g}", err]
    ours_row, theirs = row["ours"], row["torchjd"]
    ratio = (f"{theirs['median_ms'] / ours_row['median_ms']:.2g}x"
             if isinstance(ours_row, dict) and isinstance(theirs, dict)
             else "–")
    compile_s = (f"{ours_row['compile_s']:.2f}" if isinstance(ours_row, dict)
                 else "–")
    cells += [ratio, compile_s]
    out.append(cells)
  return _common.markdown_table(
      ["method", "K", "ours ms", "ours error of d", "TorchJD ms",
       "TorchJD error of d", "TorchJD / ours", "our compile s"], out)


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = sorted({r["method"] for r in rows})
  colors = {n: plt.cm.tab20(i % 20) for i, n in enumerate(names)}
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for ax, lib in zip(axes, ("ours", "torchjd")):
    for name in names:
      pts = [(r["k"], r[lib]["median_ms"]) for r in rows
             if r["method"] == name and isinstance(r[lib], dict)]
      if pts:
        ax.loglog(*zip(*pts), marker="o", ms=3, label=name,
                  color=colors[name])
    ks = np.array(sorted({r["k"] for r in rows}), float)
    ax.loglog(ks, 1e-4 * ks ** 3, "k:", lw=1, label="K³ (slope)")
    ax.set_title({"ours": "mtl_jax (jit, CPU)",
                  "torchjd": "TorchJD 0.18 (1 thread)"}[lib])
    ax.set_xlabel("K (tasks)")
    ax.grid(True, which="both", alpha=0.3)
  axes[0].set_ylabel("ms per call (median)")
  axes[0].legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ks", type=int, nargs="+", default=list(KS))
  parser.add_argument("--methods", nargs="+", default=list(METHODS))
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--cap", type=float, default=20.0,
                      help="seconds: a library slower than this per call at "
                      "some K is not run at larger K")
  parser.add_argument("--jacobian", choices=("conflicting", "gaussian"),
                      default="conflicting",
                      help="rows sharing a few directions (default), or a "
                      "plain Gaussian J (nearly orthogonal rows)")
  parser.add_argument("--json", default=None)
  parser.add_argument("--plot", default=None)
  args = parser.parse_args()
  unknown = sorted(set(args.methods) - set(METHODS))
  if unknown:
    parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
  print(_common.machine_line(), flush=True)
  rows = run(args.methods, args.ks, args.repeats, args.cap, args.jacobian)
  print(table(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": _common.machine_line(), "jacobian": args.jacobian,
                 "rows": rows}, f, indent=1)
  if args.plot:
    plot(rows, args.plot)


if __name__ == "__main__":
  main()
