"""mtl_jax: loss weighting for multi-task learning in JAX and Flax.

Subpackages (imported on demand, so that ``import mtl_jax`` stays light):

* :mod:`mtl_jax.weighting`: the methods (EW, Scalarization, UW, UW-O, UW-SO,
  DWA, RLW, GLS, IMTL-L) as pure functions and a registry, ``get(name)``.
* :mod:`mtl_jax.flax`: Flax modules holding weighting parameters.
* :mod:`mtl_jax.train`: the jitted, data-parallel train step, checkpointing
  and the training loop.
* :mod:`mtl_jax.data`: input pipelines (TFDS array_record + Grain).
* :mod:`mtl_jax.models`, :mod:`mtl_jax.losses`, :mod:`mtl_jax.metrics`.
"""
from mtl_jax import weighting
from mtl_jax.weighting import get

__version__ = "0.1.0"

__all__ = ("__version__", "get", "weighting")
