"""Look a weighting method up by name: ``get("uw_so", temperature=2.0)``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mtl_jax import _factory
from mtl_jax.weighting import _base
from mtl_jax.weighting.dwa import dwa
from mtl_jax.weighting.ew import ew
from mtl_jax.weighting.famo import famo
from mtl_jax.weighting.gls import gls
from mtl_jax.weighting.imtl_l import imtl_l
from mtl_jax.weighting.rlw import rlw
from mtl_jax.weighting.scalarization import scalarization
from mtl_jax.weighting.stch import stch
from mtl_jax.weighting.uw import uw
from mtl_jax.weighting.uw_o import uw_o
from mtl_jax.weighting.uw_so import uw_so
from mtl_jax.weighting.uw_so_entropy import uw_so_entropy
from mtl_jax.weighting.uw_so_norm import uw_so_norm
from mtl_jax.weighting.uw_so_rel import uw_so_rel

_FACTORIES: dict[str, Callable[..., _base.Weighting]] = {
    "dwa": dwa,
    "ew": ew,
    "famo": famo,
    "gls": gls,
    "imtl_l": imtl_l,
    "rlw": rlw,
    "scalarization": scalarization,
    "stch": stch,
    "uw": uw,
    "uw_o": uw_o,
    "uw_so": uw_so,
    "uw_so_entropy": uw_so_entropy,
    "uw_so_norm": uw_so_norm,
    "uw_so_rel": uw_so_rel,
}


def names() -> tuple[str, ...]:
  """The registered method names, sorted."""
  return tuple(sorted(_FACTORIES))


def get(name: str, **hparams: Any) -> _base.Weighting:
  """Builds the weighting method ``name`` with its hyperparameters.

  Args:
    name: one of :func:`names`: ``"dwa"``, ``"ew"``, ``"famo"``, ``"gls"``,
      ``"imtl_l"``, ``"rlw"``, ``"scalarization"``, ``"stch"``, ``"uw"``,
      ``"uw_o"``, ``"uw_so"``, ``"uw_so_entropy"``, ``"uw_so_norm"``,
      ``"uw_so_rel"``.
    **hparams: keyword arguments of that method's factory, for example
      ``temperature=2.0`` for ``"uw_so"`` or ``weights=(0.5, 0.5)`` for
      ``"scalarization"``.

  Returns:
    A :class:`~mtl_jax.weighting.Weighting` (``init``, ``apply``).

  Raises:
    ValueError: for an unknown name (listing the valid ones), or for a
      hyperparameter the method does not take (listing the ones it takes).

  Example:
    >>> method = get("uw")  # learnable log-variances, one per task
    >>> params, state = method.init(num_tasks=2)
    >>> params
    {'log_vars': Array([0., 0.], dtype=float32)}
    >>> get("uw_so", temprature=2.0)
    Traceback (most recent call last):
    ...
    ValueError: weighting method 'uw_so' takes no hyperparameter(s) ['temprature']; ...
  """
  return _factory.build(_FACTORIES, "weighting", name, hparams)
