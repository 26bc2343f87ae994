"""Hyperparameter checks shared by both method families.

Every factory checks its hyperparameters when it is built, so that a bad
value (``None``, a string, NaN, a negative where none is allowed, a vector of
the wrong length) raises a ``ValueError`` that names the method, the
hyperparameter, the value and what is accepted, instead of failing later
inside a traced step or training silently. The message reads
``"{method}: {name} must be {what}, got {value!r}."`` plus a hint.

A traced value (a hyperparameter swept with ``jax.vmap``) cannot be checked
before the computation runs: the checks let it through.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, NoReturn

import jax
import numpy as np

_NOT_CONCRETE = (jax.errors.ConcretizationTypeError,
                 jax.errors.TracerArrayConversionError)


def _fail(method: str, name: str, what: str, value: Any,
          hint: str) -> NoReturn:
  raise ValueError(f"{method}: {name} must be {what}, got {value!r}."
                   + (f" {hint}" if hint else ""))


def numeric(value: Any, name: str, method: str, what: str,
            hint: str = "") -> np.ndarray | None:
  """``value`` as a float64 numpy array; None when it is traced.

  Raises a ValueError (``"{name} must be {what}"``) for anything that is not
  made of real numbers: None, a string, a bool, a ragged sequence.
  """
  if isinstance(value, jax.core.Tracer):
    return None
  if value is None or isinstance(value, (str, bytes, bool, np.bool_)):
    _fail(method, name, what, value, hint)
  try:
    array = np.asarray(value)
  except _NOT_CONCRETE:
    return None  # a sequence holding a tracer
  except (TypeError, ValueError):  # ragged, or not convertible
    _fail(method, name, what, value, hint)
  if array.dtype.kind not in "iuf":  # strings, objects (None inside), bools
    _fail(method, name, what, value, hint)
  return array.astype(np.float64)


def number(value: Any, name: str, method: str, *,
           low: float | None = None, low_open: bool = False,
           high: float | None = None, high_open: bool = False,
           allow_inf: bool = False, hint: str = "") -> None:
  """Raises a ValueError unless ``value`` is a real number in the range.

  The range is ``[low, high]``, open at an end with ``low_open`` or
  ``high_open``; NaN is always rejected, +-inf unless ``allow_inf``.
  """
  what = _describe(low, low_open, high, high_open, allow_inf)
  array = numeric(value, name, method, what, hint)
  if array is None:
    return  # traced
  if array.shape != ():
    _fail(method, name, what, value, hint)
  x = float(array)
  bad = (math.isnan(x) or (not allow_inf and math.isinf(x))
         or (low is not None and (x <= low if low_open else x < low))
         or (high is not None and (x >= high if high_open else x > high)))
  if bad:
    _fail(method, name, what, value, hint)


def _describe(low, low_open, high, high_open, allow_inf) -> str:
  kind = "a number" if allow_inf else "a finite number"
  if low is not None and high is not None:
    return (f"{kind} in {'(' if low_open else '['}{low:g}, "
            f"{high:g}{')' if high_open else ']'}")
  if low is not None:
    return f"{kind} {'>' if low_open else '>='} {low:g}"
  if high is not None:
    return f"{kind} {'<' if high_open else '<='} {high:g}"
  return kind


def integer(value: Any, name: str, method: str, *,
            low: int | None = None, hint: str = "") -> Any:
  """``value`` as an int (a traced value as it is), or a ValueError.

  Python and numpy integers are accepted, bools and floats (even 2.0) are
  not.
  """
  if isinstance(value, jax.core.Tracer):
    return value
  if (isinstance(value, (bool, np.bool_))
      or not isinstance(value, numbers.Integral)
      or (low is not None and value < low)):
    what = ("an integer" if low is None else "a positive integer" if low == 1
            else f"an integer >= {low}")
    _fail(method, name, what, value, hint)
  return int(value)


def flag(value: Any, name: str, method: str) -> bool:
  """``value`` as a bool, or a ValueError (``"yes"``, 1, None are rejected)."""
  if not isinstance(value, (bool, np.bool_)):
    _fail(method, name, "True or False", value, "")
  return bool(value)


def vector(value: Any, name: str, method: str, *,
           num_tasks: int | None = None, nonnegative: bool = False,
           hint: str = "") -> np.ndarray | None:
  """``value`` as a ``(K,)`` float64 array of finite numbers; None if traced.

  With ``nonnegative``, every entry must be >= 0 and one > 0 (all zero would
  weight every task by 0). ``num_tasks`` checks the length.
  """
  what = ("a vector of finite numbers >= 0, one per task" if nonnegative
          else "a vector of finite numbers, one per task")
  array = numeric(value, name, method, what, hint)
  if array is None:
    return None
  if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
    _fail(method, name, what, value, hint)
  if nonnegative and (np.any(array < 0) or not np.any(array > 0)):
    _fail(method, name, what + ", not all zero", value, hint)
  if num_tasks is not None and array.size != num_tasks:
    raise ValueError(
        f"{method}: {name} has {array.size} entries but there are {num_tasks} "
        f"tasks, got {value!r}. Give one entry per task, in the order of the "
        "task losses.")
  return array
