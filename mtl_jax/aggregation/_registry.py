"""Look a gradient-space method up by name: ``get("cagrad", c=0.4)``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mtl_jax import _factory
from mtl_jax.aggregation import _base
from mtl_jax.aggregation.aligned_mtl import aligned_mtl
from mtl_jax.aggregation.cagrad import cagrad
from mtl_jax.aggregation.config import config
from mtl_jax.aggregation.constant import constant
from mtl_jax.aggregation.db_mtl import db_mtl
from mtl_jax.aggregation.dualproj import dualproj
from mtl_jax.aggregation.excess_mtl import excess_mtl
from mtl_jax.aggregation.fairgrad import fairgrad
from mtl_jax.aggregation.graddrop import graddrop
from mtl_jax.aggregation.gradnorm import gradnorm
from mtl_jax.aggregation.gradvac import gradvac
from mtl_jax.aggregation.imtl import imtl
from mtl_jax.aggregation.imtl_g import imtl_g
from mtl_jax.aggregation.mean import mean
from mtl_jax.aggregation.mgda import mgda
from mtl_jax.aggregation.moco import moco
from mtl_jax.aggregation.modo import modo
from mtl_jax.aggregation.nash_mtl import nash_mtl
from mtl_jax.aggregation.pcgrad import pcgrad
from mtl_jax.aggregation.random import random
from mtl_jax.aggregation.sdmgrad import sdmgrad
from mtl_jax.aggregation.sum_ import sum_
from mtl_jax.aggregation.upgrad import upgrad

_FACTORIES: dict[str, Callable[..., _base.GradientMethod]] = {
    "aligned_mtl": aligned_mtl,
    "cagrad": cagrad,
    "config": config,
    "constant": constant,
    "db_mtl": db_mtl,
    "dualproj": dualproj,
    "excess_mtl": excess_mtl,
    "fairgrad": fairgrad,
    "graddrop": graddrop,
    "gradnorm": gradnorm,
    "gradvac": gradvac,
    "imtl": imtl,
    "imtl_g": imtl_g,
    "mean": mean,
    "mgda": mgda,
    "moco": moco,
    "modo": modo,
    "nash_mtl": nash_mtl,
    "pcgrad": pcgrad,
    "random": random,
    "sdmgrad": sdmgrad,
    "sum": sum_,
    "upgrad": upgrad,
}


def names() -> tuple[str, ...]:
  """The registered gradient-space method names, sorted."""
  return tuple(sorted(_FACTORIES))


def get(name: str, **hparams: Any) -> _base.GradientMethod:
  """Builds the gradient-space method ``name`` with its hyperparameters.

  Args:
    name: one of :func:`names`, e.g. ``"mgda"``, ``"upgrad"``, ``"cagrad"``.
    **hparams: keyword arguments of that method's factory, for example
      ``c=0.4`` for ``"cagrad"``.

  Returns:
    An :class:`~mtl_jax.aggregation.Aggregator` (``init``, ``apply`` on the
    Gramian), or a :class:`~mtl_jax.aggregation.JacobianAggregator` for the
    methods that read the Jacobian.

  Raises:
    ValueError: for an unknown name (listing the valid ones), or for a
      hyperparameter the method does not take (listing the ones it takes), or
      a required one that is missing.

  Example:
    >>> method = get("mgda")
    >>> params, state = method.init(2)
    >>> gram = jnp.array([[18., -22.], [-22., 38.]])  # G = J J^T
    >>> method.apply(params, state, gram, losses=jnp.ones(2)).weights
    Array([0.6, 0.4], dtype=float32)
    >>> get("cagrad")
    Traceback (most recent call last):
    ...
    ValueError: gradient-space method 'cagrad' needs the hyperparameter(s) ['c'], ...
  """
  method = _factory.build(_FACTORIES, "gradient-space", name, hparams)
  _base.check_method(method)
  return method
