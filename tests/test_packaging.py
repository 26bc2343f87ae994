"""The wheel installs the library only; the drivers stay in the clone."""
import configparser
import os

import setuptools

ROOT = os.path.dirname(os.path.dirname(__file__))


def test_wheel_packages_are_mtl_jax_only():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, "setup.cfg"))
  include = cfg["options.packages.find"]["include"].split()
  packages = setuptools.find_packages(ROOT, include=include)
  assert "mtl_jax" in packages and "mtl_jax.train" in packages
  assert all(p == "mtl_jax" or p.startswith("mtl_jax.") for p in packages)
  # The drivers exist in the clone and are left out of the wheel.
  assert os.path.exists(os.path.join(ROOT, "experiments", "compare.py"))
  assert not any(p.startswith("experiments") for p in packages)


def test_docs_extra_and_ci_build_the_site():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, "setup.cfg"))
  docs = cfg["options.extras_require"]["docs"].split()
  assert {r.split(">=")[0] for r in docs} == {"sphinx", "myst-nb",
                                              "sphinx-book-theme"}
  assert all(">=" in r for r in docs)  # lower bounds
  with open(os.path.join(ROOT, "requirements.txt")) as f:
    assert set(docs) <= set(f.read().split())
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci = [line for line in f.read().splitlines() if not line.startswith("#")]
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  test_command = 'pip install ".[test]" && python -m pytest -n 2 -m "not slow"'
  assert test_command in readme and test_command in ci
  # The second CI step runs what README's command leaves out.
  assert "python -m pytest -n 2 -m slow" in ci
  build = [line for line in ci if "sphinx-build" in line]
  assert len(build) == 1 and " -W " in build[0] and " docs docs/_build/html" in build[0]
  assert ci.index(build[0]) > ci.index(test_command)  # after the tests
