"""The first leaf where two pytrees' layouts differ (checkpoints, NNX).

A layout maps each leaf's path (``jax.tree_util.keystr``) to what must match
there: ``(shape, dtype)`` for a checkpoint, the shape for an NNX model. The
caller turns the difference into its own message.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class LeafDifference(NamedTuple):
  path: str
  got: Any   # the leaf's entry in `got`; None: `got` lacks the leaf
  want: Any  # its entry in `want`; None: `got` has a leaf `want` lacks


def first_difference(got: Mapping[str, Any], want: Mapping[str, Any]
                     ) -> LeafDifference | None:
  """The first leaf of ``want`` (in order) that ``got`` lacks or holds
  otherwise, else the first leaf of ``got`` that ``want`` lacks; None when
  the layouts are equal."""
  for path, entry in want.items():
    if got.get(path) != entry:
      return LeafDifference(path, got.get(path), entry)
  extra = next((path for path in got if path not in want), None)
  return None if extra is None else LeafDifference(extra, got[extra], None)
