"""Lint: ruff over the whole repository, with the rule set in pyproject.toml."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_passes_on_the_whole_repository():
  result = subprocess.run(
      [sys.executable, "-m", "ruff", "check", "--no-cache", ROOT],
      capture_output=True, text=True, cwd=ROOT, check=False)
  assert result.returncode == 0, (
      "ruff found problems; run `ruff check --fix .` and fix the rest by "
      "hand:\n" + result.stdout + result.stderr)


def test_ruff_catches_an_unused_import(tmp_path):
  # The check above could pass because ruff checked nothing; here it must fail.
  bad = tmp_path / "bad.py"
  bad.write_text("import os\n")
  result = subprocess.run(
      [sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
       os.path.join(ROOT, "pyproject.toml"), str(bad)],
      capture_output=True, text=True, check=False)
  assert result.returncode == 1 and "F401" in result.stdout
