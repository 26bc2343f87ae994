"""Test-wide set-up: four fake CPU devices and LLVM's cheapest compile level,
set before jax is imported, and a compilation cache for this test process.

Data-parallel tests (pmap and jit over a mesh) need several devices. XLA reads
the flag once, when the backend starts, so it must be in the environment before
the first ``import jax`` of the test process.

Most of the suite's time is XLA compiling small programs, and many tests
compile a program another test has compiled already (the same train step,
built by a fresh ``make_train_step`` closure that ``jax.jit`` cannot know is
the same). JAX's persistent compilation cache, keyed on the program itself,
hands back the executable XLA built the first time: same code, same results.
It lives in a fresh temporary directory of this process only (neither shared
with the other xdist worker nor with subprocesses, so no entry is ever read
while it is written) and is deleted at exit; ``JAX_COMPILATION_CACHE_DIR``
set by the caller is left as it is.
"""
import atexit
import os
import shutil
import tempfile

# Four fake devices, and LLVM's lowest optimisation level: the suite's
# programs are small and run a few steps, so its time is mostly XLA compiling
# them, and level 0 compiles much faster (the whole suite, -n 2 on 2 cores:
# 591 s -> 465 s). It changes how the CPU code is optimised, not what it
# computes; float32 results may differ in the last bits, which the tolerances
# allow. A caller's own level is kept.
for _FLAG in ("--xla_force_host_platform_device_count=4",
              "--xla_backend_optimization_level=0"):
  if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                               + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

_CACHE_DIR = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the caller's cache wins
  _CACHE_DIR = tempfile.mkdtemp(prefix="mtl_jax_test_xla_cache_")
  # xdist workers may end without running atexit: pytest_unconfigure too.
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
  jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
  del config
  if _CACHE_DIR:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
