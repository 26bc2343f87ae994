"""Build a method from a registry of factories, checking its hyperparameters."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any


def normalize(name: str) -> str:
  """Registry key of a method name: lower case, ``-`` as ``_``."""
  return str(name).lower().replace("-", "_")


def build(factories: Mapping[str, Callable[..., Any]], kind: str, name: str,
          hparams: Mapping[str, Any]) -> Any:
  """``factories[name](**hparams)``, with errors that list what is valid.

  Raises:
    ValueError: for an unknown name (listing the valid ones), a
      hyperparameter the factory does not take (listing the ones it takes),
      or a required one that is missing.
  """
  key = normalize(name)
  if key not in factories:
    raise ValueError(
        f"unknown {kind} method {name!r}; valid names are "
        f"{sorted(factories)}.")
  factory = factories[key]
  accepted = inspect.signature(factory).parameters
  unknown = sorted(set(hparams) - set(accepted))
  if unknown:
    raise ValueError(
        f"{kind} method {key!r} takes no hyperparameter(s) {unknown}; it "
        f"takes {list(accepted)}.")
  missing = [n for n, p in accepted.items()
             if p.default is inspect.Parameter.empty and n not in hparams
             and p.kind is not inspect.Parameter.VAR_KEYWORD]
  if missing:
    raise ValueError(
        f"{kind} method {key!r} needs the hyperparameter(s) {missing}, "
        f"e.g. get({key!r}, {missing[0]}=...).")
  bound = inspect.signature(factory).bind(**hparams)
  bound.apply_defaults()
  method = factory(**hparams)
  return method._replace(name=key, hparams=tuple(bound.arguments.items()))
