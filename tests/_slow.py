"""What README command 2 runs and what only CI runs (``-m slow``).

README command 2 deselects the tests marked ``slow``, so a contributor's
check takes a few minutes on 2 cores; ``.ci/run`` runs
them as its second step, so nothing is dropped. Slow are the end-to-end runs (drivers, subprocesses,
notebooks, benchmarks' smoke runs) and, for a property checked once per
method, the methods beyond a core set that covers every path of the engine.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

# One method per path of the train step: loss weightings (linear, learnable,
# nonlinear, after-update), Gramian methods (QP, closed form, PRNG key),
# a Jacobian reader and a split-batch method.
CORE = frozenset({"ew", "uw", "uw_so", "gls", "famo", "mgda", "upgrad", "pcgrad",
                  "graddrop", "moco", "sdmgrad", "config"})


def core_first(values: Iterable[Any], core: Iterable[str] = CORE) -> list[Any]:
  """``values`` for ``pytest.mark.parametrize``, those whose method name
  (the value, or a tuple's first entry) is outside ``core`` marked slow."""
  core = frozenset(core)
  out = []
  for value in values:
    name = value[0] if isinstance(value, tuple) else value
    args = value if isinstance(value, tuple) else (value,)
    marks = () if name in core else (pytest.mark.slow,)
    out.append(pytest.param(*args, marks=marks))
  return out

# The engine's whole-step tests (several compiles of the train step each):
# one method per path of the step: a loss weighting, one with an
# after-update, a Gramian method, a Jacobian reader and a split batch.
ENGINE_CORE = frozenset({"ew", "famo", "mgda", "graddrop", "sdmgrad"})


def slow(*values: Any) -> list[Any]:
  """``values`` as ``pytest.param``s marked slow (for a parametrize list
  whose first entries stay in the default suite)."""
  return [pytest.param(*(v if isinstance(v, tuple) else (v,)),
                       marks=pytest.mark.slow) for v in values]


# The Jacobians of ``_inputs.all_jacobians()`` that the default suite keeps
# for a property checked on each: K = 2 of full rank, K = 4 > P = 3 of rank
# 2, K = 9 of rank 5, and a zero matrix. CI's slow step checks all ten.
REPRESENTATIVE = (1, 4, 6, 8)


def representative(indices: Iterable[int]) -> list[Any]:
  """``indices`` (of ``_inputs.all_jacobians()``) for parametrize, those
  outside :data:`REPRESENTATIVE` marked slow."""
  return [i if i in REPRESENTATIVE else pytest.param(i, marks=pytest.mark.slow)
          for i in indices]
