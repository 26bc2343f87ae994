"""Base class for the TFDS builders defined in this package."""
from __future__ import annotations

import tensorflow_datasets as tfds


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A ``GeneratorBasedBuilder`` that downloads nothing and needs no TensorFlow.

  TFDS looks for a ``checksums.tsv`` next to a builder's source file; finding
  that path goes through ``importlib_resources``, which is not a dependency of
  this library. The builders here download nothing, so they have no source
  path to search.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    return None
