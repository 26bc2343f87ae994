"""The documentation's examples run as written (README.md and docs/*.md)."""
import os
import pathlib
import re

import jax.numpy as jnp
import pytest

import mtl_jax
from mtl_jax import train

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TRAINING = ROOT / "docs" / "training.md"
METHODS = ROOT / "docs" / "methods.md"


def _section(path: pathlib.Path, title: str) -> str:
  """The text under the heading ``title`` (any level), up to the next heading
  of the same or a higher level; ``#`` lines inside code fences are code."""
  lines = path.read_text().splitlines()
  in_fence, start, level = False, None, 0
  for i, line in enumerate(lines):
    if line.startswith("```"):
      in_fence = not in_fence
      continue
    heading = None if in_fence else re.match(r"(#+) (.*)", line)
    if heading and start is None and heading.group(2).strip() == title:
      start, level = i + 1, len(heading.group(1))
    elif heading and start is not None and len(heading.group(1)) <= level:
      return "\n".join(lines[start:i])
  assert start is not None, f"{path.name} has no section {title!r}"
  return "\n".join(lines[start:])


def _first_python_block(path: pathlib.Path, title: str) -> str:
  block = re.search(r"```python\n(.*?)```", _section(path, title), re.S)
  assert block, f"{path.name}, {title!r}: no python block"
  return block.group(1)


def test_training_loop_example_runs(tmp_path, monkeypatch, capsys):
  code = _first_python_block(TRAINING, "Training loop")
  assert "/tmp/mtl_run" in code
  code = code.replace("/tmp/mtl_run", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  namespace = {"__name__": "__doc_example__"}
  exec(compile(code, str(TRAINING), "exec"), namespace)
  records = train.read_metrics(tmp_path)
  assert [r["step"] for r in records] == list(range(1, 101))
  assert int(namespace["final"].step) == 100
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["100", "50"]
  assert "'a'" in capsys.readouterr().out
  # It learns: the total loss falls.
  assert records[-1]["total"] < records[0]["total"]


@pytest.mark.parametrize("path,title", [(TRAINING, "Multi-host")])
def test_other_snippets_compile(path, title):
  compile(_first_python_block(path, title), str(path), "exec")


def test_readme_nnx_example_trains_the_nnx_model():
  code = _first_python_block(README, "Flax NNX")
  namespace = {"__name__": "__doc_example__"}
  exec(compile(code, str(README), "exec"), namespace)
  net, state = namespace["net"], namespace["state"]
  assert int(state.step) == 1
  # The model now holds the trained kernel, moved off its initial value.
  trained = state.params["model"]["kernel"]
  assert jnp.allclose(net.kernel[...], trained)
  assert jnp.asarray(namespace["metrics"]["weights"]).shape == (2,)


def test_ten_line_example_runs():
  code = _first_python_block(
      README, "Ten-line example: UW-SO in a jitted train step")
  namespace = {"__name__": "__doc_example__"}
  exec(compile(code, str(README), "exec"), namespace)
  weights = namespace["weights"]
  assert weights.shape == (2,)
  assert abs(float(weights.sum()) - 1.0) < 1e-6


def test_gradient_method_example_runs(capsys):
  code = _first_python_block(METHODS, "Gradient-space methods")
  assert "upgrad_weights" in code
  namespace = {"__name__": "__doc_example__"}
  exec(compile(code, str(METHODS), "exec"), namespace)
  jd = namespace["J"] @ namespace["d"]
  assert float(jd.min()) >= -1e-4  # non-conflicting
  assert capsys.readouterr().out


def test_section_lookup_skips_code_comments(tmp_path):
  doc = tmp_path / "doc.md"
  doc.write_text("## A\n\n```bash\n# not a heading\n```\n\n```python\nx = 1\n```\n"
                 "### A.1\n\ny\n## B\n\nz\n")
  assert _first_python_block(doc, "A") == "x = 1\n"
  assert "y" in _section(doc, "A") and "z" not in _section(doc, "A")
  with pytest.raises(AssertionError, match="no section 'C'"):
    _section(doc, "C")


def _table_names(text: str) -> set[str]:
  """The backquoted names in the first column of the markdown tables."""
  names = set()
  for line in text.splitlines():
    if line.startswith("| `"):
      names.update(re.findall(r"`(\w+)`", line.split(" | ")[0]))
  return names


@pytest.mark.parametrize("path", [README, METHODS])
def test_method_tables_list_every_method(path):
  assert set(mtl_jax.names()) <= _table_names(path.read_text())


def test_readme_is_a_front_door():
  text = README.read_text()
  assert len(text.splitlines()) < 200, "README.md grew: move the detail to docs/"
  for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
    if not link.startswith(("http://", "https://")):
      assert (ROOT / link).exists(), f"README.md links to a missing {link}"
