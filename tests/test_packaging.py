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
