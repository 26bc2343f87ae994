"""mtl_jax: loss and gradient balancing for multi-task learning in JAX and Flax.

``mtl_jax.get(name, **hparams)`` builds a method of either family;
``mtl_jax.names()`` lists them. The subpackages, each with its own ``__all__``:

* :mod:`mtl_jax.weighting`: the loss-based methods (EW, Scalarization, UW,
  UW-O, UW-SO, DWA, RLW, GLS, IMTL-L, FAMO, STCH) as pure functions,
  factories and a registry.
* :mod:`mtl_jax.aggregation`: the gradient-space methods (MGDA, PCGrad,
  CAGrad, IMTL-G, IMTL, Nash-MTL, Aligned-MTL, UPGrad, DualProj, FairGrad,
  GradVac, ConFIG, GradNorm, SDMGrad, MoDo, Mean, Sum, Constant, Random as
  functions of the Gramian; GradDrop, MoCo, DB-MTL, ExcessMTL of the
  Jacobian) as pure functions, factories and a registry.
* :mod:`mtl_jax.flax`: Flax modules holding weighting parameters.
* :mod:`mtl_jax.nnx`: the same for Flax NNX, and the train engine on an NNX
  model.
* :mod:`mtl_jax.train`: the jitted, data-parallel train step, optimiser,
  checkpointing and the training loop.
* :mod:`mtl_jax.data`: input pipelines (TFDS array_record + Grain, no
  TensorFlow): digit scenes, synthetic, NYUv2, Cityscapes, CelebA.
* :mod:`mtl_jax.models`: hard-sharing Flax models (SegNet, MTAN, ResNet-18,
  DigitSceneNet, MLPTrunk).
* :mod:`mtl_jax.losses`, :mod:`mtl_jax.metrics`: task losses, on-device
  metrics and Delta_m.

``import mtl_jax`` loads only the two method families; the other subpackages
load on first access (``mtl_jax.train``), so that the light part stays light.
"""
import importlib

from mtl_jax import aggregation, weighting
from mtl_jax._registry import family, get, names

__version__ = "0.1.0"

_LAZY = ("data", "flax", "losses", "metrics", "models", "nnx", "train")

__all__ = (
    "__version__",
    "aggregation",
    "data",
    "family",
    "flax",
    "get",
    "losses",
    "metrics",
    "models",
    "names",
    "nnx",
    "train",
    "weighting",
)


def __getattr__(name):
  if name in _LAZY:
    return importlib.import_module(f"mtl_jax.{name}")
  raise AttributeError(f"module 'mtl_jax' has no attribute {name!r}")
