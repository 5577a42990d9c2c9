"""Batches as a pure function of (seed, step), and their placement on the device mesh.

config.train.batching picks how train batches are made (BATCHING):
  'padded'    batch `step` holds examples [step*B, (step+1)*B) of the split under the data
              pipeline's per-epoch shuffle (attention_zoo.data.pipeline.EpochShuffle: a new
              permutation each epoch, the same batches as task.batches(...)), every sequence at
              the split's full (padded) width.
  'bucketed'  length bucketing for sequence tasks (seq2seq, lm): each batch holds examples of
              about one length, its sequences cut to that bucket's static length
              (pipeline.LengthBuckets), so the step computes on few PADs and compiles once per
              bucket. Bucket lengths: train.bucket_lengths, or at most train.num_buckets
              multiples of 8 that minimize the train split's padded positions
              (pipeline.best_bucket_lengths); batch size: train.batch_size, or with
              train.batch_tokens > 0 about batch_tokens / length examples (equal positions).
Either way a resumed run sees exactly the batches an uninterrupted one would, with no iterator
state to checkpoint. Each process loads only its shard of the global batch: for process p of P
(grain.sharding.ShardByJaxProcess), the rows [p * B / P, (p + 1) * B / P), one contiguous block,
so the global array holds the global batch in its own order whatever P is. (Not grain's strided
shard [p::P]: the same examples in another order would meet other dropout masks, which follow
the row.) Cutting only drops PAD columns, which every model masks, so a bucketed batch has the loss
of the same examples padded (tests/test_train_batching.py).
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence

import grain
import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from attention_zoo.data import pipeline
from attention_zoo.data.base import Task
from attention_zoo.registry import choose

# The [B, L] token arrays a bucket cuts, per task kind (PAD-padded at the end).
SEQUENCE_KEYS: dict[str, tuple[str, ...]] = {'seq2seq': ('source', 'target_in', 'target_out'),
                                             'lm': ('inputs', 'targets')}


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, axis 'data', process by process: the rows of
  a batch sharded along it are process 0's devices' first, so each process's share of the global
  array is one contiguous block, [i * B / P, (i + 1) * B / P) for process i of P (what
  jax.make_array_from_process_local_data expects of the shards the train batches load)."""
  devices = sorted(jax.devices(), key=lambda d: d.process_index)  # stable: jax's order within
  return Mesh(np.asarray(devices), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`tree`, whose leaves hold the same values in every process, as arrays replicated over every
  device of `mesh`. With several processes, jax.device_put refuses an array already placed on a
  local device (and checks the others with a collective per leaf); each process places its own
  copy instead (leaves that are global arrays already are kept)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, replicated(mesh))
  return multihost_utils.host_local_array_to_global_array(tree, mesh, P())


def process_shard() -> grain.sharding.ShardOptions:
  """This process's index and the process count, as grain shards data by JAX process."""
  return grain.sharding.ShardByJaxProcess(drop_remainder=True)


def own_block(rows: np.ndarray, shard: grain.sharding.ShardOptions) -> np.ndarray:
  """`rows` of a global batch [B] -> this process's block [B / P] (shard_index of shard_count)."""
  return np.asarray(rows).reshape(shard.shard_count, -1)[shard.shard_index]


