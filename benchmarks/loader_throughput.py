"""Input pipeline throughput: examples per second against Grain worker processes.

Not a test. Measures the loaders of :mod:`mtl_jax.data` on this machine:

* digit scenes (default 32x32, 4000 train scenes, generated into a temp dir),
* NYUv2 at full size (288x384) from a synthetic fixture of 32 examples in
  MTAN's layout, with and without the scale-crop/flip augmentation,
* the GradNorm synthetic regression (in memory, 10 tasks).

Usage::

  python benchmarks/loader_throughput.py [--workers 0 1 2] [--batches 50]

Prints one markdown table (paste it into docs/datasets.md, Loader throughput, with the date and
machine).
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mtl_jax.data import (
  digit_scenes,  # pylint: disable=g-import-not-at-top
  nyuv2,  # pylint: disable=g-import-not-at-top
  synthetic,  # pylint: disable=g-import-not-at-top
)


def write_nyuv2_fixture(root: pathlib.Path, num: int = 32) -> None:
  """Random arrays in MTAN's NYUv2 layout at full size (288x384)."""
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    for i in range(num):
      arrays = {"image": rng.random((288, 384, 3), dtype=np.float32),
                "label": rng.integers(-1, 13, (288, 384)).astype(np.float32),
                "depth": rng.uniform(0.5, 10, (288, 384, 1)).astype(np.float32),
                "normal": rng.normal(size=(288, 384, 3)).astype(np.float32)}
      for folder, x in arrays.items():
        (root / split / folder).mkdir(parents=True, exist_ok=True)
        np.save(root / split / folder / f"{i}.npy", x)


def measure(make: Callable[[int], object], workers: int, batches: int,
            batch_size: int) -> float:
  """Examples per second over ``batches`` batches after two warm-up batches."""
  it = iter(make(workers))
  for _ in range(2):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  elapsed = time.perf_counter() - start
  if hasattr(it, "close"):
    it.close()
  return batches * batch_size / elapsed


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--batches", type=int, default=50)
  args = parser.parse_args()
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="mtl_jax_bench_"))
  start = time.perf_counter()
  digit_scenes.generate(tmp / "cache")
  gen_s = time.perf_counter() - start
  write_nyuv2_fixture(tmp / "nyu")
  common = dict(shard_index=0, shard_count=1, num_epochs=None)
  loaders = {
      "digit scenes 32x32 (B=64)": (64, lambda w: digit_scenes.load(
          "train", batch_size=64, data_dir=tmp / "cache", worker_count=w, **common)),
      "NYUv2 288x384 (B=8)": (8, lambda w: nyuv2.load(
          tmp / "nyu", "train", batch_size=8, data_dir=tmp / "cache", worker_count=w,
          **common)),
      "NYUv2 288x384 + augment (B=8)": (8, lambda w: nyuv2.load(
          tmp / "nyu", "train", batch_size=8, data_dir=tmp / "cache", augment=True,
          worker_count=w, **common)),
      "synthetic K=10 (B=256)": (256, lambda w: synthetic.load(
          "train", batch_size=256, worker_count=w, **common)),
  }
  print(f"digit scenes generation (4000/500/500): {gen_s:.1f} s\n")
  print("| loader | " + " | ".join(f"workers={w}" for w in args.workers) + " |")
  print("|---|" + "---:|" * len(args.workers))
  for name, (batch_size, make) in loaders.items():
    rates = [measure(make, w, args.batches, batch_size) for w in args.workers]
    print(f"| {name} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |", flush=True)
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
