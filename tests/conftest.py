"""Test-wide set-up: four fake CPU devices, created before jax is imported.

Data-parallel tests (pmap and jit over a mesh) need several devices. XLA reads
the flag once, when the backend starts, so it must be in the environment before
the first ``import jax`` of the test process.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