class TrainBatches:
  """batch(step) -> this process's shard of global train batch `step` (numpy dict).

  A grain MapDataset: the global example stream i = 0, 1, ... (epoch i // n, shuffled by
  EpochShuffle) in global batches of B, of which process p of P reads only its block of B / P.
  """

  def __init__(self, source, batch_size: int, seed: int):
    n_dev, shard = jax.device_count(), process_shard()
    if batch_size % n_dev:
      raise ValueError(f'train.batch_size={batch_size} must be a multiple of the device count '
                       f'({n_dev})')
    if len(source) == 0:
      raise ValueError('the train split is empty')
    self.source = source
    self.order = pipeline.EpochShuffle(len(source), seed, shuffle=True)
    self.batch_size = batch_size
    self._batches = (grain.MapDataset.range(sys.maxsize // 2).batch(batch_size)
                     .map(lambda idx: own_block(idx, shard))
                     .map(lambda idx: pipeline.read_rows(source, self.order(idx))))

  def batch(self, step: int) -> dict[str, np.ndarray]:
    return self._batches[step]

  def shape_batches(self) -> list[dict[str, np.ndarray]]:
    """One batch of each shape the stream has (to compile the train step for): one."""
    return [self.batch(0)]


class BucketedTrainBatches:
  """batch(step) -> this process's share of bucketed train batch `step` (see module docstring).

  Args:
    source: the train split.
    keys: the [L] token arrays of an example that are cut (SEQUENCE_KEYS of the task kind).
    batch_size: examples per batch when batch_tokens <= 0.
    seed: config.seed.
    bucket_lengths: static lengths, increasing; () picks them from the lengths
      (pipeline.best_bucket_lengths). Examples longer than the last get one more bucket, the
      full width.
    num_buckets: at most this many buckets, when bucket_lengths is ().
    batch_tokens: > 0: bucket length L gets batch_tokens // L examples (rounded down to a
      multiple of the device count, at least the device count), so every batch has about the
      same tokens (PAD included); <= 0: batch_size examples in every bucket.
  """

  def __init__(self, source, keys: tuple[str, ...], batch_size: int, seed: int, *,
               bucket_lengths: tuple[int, ...] = (), num_buckets: int = 8,
               batch_tokens: int = 0):
    n_dev = jax.device_count()
    if len(source) == 0:
      raise ValueError('the train split is empty')
    first = pipeline.read_rows(source, np.arange(1))
    missing = [k for k in keys if k not in first]
    if missing:
      raise ValueError(f'train.batching=bucketed: the batches have no {missing}; keys: '
                       f'{sorted(first)}')
    width = max(first[k].shape[1] for k in keys)
    lengths = pipeline.sequence_lengths(source, keys)
    if bucket_lengths:
      buckets = tuple(int(x) for x in bucket_lengths)
      if list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
        raise ValueError(f'train.bucket_lengths must be positive and increasing, got '
                         f'{tuple(bucket_lengths)}')
      if lengths.max() > buckets[-1]:  # the longest examples: one bucket at the full width
        buckets += (width,)
    else:
      buckets = pipeline.best_bucket_lengths(lengths, num_buckets, width)
    if batch_tokens > 0:
      sizes = [max(n_dev, batch_tokens // length // n_dev * n_dev) for length in buckets]
    else:
      if batch_size % n_dev:
        raise ValueError(f'train.batch_size={batch_size} must be a multiple of the device count '
                         f'({n_dev})')
      sizes = [batch_size] * len(buckets)
    self.source, self.keys, self.shard = source, keys, process_shard()
    self.plan = pipeline.LengthBuckets(lengths, buckets, sizes, seed)
    computed = sum(c * s * n for c, s, n in zip(self.plan.batches_per_bucket, sizes, buckets))
    logging.info('bucketed batches: lengths %s, batch sizes %s, batches per epoch %s; an epoch '
                 'computes %.0f%% of the positions padded batches would', buckets, sizes,
                 self.plan.batches_per_bucket, 100 * computed / (len(lengths) * width))

  def batch(self, step: int) -> dict[str, np.ndarray]:
    bucket, rows = self.plan(step)
    rows = own_block(rows, self.shard)
    return pipeline.trim(pipeline.read_rows(self.source, rows), self.keys,
                         self.plan.bucket_lengths[bucket])

  def shape_batches(self) -> list[dict[str, np.ndarray]]:
    """One batch of each shape the stream has: one per bucket that gives batches."""
    out = []
    for b, count in enumerate(self.plan.batches_per_bucket):
      if count:
        rows = np.zeros(self.plan.batch_sizes[b] // self.shard.shard_count, np.int64)
        out.append(pipeline.trim(pipeline.read_rows(self.source, rows), self.keys,
                                 self.plan.bucket_lengths[b]))
    return out


def _padded(task: Task, tc, seed: int) -> TrainBatches:
  return TrainBatches(task.splits['train'], tc.batch_size, seed)


def _bucketed(task: Task, tc, seed: int) -> BucketedTrainBatches:
  keys = choose(SEQUENCE_KEYS, task.kind,
                f'task kind for train.batching=bucketed (task {task.name!r})')
  return BucketedTrainBatches(task.splits['train'], keys, tc.batch_size, seed,
                              bucket_lengths=tuple(tc.bucket_lengths), num_buckets=tc.num_buckets,
                              batch_tokens=tc.batch_tokens)


BATCHING = {'padded': _padded, 'bucketed': _bucketed}


def train_batches(task: Task, tc, seed: int) -> TrainBatches | BucketedTrainBatches:
  """The train batches of config.train `tc` (tc.batching: 'padded' | 'bucketed')."""
  return choose(BATCHING, tc.batching, 'train.batching')(task, tc, seed)


def full_width(source) -> dict[str, np.ndarray]:
  """A batch of the split's first example, at the split's full (padded) width."""
  return pipeline.read_rows(source, np.arange(1))


def shape_key(batch: dict[str, Any]) -> tuple:
  return tuple(sorted((k, tuple(v.shape)) for k, v in batch.items()))


class StepPerShape:
  """step(leaves, batch, seed_key) run by the program compiled for the batch's shapes.

  `programs`: (a batch of one shape, the train step compiled for it) pairs; a batch of a shape
  none was compiled for raises (it would mean a bucket the stream does not have).
  """

  def __init__(self, programs: Sequence[tuple[dict[str, Any], Any]]):
    self.programs = {shape_key(b): fn for b, fn in programs}

  def __call__(self, leaves, batch, seed_key):
    key = shape_key(batch)
    if key not in self.programs:
      raise ValueError(f'no train step compiled for batch shapes {key}; '
                       f'compiled: {list(self.programs)}')
    return self.programs[key](leaves, batch, seed_key)


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
