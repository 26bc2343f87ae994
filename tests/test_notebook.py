"""The notebooks execute top to bottom (nbclient, python3 kernel).

The quickstart (linen) runs as CI runs it: a handful of steps
(``MTL_JAX_NOTEBOOK_STEPS``), tiny digit scenes generated into a temporary
directory (``MTL_JAX_DATA_DIR``, ``MTL_JAX_NOTEBOOK_NUM_TRAIN``), the
repository root as working directory (so the notebook's first cell uses the
local checkout and installs nothing), XLA at its cheapest compile level. The
NNX quickstart runs the same way on its in-memory data. Both are committed
executed, with the outputs of one full run, so that they read on GitHub and on
the docs site without running.
"""
import os
import pathlib

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
NNX_NOTEBOOK = ROOT / "notebooks" / "nnx_quickstart.ipynb"


def _outputs(nb, output_type):
  return [out for cell in nb.cells if cell.cell_type == "code"
          for out in cell.get("outputs", []) if out.output_type == output_type]


def _execute(path):
  """Executes the notebook at ``path`` in memory, as CI runs it."""
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=120, kernel_name="python3",
      resources={"metadata": {"path": str(ROOT)}})
  client.execute()  # raises CellExecutionError on the first failing cell
  return nb


@pytest.mark.parametrize("path", [NOTEBOOK, NNX_NOTEBOOK], ids=["linen", "nnx"])
def test_notebook_is_colab_ready(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  first = nb.cells[1].source
  assert "google.colab" in first and "%pip install" in first
  assert nb.metadata["kernelspec"]["name"] == "python3"
  # Both are stored with the outputs of one full run, top to bottom (GitHub
  # and the docs site show them; nothing re-executes them there): every code
  # cell ran in order, none failed, and the run is the full one, not the
  # tests' shrunk one.
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
  assert not _outputs(nb, "error")
  text = "".join(out.get("text", "") for out in _outputs(nb, "stream"))
  images = [out for out in _outputs(nb, "display_data")
            if "image/png" in out.get("data", {})]
  if path == NOTEBOOK:
    assert "200 steps in" in text and "UW-SO weights:" in text
    assert len(images) >= 2  # the scenes and the weight curves
  else:
    assert "engine's first weights == the layer's: True" in text
    assert len(images) == 1  # the weight and loss curves


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("MTL_JAX_NOTEBOOK_STEPS", "3")
  monkeypatch.setenv("MTL_JAX_NOTEBOOK_NUM_TRAIN", "64")
  monkeypatch.setenv("MTL_JAX_DATA_DIR", str(tmp_path / "data"))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  # One CPU device, as on Colab (not the suite's fake devices), and LLVM's
  # cheapest optimisation level: compiling DigitSceneNet's init (ten
  # truncated-normal draws) and train step drops from about 35 s to 5 s on
  # 2 cores, and three steps do not need fast code.
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  nb = _execute(NOTEBOOK)
  text = "".join(out.get("text", "") for out in _outputs(nb, "stream"))
  assert "3 steps in" in text
  assert "UW-SO weights:" in text
  images = [out for out in _outputs(nb, "display_data")
            if "image/png" in out.get("data", {})]
  assert len(images) >= 2  # the scenes and the weight curves
  assert not (ROOT / "notebooks" / "data").exists()
  assert os.listdir(tmp_path / "data")  # the scenes went to the temp dir


@pytest.mark.slow
def test_nnx_notebook_executes(monkeypatch):
  monkeypatch.setenv("MTL_JAX_NOTEBOOK_STEPS", "20")
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  nb = _execute(NNX_NOTEBOOK)
  text = "".join(out.get("text", "") for out in _outputs(nb, "stream"))
  assert "NNX loop: 20 steps in" in text and "engine: 20 steps in" in text
  assert "engine's first weights == the layer's: True" in text
  assert "UW weights" in text
  images = [out for out in _outputs(nb, "display_data")
            if "image/png" in out.get("data", {})]
  assert len(images) == 1  # the weight and loss curves
