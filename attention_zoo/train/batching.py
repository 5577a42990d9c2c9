"""Batches as a pure function of (seed, step), and their placement on the device mesh.

Train batch `step` holds examples [step*B, (step+1)*B) of the split under the data pipeline's
per-epoch shuffle (attention_zoo.data.pipeline.EpochShuffle: a new permutation each epoch, the same
batches as task.batches(...)), so a resumed run sees exactly the batches an uninterrupted one
would, with no iterator state to checkpoint. Each process loads only its slice of the global batch.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from attention_zoo.data import pipeline


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, axis 'data'."""
  return Mesh(np.asarray(jax.devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


class TrainBatches:
  """batch(step) -> this process's share of global train batch `step` (numpy dict)."""

  def __init__(self, source, batch_size: int, seed: int):
    n_proc, n_dev = jax.process_count(), jax.device_count()
    if batch_size % n_dev:
      raise ValueError(f'train.batch_size={batch_size} must be a multiple of the device count '
                       f'({n_dev})')
    if len(source) == 0:
      raise ValueError('the train split is empty')
    self.source = source
    self.order = pipeline.EpochShuffle(len(source), seed, shuffle=True)
    self.batch_size = batch_size
    self.local = batch_size // n_proc
    self.offset = jax.process_index() * self.local

  def batch(self, step: int) -> dict[str, np.ndarray]:
    start = step * self.batch_size + self.offset
    return pipeline.read_rows(self.source, self.order(np.arange(start, start + self.local)))


def eval_batches(source, batch_size: int, max_examples: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """The split in order, in batches of `batch_size` (the last one may be smaller)."""
  n = len(source) if max_examples <= 0 else min(len(source), max_examples)
  for start in range(0, n, batch_size):
    yield pipeline.read_rows(source, np.arange(start, min(n, start + batch_size)))


def to_device(batch: dict[str, np.ndarray], mesh: Mesh, *, global_size: int | None = None) -> dict:
  """Places a batch on the mesh: sharded along 'data' when it divides evenly, else replicated.

  `batch` is this process's share; `global_size` the global batch (default: the local one times
  the process count). global_size == the local size means every process holds the whole batch.
  """
  local = len(next(iter(batch.values())))
  global_size = global_size or local * jax.process_count()
  if global_size % mesh.size == 0:
    sharding = data_sharded(mesh)
  elif global_size == local:
    sharding = replicated(mesh)
  else:
    raise ValueError(f'a batch of {global_size} does not split over {mesh.size} devices')
  return {k: jax.make_array_from_process_local_data(sharding, v, (global_size,) + v.shape[1:])
          for k, v in batch.items()}


def count_tokens(batch: dict[str, Any], keys: Sequence[str]) -> int:
  """Non-PAD entries of the integer arrays among `keys` (the tokens a model reads)."""
  total = 0
  for k in keys:
    v = np.asarray(batch[k])
    if np.issubdtype(v.dtype, np.integer) and v.ndim >= 2:
      total += int(np.count_nonzero(v))
  return total
