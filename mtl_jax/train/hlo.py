"""Count the collective operations in compiled HLO text.

``count_collectives(jax.jit(f).lower(...).compile().as_text())`` lists every
all-reduce, all-gather, reduce-scatter, all-to-all and collective-permute
with its element count, so a test can assert that a step communicates what
it should (one gradient all-reduce) and nothing more.
"""
from __future__ import annotations

import math
import re
from typing import NamedTuple

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute")
# Host transfers that would mean a round trip per step.
HOST_TRANSFERS = ("send(", "recv(", "outfeed(", "infeed(",
                  "xla_python_cpu_callback", "xla_ffi_python_cpu_callback",
                  "xla_python_gpu_callback", "xla_ffi_python_gpu_callback")

# `%name = <result type> all-reduce(` or the async `all-reduce-start(`.
_OP = re.compile(
    r"=\s*(?P<type>.+?)\s+(?P<op>" + "|".join(COLLECTIVES) +
    r")(?:-start)?\(")
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+[0-9]*)\[(?P<dims>[0-9,]*)\]")


class CollectiveOp(NamedTuple):
  """One collective op of the HLO."""
  kind: str                      # e.g. "all-reduce"
  shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, dims) per operand
  num_elements: int              # sum over its operands


def _shapes(result_type: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
  shapes = []
  for match in _ARRAY.finditer(result_type):
    dims = tuple(int(d) for d in match["dims"].split(",") if d)
    shapes.append((match["dtype"], dims))
  return tuple(shapes)


def count_collectives(hlo_text: str) -> list[CollectiveOp]:
  """The collective ops of compiled (optimised) HLO text, in order.

  Only the ops themselves are counted (``all-reduce`` or its async
  ``all-reduce-start``; the matching ``-done`` is not a second op). An op
  over a tuple (XLA's combiner merges small all-reduces) counts once, with
  the elements of all its operands.
  """
  ops = []
  for line in hlo_text.splitlines():
    match = _OP.search(line)
    if match is None:
      continue
    shapes = _shapes(match["type"])
    if match["type"].lstrip().startswith("(") and line.find("-start(") > 0:
      # async start ops return (operands, results): keep the first half.
      shapes = shapes[:len(shapes) // 2] or shapes
    ops.append(CollectiveOp(match["op"], shapes,
                            sum(math.prod(d) for _, d in shapes)))
  return ops


def host_transfers(hlo_text: str) -> list[str]:
  """Lines of the HLO that move data between host and device."""
  return [line.strip() for line in hlo_text.splitlines()
          if any(token in line for token in HOST_TRANSFERS)]
