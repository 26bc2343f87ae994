"""One entry point for both families: ``mtl_jax.get("uw_so", temperature=2.0)``
or ``mtl_jax.get("upgrad")``."""
from __future__ import annotations

from typing import Any

from mtl_jax import _factory, aggregation, weighting

Method = weighting.Weighting | aggregation.GradientMethod


def names() -> tuple[str, ...]:
  """Every registered method name of both families, sorted."""
  return tuple(sorted(set(weighting.names()) | set(aggregation.names())))


def family(name: str) -> str:
  """``"weighting"`` or ``"aggregation"``: where the method ``name`` lives.

  Raises:
    ValueError: for an unknown name, listing the valid ones by family.
  """
  key = _factory.normalize(name)
  if key in weighting.names():
    return "weighting"
  if key in aggregation.names():
    return "aggregation"
  raise ValueError(
      f"unknown method {name!r}; loss-weighting methods: "
      f"{list(weighting.names())}; gradient-space methods: "
      f"{list(aggregation.names())}.")


def get(name: str, **hparams: Any) -> Method:
  """Builds a method of either family by name.

  A loss-weighting method (:mod:`mtl_jax.weighting`) comes back as a
  :class:`~mtl_jax.weighting.Weighting`, a gradient-space method
  (:mod:`mtl_jax.aggregation`) as an :class:`~mtl_jax.aggregation.Aggregator`.
  :func:`mtl_jax.train.make_train_step` and
  :func:`mtl_jax.train.create_train_state` take either, and the step picks
  the weighted-sum or the Jacobian path from the type.

  Raises:
    ValueError: for an unknown name or hyperparameter (listing the valid ones).

  Example:
    >>> type(get("uw_so", temperature=2.0)).__name__, family("uw_so")
    ('Weighting', 'weighting')
    >>> type(get("upgrad")).__name__, family("upgrad")
    ('Aggregator', 'aggregation')
  """
  if family(name) == "weighting":
    return weighting.get(name, **hparams)
  return aggregation.get(name, **hparams)
