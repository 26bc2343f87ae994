"""Input pipelines: TFDS array_record sources read through Grain, no TensorFlow.

One module per dataset, each with a ``load(...)`` returning a
``grain.IterDataset`` of batches (dicts of numpy arrays), and module constants
``TASKS``, ``LOSSES`` and class counts for the experiments:

* :mod:`digit_attributes`: offline many-task benchmark from sklearn's digits
  (ten binary attributes of strips of three digits); generated on first use.
* :mod:`digit_scenes`: offline dense benchmark from sklearn's digits
  (segmentation, depth, normal, count); generated and cached on first use.
* :mod:`synthetic`: GradNorm's synthetic regression, in memory.
* :mod:`nyuv2`: MTAN's NYUv2 (segmentation, depth, normal) from a manual dir.
* :mod:`cityscapes`: MTAN's Cityscapes (segmentation, inverse depth).
* :mod:`celeba`: TFDS ``celeb_a``, 40 attributes, 64x64.
* :mod:`qm9`: QM9's 11 molecular targets (the gradient-balancing papers'
  benchmark), built from the PyPI package qm9pack (``pip install ".[qm9]"``).

Checkpointing the data position: ``it = iter(ds)``, then ``it.get_state()``
and, on a fresh ``iter(ds)`` of the same pipeline, ``it.set_state(state)``
(:func:`save_state` / :func:`restore_state` do this through a JSON file).
"""
from mtl_jax.data import (
    celeba,
    cityscapes,
    digit_attributes,
    digit_scenes,
    nyuv2,
    qm9,
    synthetic,
)
from mtl_jax.data._mtan import LayoutError
from mtl_jax.data._pipeline import (
    DATA_DIR_ENV,
    default_data_dir,
    make_pipeline,
    restore_state,
    save_state,
)

__all__ = (
    "DATA_DIR_ENV",
    "LayoutError",
    "celeba",
    "cityscapes",
    "default_data_dir",
    "digit_attributes",
    "digit_scenes",
    "make_pipeline",
    "nyuv2",
    "qm9",
    "restore_state",
    "save_state",
    "synthetic",
)
