"""Shared Grain pipeline: source -> shard -> shuffle -> repeat -> map -> batch.

Every dataset in :mod:`mtl_jax.data` turns a random-access source (a
``tfds.data_source``, an array_record file or an in-memory array) into batches
with :func:`make_pipeline`. The result is a ``grain.IterDataset``; iterating it
gives a ``grain.DatasetIterator`` whose position can be checkpointed::

  ds = digit_scenes.load("train", batch_size=32)
  it = iter(ds)
  batch = next(it)
  state = it.get_state()        # a small JSON-serialisable dict
  ...
  it = iter(ds)                 # same arguments, e.g. after a restart
  it.set_state(state)           # continues with the batch after `batch`

:func:`save_state` and :func:`restore_state` write and read that dict as JSON.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

Example = dict[str, np.ndarray]
DATA_DIR_ENV = "MTL_JAX_DATA_DIR"


def default_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Returns ``data_dir``, else ``$MTL_JAX_DATA_DIR``, else ``~/.cache/mtl_jax``."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_DIR_ENV) or pathlib.Path.home() / ".cache" / "mtl_jax"
  return pathlib.Path(data_dir).expanduser()


def resolve_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  """Defaults to ``(jax.process_index(), jax.process_count())`` and validates."""
  if shard_index is None or shard_count is None:
    import jax  # Imported lazily: reading data must not start a backend early.
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise ValueError(
        f"Need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
        f"shard_count={shard_count}.")
  return shard_index, shard_count


class Subset(grain.sources.RandomAccessDataSource):
  """A random-access source restricted to ``indices`` (picklable for workers)."""

  def __init__(self, source: Any, indices: Sequence[int]):
    self._source = source
    self._indices = np.asarray(indices, dtype=np.int64)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> Any:
    return self._source[int(self._indices[index])]


class ArraySource(grain.sources.RandomAccessDataSource):
  """In-memory source: example ``i`` is ``{k: v[i] for k, v in arrays.items()}``."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) != 1:
      raise ValueError(f"All arrays need the same length, got {lengths}.")
    self._arrays = dict(arrays)
    self._length = lengths.pop()

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> Example:
    return {k: v[index] for k, v in self._arrays.items()}


def make_pipeline(
    source: Any,
    *,
    batch_size: int,
    decode: Callable[[Any], Example] | None = None,
    augment: Callable[[Example, np.random.Generator], Example] | None = None,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    worker_count: int = 0,
    read_threads: int = 0,
    prefetch_buffer_size: int = 64,
    drop_remainder: bool = True,
) -> grain.IterDataset:
  """Builds the Grain pipeline shared by every dataset of the library.

  Args:
    source: random-access source (``len`` and ``__getitem__``).
    batch_size: examples per batch on this process.
    decode: deterministic per-example function (cast, reshape, resize).
    augment: random per-example function ``(example, rng) -> example``; its
      generator is seeded from ``seed`` and the position in the (repeated)
      sequence, so every epoch gets new, reproducible augmentations.
    seed: seed of the shuffle order and of the augmentation.
    shuffle: global shuffle, a new permutation each epoch.
    num_epochs: passes over the data; ``None`` repeats forever.
    shard_index: this process's shard; default ``jax.process_index()``.
    shard_count: number of shards; default ``jax.process_count()``. Shard ``i``
      holds examples ``i, i + n, i + 2n, ...``: shards are disjoint, cover the
      split and differ in size by at most one example.
    worker_count: worker processes (``mp_prefetch``); 0 works in-process.
    read_threads: threads reading and mapping elements in each process.
    prefetch_buffer_size: elements read ahead per process when threads > 0.
    drop_remainder: drop the last incomplete batch (finite ``num_epochs``).

  Returns:
    A ``grain.IterDataset`` of dicts of numpy arrays with a leading batch axis.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if worker_count < 0 or read_threads < 0:
    raise ValueError(
        f"worker_count and read_threads must be >= 0, got {worker_count}, {read_threads}.")
  shard_index, shard_count = resolve_shard(shard_index, shard_count)
  ds = grain.MapDataset.source(source)
  if shard_count > 1:
    ds = ds[shard_index::shard_count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  if decode is not None:
    ds = ds.map(decode)
  if augment is not None:
    ds = ds.random_map(augment, seed=seed)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  options = grain.ReadOptions(
      num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size if read_threads else 0)
  it_ds = ds.to_iter_dataset(options)
  if worker_count > 0:
    _ensure_absl_flags_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it_ds


def _ensure_absl_flags_parsed() -> None:
  """Grain's worker processes read absl flags; outside an absl app none are parsed."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def save_state(iterator: grain.DatasetIterator, path: str | os.PathLike) -> None:
  """Writes ``iterator.get_state()`` to ``path`` as JSON (one small file)."""
  pathlib.Path(path).write_text(json.dumps(iterator.get_state()))


def restore_state(iterator: grain.DatasetIterator, path: str | os.PathLike) -> None:
  """Moves a fresh iterator of the same pipeline to the position saved at ``path``."""
  iterator.set_state(json.loads(pathlib.Path(path).read_text()))
