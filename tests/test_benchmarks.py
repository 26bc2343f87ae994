"""Smoke runs of the benchmark scripts with tiny sizes (not measurements)."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
HAVE_BENCH_EXTRA = all(importlib.util.find_spec(m) is not None
                       for m in ("torch", "LibMTL"))
HAVE_GRADIENT_BENCH = HAVE_BENCH_EXTRA and importlib.util.find_spec(
    "torchjd") is not None


def _hidden(*packages):
  """Runs the script in argv[1] as if ``packages`` were not installed."""
  return (
      "import importlib.util as u, runpy, sys\n"
      "find = u.find_spec\n"
      "u.find_spec = lambda name, *a: (None if name.split('.')[0] in "
      f"{packages!r} else find(name, *a))\n"
      "sys.argv = [sys.argv[1]]\n"
      "runpy.run_path(sys.argv[0], run_name='__main__')\n")


# Runs benchmarks/vs_pytorch.py as if torch and LibMTL were not installed.
_HIDDEN = _hidden("torch", "LibMTL")


# XLA flag for the smoke runs of the JAX benchmarks: their time is nearly all
# compilation (of the train steps, the Jacobian step, a ResNet's
# initialisers), which LLVM's lowest optimisation level roughly halves; the
# HLO, hence the collectives the scaling benchmark counts, is the same.
_FAST_COMPILE = "--xla_backend_optimization_level=0"


def _run(args, timeout=240, xla_flags="", env_extra=None, **kwargs):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
  if xla_flags:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False, **kwargs)


def test_vs_pytorch_without_the_bench_extra_says_what_is_missing():
  out = _run(["-c", _HIDDEN, str(BENCH / "vs_pytorch.py")], timeout=60)
  assert out.returncode != 0
  assert "missing" in out.stderr
  assert "torch" in out.stderr and "LibMTL" in out.stderr
  assert "bench" in out.stderr  # names the extra that installs them


@pytest.mark.skipif(HAVE_BENCH_EXTRA, reason="torch and LibMTL are installed")
def test_vs_pytorch_exits_non_zero_here():
  out = _run([str(BENCH / "vs_pytorch.py")], timeout=60)
  assert out.returncode != 0 and "missing" in out.stderr


@pytest.mark.slow
def test_weighting_overhead_smoke(tmp_path):
  path = tmp_path / "ratios.json"
  out = _run([str(BENCH / "weighting_overhead.py"), "--model", "mlp",
              "--num-tasks", "3", "--batch-size", "8", "--repeats", "2",
              "--steps", "1", "--methods", "uw_so", "gls", "famo", "--json",
              str(path)], xla_flags=_FAST_COMPILE)
  assert out.returncode == 0, out.stderr[-2000:]
  ratios = json.loads(path.read_text())
  # FAMO brings the reference row of its extra forward pass.
  assert set(ratios) == {"ew", "uw_so", "gls", "famo", "forward (reference)"}
  assert ratios["ew"] == 1.0 and all(r > 0 for r in ratios.values())
  assert "| uw_so |" in out.stdout and "ew (control)" in out.stdout
  assert "| forward (reference) |" in out.stdout


@pytest.mark.slow
def test_scaling_collectives_smoke(tmp_path):
  path = tmp_path / "scaling.json"
  out = _run([str(BENCH / "scaling.py"), "--devices", "1", "2", "--models",
              "mlp", "--methods", "ew", "gls", "--steps", "1", "--repeats",
              "1", "--json", str(path)], xla_flags=_FAST_COMPILE)
  assert out.returncode == 0, out.stderr[-2000:]
  rows = json.loads(path.read_text())
  assert [(r["devices"], r["method"]) for r in rows] == [
      (1, "ew"), (1, "gls"), (2, "ew"), (2, "gls")]
  for row in rows:
    if row["devices"] > 1:  # gradients once, the K losses once
      assert row["all_reduce_elements"] == row["expected_elements"], row
      assert row["other_collectives"] == [] and row["host_transfers"] == 0
  assert "gradients once" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_BENCH_EXTRA, reason="needs the bench extra")
def test_vs_pytorch_smoke(tmp_path):
  path = tmp_path / "vs.json"
  out = _run([str(BENCH / "vs_pytorch.py"), "--cases", "mlp3", "--methods",
              "ew", "uw", "uw_so", "--repeats", "1", "--steps", "1",
              "--json", str(path)], xla_flags=_FAST_COMPILE)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(path.read_text())["mlp3"]
  assert set(result) == {"ew", "uw", "uw_so"}
  assert all(r["speedup"] > 0 for r in result.values())


def test_vs_pytorch_gradient_without_the_bench_extra_says_what_is_missing():
  out = _run(["-c", _hidden("torch", "LibMTL", "torchjd"),
              str(BENCH / "vs_pytorch_gradient.py")], timeout=60)
  assert out.returncode != 0
  assert "missing" in out.stderr
  for package in ("torch", "LibMTL", "torchjd", "bench"):
    assert package in out.stderr


@pytest.mark.skipif(HAVE_GRADIENT_BENCH,
                    reason="torch, LibMTL and torchjd are installed")
def test_vs_pytorch_gradient_exits_non_zero_here():
  out = _run([str(BENCH / "vs_pytorch_gradient.py")], timeout=60)
  assert out.returncode != 0 and "missing" in out.stderr


@pytest.mark.slow
def test_gradient_overhead_smoke(tmp_path):
  path = tmp_path / "gradient.json"
  out = _run([str(BENCH / "gradient_overhead.py"), "--model", "mlp",
              "--num-tasks", "3", "--batch-size", "8", "--repeats", "2",
              "--steps", "1", "--methods", "mgda", "--modes", "params",
              "features", "--feature-methods", "--chunk-sizes", "1",
              "--chunk-methods", "--json", str(path)],
             xla_flags=_FAST_COMPILE)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(path.read_text())
  assert set(result) == {"ew", "ew (control)", "jacobian (w = 1)", "mgda"}
  assert set(result["jacobian (w = 1)"]) == {"params", "features",
                                             "params, chunk 1"}
  assert set(result["mgda"]) == {"params"}  # no feature or chunk methods
  assert result["ew"]["params"]["ratio"] == 1.0
  assert result["mgda"]["params"]["ratio"] > 0
  assert "vs_jacobian" in result["mgda"]["params"]
  assert "| mgda |" in out.stdout
  assert "| jacobian (w = 1) [features] |" in out.stdout
  assert "| jacobian (w = 1) [chunk 1] |" in out.stdout


@pytest.mark.slow
def test_gradient_overhead_jacobian_and_split_methods_smoke(tmp_path):
  # MoCo keeps (K, P) buffers sized from task_params at create_train_state;
  # SDMGrad splits the batch in 3, so batch 8 is cut to 6, with EW and the
  # w = 1 step on those 6 as its references.
  path = tmp_path / "gradient.json"
  out = _run([str(BENCH / "gradient_overhead.py"), "--model", "mlp",
              "--num-tasks", "3", "--batch-size", "8", "--repeats", "2",
              "--steps", "1", "--methods", "moco", "sdmgrad", "--modes",
              "params", "--json", str(path)],
             xla_flags=_FAST_COMPILE)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(path.read_text())
  assert set(result) == {"ew", "ew (control)", "ew (batch 6)",
                         "jacobian (w = 1)", "jacobian (w = 1) (batch 6)",
                         "moco", "sdmgrad (batch 6)"}
  assert result["moco"]["params"]["vs_jacobian"] > 0
  split = result["sdmgrad (batch 6)"]["params"]
  assert split["batch_size"] == 6 and split["vs_jacobian"] > 0
  assert split["ratio_vs_ew_same_batch"] > 0
  assert "| sdmgrad (batch 6) |" in out.stdout
  assert "first 6 examples" in out.stdout


@pytest.mark.slow
def test_jacobian_memory_smoke(tmp_path):
  path = tmp_path / "memory.json"
  # 4 tasks instead of CelebA's 40 and two chunks of 2: the chunked path and
  # a real step, at a fraction of the compile time.
  out = _run([str(BENCH / "jacobian_memory.py"), "--no-ew", "--chunks", "2",
              "--run", "2", "--steps", "1", "--method", "mgda", "--width",
              "2", "--blocks", "1", "--image-size", "8", "--batch-size", "2",
              "--num-tasks", "4", "--json", str(path)],
             xla_flags=_FAST_COMPILE)
  assert out.returncode == 0, out.stderr[-2000:]
  (row,) = json.loads(path.read_text())
  assert row["setting"] == "2" and row["finite"]
  assert row["temp"] > 0 and row["estimate"] > 0
  assert row["peak_rss"] >= row["peak_rss_compile"] > 0
  assert "| mgda, chunk_size=2 |" in out.stdout


# Runs the script in argv[1] with the modules the lent GPU machine lacks
# (and what imports them: mtl_jax.data, experiments) made unimportable.
_DEVICE_IMAGE = (
    "import runpy, sys\n"
    "class Lacks:\n"
    "  def find_spec(self, name, path=None, target=None):\n"
    "    if (name.split('.')[0] in ('grain', 'tensorflow_datasets',\n"
    "        'array_record', 'ml_collections', 'experiments')\n"
    "        or name.startswith('mtl_jax.data')):\n"
    "      raise ModuleNotFoundError(f'not on the device image: {name}')\n"
    "sys.meta_path.insert(0, Lacks())\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n")


@pytest.mark.slow
def test_qm9_epoch_quick_smoke(tmp_path):
  path = tmp_path / "qm9.json"
  out = _run(["-c", _DEVICE_IMAGE, str(BENCH / "qm9_epoch.py"), "--quick",
              "--steps", "2", "--json", str(path)])
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(path.read_text())
  assert result["setup"]["generated_molecules"]
  rows = result["rows"]
  assert set(rows) == {"eval forward (batch 24)", "ew (train step)",
                       "nash_mtl (params mode, train step)"}
  assert all(r["ms"] > 0 and r["compile_s"] > 0 for r in rows.values())
  ew = rows["ew (train step)"]
  assert ew["run_h"] == pytest.approx(300 * ew["epoch_min"] / 60, rel=1e-2)
  assert "GENERATED" in out.stdout and "PROJECTION" in out.stdout
  assert "| nash_mtl (params mode, train step) |" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_GRADIENT_BENCH,
                    reason="needs the bench extra (torch, LibMTL, torchjd)")
def test_vs_pytorch_gradient_smoke(tmp_path):
  path = tmp_path / "vs_gradient.json"
  out = _run([str(BENCH / "vs_pytorch_gradient.py"), "--cases", "mlp3",
              "--methods", "mgda", "--no-jacobian-row", "--chunk-sizes", "1",
              "--repeats", "1", "--steps", "1", "--json", str(path)],
             xla_flags=_FAST_COMPILE)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(path.read_text())["mlp3"]
  assert set(result) == {"mgda", "mgda [chunk 1]"}
  for row in result.values():
    assert row["speedup_vs_libmtl"] > 0 and row["speedup_vs_torchjd"] > 0
  assert result["mgda [chunk 1]"]["chunk_size"] == 1


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_GRADIENT_BENCH,
                    reason="needs the bench extra (torch, LibMTL, torchjd)")
def test_vs_pytorch_gradient_part2_smoke(tmp_path):
  # LibMTL's GradDrop (rep_grad=True) and GradNorm, TorchJD's GradDrop and
  # its three-batch SDMGrad loop; SDMGrad on the first 63 of 64 examples.
  path = tmp_path / "vs_gradient.json"
  out = _run([str(BENCH / "vs_pytorch_gradient.py"), "--cases", "mlp3",
              "--methods", "graddrop", "gradnorm", "sdmgrad",
              "--no-jacobian-row", "--repeats", "1", "--steps", "1",
              "--json", str(path)],
             xla_flags=_FAST_COMPILE)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(path.read_text())["mlp3"]
  assert set(result) == {"graddrop", "gradnorm", "sdmgrad (batch 63)"}
  assert result["graddrop"]["speedup_vs_libmtl"] > 0
  assert result["graddrop"]["speedup_vs_torchjd"] > 0
  assert result["gradnorm"]["speedup_vs_libmtl"] > 0
  assert "speedup_vs_torchjd" not in result["gradnorm"]  # not in TorchJD
  split = result["sdmgrad (batch 63)"]
  assert split["batch_size"] == 63 and split["speedup_vs_torchjd"] > 0
  assert "speedup_vs_libmtl" not in split  # LibMTL main only (--libmtl-src)
  assert "rep_grad=True" in out.stdout and "--libmtl-src" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_GRADIENT_BENCH,
                    reason="needs the bench extra (torch, LibMTL, torchjd)")
def test_vs_pytorch_famo_and_stch_smoke(tmp_path):
  path = tmp_path / "vs.json"
  out = _run([str(BENCH / "vs_pytorch.py"), "--cases", "mlp3", "--methods",
              "famo", "stch", "stch_stateless", "--repeats", "1", "--steps",
              "1", "--json", str(path)], xla_flags=_FAST_COMPILE)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(path.read_text())["mlp3"]
  # stch (LibMTL's form) has a peer only in LibMTL's GitHub main.
  assert set(result) == {"famo", "stch_stateless"}
  assert result["famo"]["peer"].startswith("TorchJD")
  assert all(r["speedup"] > 0 for r in result.values())
  assert "--libmtl-src" in out.stdout


@pytest.mark.skipif(not HAVE_BENCH_EXTRA, reason="needs torch and LibMTL")
def test_load_libmtl_source_keeps_the_tree_apart_from_the_release():
  # The installed release is itself a LibMTL package folder: loaded as a
  # source tree, its classes come from LibMTL_src and see the numpy shim.
  sys.path.insert(0, str(BENCH))
  try:
    import vs_pytorch  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(str(BENCH))
  root = pathlib.Path(next(iter(
      importlib.util.find_spec("LibMTL").submodule_search_locations)))
  hps, abs_weighting, classes = vs_pytorch.load_libmtl_source(
      root, {"ew": "EW"})
  assert hps.__module__ == "LibMTL_src.architecture.HPS"
  assert issubclass(classes["ew"], abs_weighting)
  assert abs_weighting.__module__ == "LibMTL_src.weighting.abstract_weighting"
  module = sys.modules["LibMTL_src.weighting.EW"]
  assert module.np.alltrue is module.np.all  # NumPy 2 dropped alltrue
  with pytest.raises(FileNotFoundError, match="package directory"):
    vs_pytorch.load_libmtl_source(root.parent, {"ew": "EW"})


HAVE_PYG = all(importlib.util.find_spec(m) is not None
               for m in ("torch", "torch_geometric"))


@pytest.mark.slow
def test_qm9_layout_smoke(tmp_path):
  # The test fixtures' molecules (no built dataset needed), a tiny network.
  path = tmp_path / "layout.json"
  out = _run([str(BENCH / "qm9_layout.py"), "--quick", "--fixtures",
              "--json", str(path)], xla_flags=_FAST_COMPILE,
             env_extra={"MTL_JAX_DATA_DIR": str(tmp_path / "data")})
  assert out.returncode == 0, out.stderr[-2000:]
  rows = json.loads(path.read_text())
  assert [(r["edges"], r["layout"]) for r in rows] == [
      ("complete", "dense"), ("complete", "edges"), ("bonded", "dense"),
      ("bonded", "edges")]
  for row in rows:
    assert row["ms_per_step"] > 0 and row["temp_size_in_bytes"] > 0
    if row["layout"] == "dense":
      assert row["dense_over_edges"] > 0
  assert "| complete | tiny (8/8) | dense |" in out.stdout


def test_qm9_vs_pytorch_without_torch_geometric_says_what_is_missing():
  out = _run(["-c", _hidden("torch", "torch_geometric"),
              str(BENCH / "qm9_vs_pytorch.py")], timeout=60)
  assert out.returncode != 0
  assert "missing" in out.stderr
  for package in ("torch", "torch-geometric", "bench"):
    assert package in out.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_PYG, reason="needs torch and torch-geometric "
                    "(the bench extra)")
def test_qm9_vs_pytorch_smoke(tmp_path):
  # Both cases (complete graphs in the dense layout, bonded ones as edge
  # lists), each checked against the PyTorch model on the same weights.
  path = tmp_path / "qm9_vs.json"
  out = _run([str(BENCH / "qm9_vs_pytorch.py"), "--quick", "--fixtures",
              "--threads", "1", "--json", str(path)],
             timeout=480, xla_flags=_FAST_COMPILE,
             env_extra={"MTL_JAX_DATA_DIR": str(tmp_path / "data")})
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(path.read_text())
  methods = ({"ew", "mgda"} if importlib.util.find_spec("torchjd") is not None
             else {"ew"})  # mgda's peer is TorchJD's
  for case in ("papers", "cpu"):
    assert set(result[case]) == methods
    for row in result[case].values():
      assert row["max_abs_output_difference"] < 1e-4
      assert row["mtl_jax_steps_per_s"] > 0
      assert row["ours_over_torch_1_threads"] > 0
  assert result["papers"]["ew"]["layout"] == "dense"
  assert result["cpu"]["ew"]["layout"] == "edges"
  assert "| ew |" in out.stdout


@pytest.mark.slow
def test_solver_scaling_smoke(tmp_path):
  out = tmp_path / "scaling.json"
  subprocess.run([sys.executable, str(BENCH / "solver_scaling.py"), "--ks",
                  "2", "5", "--methods", "upgrad", "pcgrad", "--repeats", "2",
                  "--json", str(out), "--plot", str(tmp_path / "s.png")],
                 check=True, cwd=ROOT, capture_output=True, timeout=600)
  rows = json.loads(out.read_text())["rows"]
  assert [(r["method"], r["k"]) for r in rows] == [
      ("upgrad", 2), ("upgrad", 5), ("pcgrad", 2), ("pcgrad", 5)]
  for r in rows:
    assert r["ours"]["median_ms"] > 0 and r["ours"]["calls"] == 2
  # UPGrad's float32 weights agree with the float64 reference.
  assert all(r["ours"]["error"] < 1e-4 for r in rows if r["method"] == "upgrad")
  assert (tmp_path / "s.png").stat().st_size > 0


@pytest.mark.slow
def test_large_k_training_smoke(tmp_path):
  out = tmp_path / "large_k.json"
  subprocess.run([sys.executable, str(BENCH / "large_k_training.py"),
                  "--tasks", "5", "--steps", "40", "--batch", "6", "--lr", "0.01",
                  "--methods", "ew", "upgrad", "sdmgrad", "--json", str(out)],
                 check=True, cwd=ROOT, capture_output=True, timeout=600)
  rows = json.loads(out.read_text())["rows"]
  assert [r["method"] for r in rows] == ["ew", "upgrad", "sdmgrad"]
  for r in rows:
    assert r["skipped"] == 0 and r["step_ms"] > 0
    assert r["last10"] < r["first10"]  # 40 steps of Adam lower the loss
