"""The README's examples run as written."""
import os
import re

import pytest

from mtl_jax import train

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _first_python_block(section: str) -> str:
  with open(DOC) as f:
    text = f.read()
  body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
  return re.search(r"```python\n(.*?)```", body, re.S).group(1)


def test_training_loop_example_runs(tmp_path, monkeypatch, capsys):
  code = _first_python_block("Training loop")
  assert "/tmp/mtl_run" in code
  code = code.replace("/tmp/mtl_run", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  namespace = {"__name__": "__doc_example__"}
  exec(compile(code, DOC, "exec"), namespace)
  records = train.read_metrics(tmp_path)
  assert [r["step"] for r in records] == list(range(1, 101))
  assert int(namespace["final"].step) == 100
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["100", "50"]
  assert "'a'" in capsys.readouterr().out
  # It learns: the total loss falls.
  assert records[-1]["total"] < records[0]["total"]


@pytest.mark.parametrize("section", ["Multi-host"])
def test_other_snippets_compile(section):
  compile(_first_python_block(section), DOC, "exec")


def test_ten_line_example_runs():
  code = _first_python_block("Ten-line example: UW-SO in a jitted train step")
  namespace = {"__name__": "__doc_example__"}
  exec(compile(code, DOC, "exec"), namespace)
  weights = namespace["weights"]
  assert weights.shape == (2,)
  assert abs(float(weights.sum()) - 1.0) < 1e-6


def test_gradient_method_example_runs(capsys):
  code = _first_python_block("Methods")
  assert "upgrad_weights" in code
  namespace = {"__name__": "__doc_example__"}
  exec(compile(code, DOC, "exec"), namespace)
  jd = namespace["J"] @ namespace["d"]
  assert float(jd.min()) >= -1e-4  # non-conflicting
  assert capsys.readouterr().out
