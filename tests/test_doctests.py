"""The ``>>>`` examples in mtl_jax's docstrings run and show what they say.

Every module of the package is searched (``pkgutil.walk_packages``). The
examples see their module's globals plus ``jax`` and ``jnp``, and arrays
print with NumPy's ``precision=4`` (``Array([0.6792, 0.3208], ...)``), so
that an example states its figures to 1e-4 and no further.
"""
import doctest
import importlib
import io
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax

MODULES = sorted(m.name for m in pkgutil.walk_packages(mtl_jax.__path__, "mtl_jax."))
# The examples that run (not marked +SKIP): fewer means some were lost.
MIN_EXAMPLES = 60
# A lost r prefix turns "\frac" into a form feed and "\times" into a tab.
CONTROL = "\x07\x08\t\x0b\x0c\r"


def _doctests(name: str, exclude_empty: bool = True) -> list[doctest.DocTest]:
  module = importlib.import_module(name)
  finder = doctest.DocTestFinder(exclude_empty=exclude_empty)
  return finder.find(module, name, extraglobs={"jax": jax, "jnp": jnp})


def _runnable(test: doctest.DocTest) -> int:
  return sum(not ex.options.get(doctest.SKIP, False) for ex in test.examples)


def test_the_package_is_walked():
  assert {"mtl_jax", "mtl_jax.weighting.uw_so", "mtl_jax.aggregation.upgrad",
          "mtl_jax.train.step", "mtl_jax.data.digit_scenes"} <= {
              "mtl_jax", *MODULES}


def test_enough_examples_run():
  counts = {name: sum(_runnable(t) for t in _doctests(name))
            for name in ["mtl_jax", *MODULES]}
  assert sum(counts.values()) >= MIN_EXAMPLES, counts
  for entry in ("mtl_jax._registry", "mtl_jax.weighting._registry",
                "mtl_jax.aggregation._registry", "mtl_jax.weighting.uw_so",
                "mtl_jax.aggregation.upgrad"):
    assert counts[entry] > 0, f"{entry} has no example"


@pytest.mark.parametrize("name", ["mtl_jax", *MODULES])
def test_examples(name):
  runner = doctest.DocTestRunner(
      optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  report = io.StringIO()
  with np.printoptions(precision=4, suppress=True):
    for test in _doctests(name):
      runner.run(test, out=report.write)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, report.getvalue()


@pytest.mark.parametrize("name", ["mtl_jax", *MODULES])
def test_docstrings_hold_no_control_characters(name):
  for test in _doctests(name, exclude_empty=False):
    bad = sorted({repr(c) for c in test.docstring or "" if c in CONTROL})
    assert not bad, f"{test.name}: {bad} in the docstring (use r\"\"\"...\"\"\")"
