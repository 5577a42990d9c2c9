"""Batches through grain, deterministic from the seed.

  grain.MapDataset.range(n * epochs) -batch(B)-> global indices [B]      (n examples in the split)
    -map-> epoch e = i // n, position i % n -> permutation_e[position] -> source rows -> batch
permutation_e = np.random.default_rng([seed, e]).permutation(n): every epoch is a fresh uniform
shuffle, and batch k is a pure function of (seed, k), so any batch can be recomputed (resumable).
One numpy permutation per epoch (about a millisecond for tens of thousands of examples) instead
of grain's own MapDataset.shuffle, whose per-index Feistel permutation is slower than the batches
are consumed; `python -m experiments.bench data` shows the pipeline's examples/s.
Sources with `read_batch(indices)` (our SplitSource) are read a batch at a time; any other
random-access source (len + [i] -> dict) is read per example and stacked. Both give the same
batches for the same seed. Batches may straddle epochs (repeat-then-batch).
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence

import grain
import numpy as np


class EpochShuffle:
  """Global example index -> source index; epoch e is permuted by default_rng([seed, e])."""

  def __init__(self, n: int, seed: int, shuffle: bool):
    self.n, self.seed, self.shuffle = n, seed, shuffle
    self._perms: dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      if len(self._perms) > 4:
        self._perms.pop(min(self._perms))
      self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
    return self._perms[epoch]

  def __call__(self, indices: np.ndarray) -> np.ndarray:
    epochs, pos = np.divmod(np.asarray(indices, np.int64), self.n)
    if not self.shuffle:
      return pos
    out = np.empty_like(pos)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self._perm(int(e))[pos[sel]]
    return out


def stack(examples: Sequence[dict]) -> dict:
  """Examples (dicts of arrays) -> one batch: {key: [B, ...]}."""
  return {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in examples[0]}


def read_rows(source: Sequence[Any], rows: np.ndarray) -> dict:
  """The batch of `source`'s examples at `rows` (its `read_batch` if it has one)."""
  if hasattr(source, 'read_batch'):
    return source.read_batch(rows)
  return stack([source[int(i)] for i in rows])


def batches(source: Sequence[Any], batch_size: int, *, seed: int, shuffle: bool = True,
            num_epochs: int | None = None, drop_remainder: bool = True,
            prefetch: int = 0) -> Iterator[dict]:
  """An iterator of batches (dicts of numpy arrays [B, ...]).

  Args:
    source: random-access split (len() and [i] -> dict of arrays; `read_batch` used if present).
    batch_size: B.
    seed: shuffle seed; each epoch is shuffled anew from it.
    shuffle: False keeps the stored order.
    num_epochs: None repeats forever.
    drop_remainder: drop a last short batch (finite num_epochs only).
    prefetch: >0 reads that many batches ahead in a background thread (grain ReadOptions).
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f'num_epochs must be >= 1 or None, got {num_epochs}')
  n = len(source)
  if n == 0:
    raise ValueError('cannot batch an empty split')
  order = EpochShuffle(n, seed, shuffle)
  read = lambda idx: read_rows(source, order(idx))
  total = sys.maxsize // 2 if num_epochs is None else n * num_epochs
  ds = grain.MapDataset.range(total).batch(batch_size, drop_remainder=drop_remainder).map(read)
  if prefetch > 0:
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                                     prefetch_buffer_size=prefetch)))
  # In the calling thread: grain's default pool of 16 threads halved throughput on 2 cores.
  return (ds[i] for i in range(len(ds)))


# ---- length buckets: batches of examples of about one length, trimmed to a few static lengths ----
def sequence_lengths(source: Sequence[Any], keys: Sequence[str], chunk: int = 8192) -> np.ndarray:
  """[n] int: per example, the end of its last non-PAD token in any of `keys` (arrays [L] padded
  with PAD = 0 at the end), i.e. the shortest width every one of those arrays can be cut to."""
  out = np.zeros(len(source), np.int64)
  for start in range(0, len(source), chunk):
    rows = read_rows(source, np.arange(start, min(len(source), start + chunk)))
    for key in keys:
      real = np.asarray(rows[key]) != 0  # [b, L]; 0 = PAD (attention_zoo.specials)
      end = np.where(real.any(1), real.shape[1] - np.argmax(real[:, ::-1], 1), 0)
      out[start:start + len(end)] = np.maximum(out[start:start + len(end)], end)
  return out


def best_bucket_lengths(lengths: np.ndarray, num_buckets: int, width: int,
                        multiple: int = 8) -> tuple[int, ...]:
  """At most `num_buckets` static lengths that minimize the positions of an epoch of `lengths`.

  Candidates are the multiples of `multiple` below `width`, and the longest length rounded up to
  one (capped at `width`), which is always the last bucket. An example costs the first bucket
  length >= its length; dynamic programming over the candidates c_1 < ... < c_m picks the subset
  (ending at c_m) of least total cost  sum_b c_b · #{i : c_{b-1} < lengths[i] <= c_b}.
  """
  if num_buckets < 1:
    raise ValueError(f'num_buckets must be >= 1, got {num_buckets}')
  lengths = np.asarray(lengths, np.int64)
  top = min(-(-max(int(lengths.max()), 1) // multiple) * multiple, width)
  cands = np.array(sorted({*range(multiple, top, multiple), top}), np.int64)  # [m]
  below = np.searchsorted(np.sort(lengths), cands, side='right')  # examples <= each candidate
  m = len(cands)
  start = np.concatenate([[0], below[:-1]])  # [m]: examples <= cands[i - 1]
  # cost[i, j]: a bucket at cands[j] holding the examples in (cands[i - 1], cands[j]]
  cost = np.where(np.arange(m)[:, None] <= np.arange(m)[None, :],
                  (below[None, :] - start[:, None]) * cands[None, :], np.inf)  # [m, m]
  levels = min(num_buckets, m)
  dp = np.full((levels, m), np.inf)  # dp[l, j]: least cost of l + 1 buckets, the last at j
  parent = np.zeros((levels, m), np.int64)
  dp[0] = cost[0]
  for level in range(1, levels):
    for j in range(level, m):
      total = dp[level - 1, :j] + cost[1:j + 1, j]  # previous bucket at k < j
      parent[level, j] = int(np.argmin(total))
      dp[level, j] = total[parent[level, j]]
  level, j = int(np.argmin(dp[:, m - 1])), m - 1
  out = [int(cands[j])]
  while level > 0:
    j, level = int(parent[level, j]), level - 1
    out.append(int(cands[j]))
  return tuple(sorted(out))


class LengthBuckets:
  """Batches of examples grouped by length; batch k of the stream is a pure function of (seed, k).

  Example i goes to the first bucket b with lengths[i] <= bucket_lengths[b]; bucket b's batches
  hold batch_sizes[b] examples. Epoch e:
    perm = default_rng([seed, e]).permutation(n)       (EpochShuffle's permutation)
    bucket by bucket, shortest first: the bucket's examples in perm order, after those carried up
      from the bucket below, cut into full batches; the remainder (< batch_sizes[b]) joins the
      next longer bucket (it fits there); the longest bucket's remainder makes one more batch,
      filled up by repeating that bucket's first examples (the only repeats of an epoch)
    the epoch's batches in the order default_rng([seed, e, 1]).permutation(per_epoch)
  How many batches each bucket gives depends only on the bucket counts, so every epoch has the
  same `per_epoch` batches, and step -> (epoch, position) needs no state: resumable.
  """

  def __init__(self, lengths: np.ndarray, bucket_lengths: Sequence[int],
               batch_sizes: Sequence[int], seed: int):
    self.lengths = np.asarray(lengths, np.int64)
    self.bucket_lengths = tuple(int(x) for x in bucket_lengths)
    self.batch_sizes = tuple(int(x) for x in batch_sizes)
    if len(self.bucket_lengths) != len(self.batch_sizes) or not self.bucket_lengths:
      raise ValueError(f'{len(self.bucket_lengths)} bucket lengths for {len(self.batch_sizes)} '
                       'batch sizes')
    if list(self.bucket_lengths) != sorted(set(self.bucket_lengths)):
      raise ValueError(f'bucket lengths must increase, got {self.bucket_lengths}')
    if len(self.lengths) == 0:
      raise ValueError('cannot bucket an empty split')
    if self.lengths.max() > self.bucket_lengths[-1]:
      raise ValueError(f'an example of length {self.lengths.max()} is longer than the longest '
                       f'bucket ({self.bucket_lengths[-1]})')
    self.seed = seed
    self.bucket_of = np.searchsorted(self.bucket_lengths, self.lengths, side='left')  # [n]
    counts = np.bincount(self.bucket_of, minlength=len(self.bucket_lengths))
    self.batches_per_bucket, carry = [], 0
    for b, size in enumerate(self.batch_sizes):
      avail = counts[b] + carry
      last = b == len(self.batch_sizes) - 1
      full = -(-avail // size) if last else avail // size
      self.batches_per_bucket.append(int(full))
      carry = 0 if last else avail - full * size
    self.per_epoch = sum(self.batches_per_bucket)
    self._epochs: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}

  def _epoch(self, epoch: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """-> (bucket of each batch [per_epoch], source rows of each batch), in the epoch's order."""
    if epoch not in self._epochs:
      if len(self._epochs) > 2:
        self._epochs.pop(min(self._epochs))
      perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.lengths))
      bucket_of = self.bucket_of[perm]
      buckets, rows = [], []
      carry = perm[:0]
      for b, (size, count) in enumerate(zip(self.batch_sizes, self.batches_per_bucket)):
        members = np.concatenate([carry, perm[bucket_of == b]])
        if b == len(self.batch_sizes) - 1 and len(members):
          members = np.resize(members, count * size)  # repeats the first examples to fill up
        rows.extend(members[:count * size].reshape(count, size))
        buckets.extend([b] * count)
        carry = members[count * size:]
      order = np.random.default_rng([self.seed, epoch, 1]).permutation(self.per_epoch)
      self._epochs[epoch] = (np.asarray(buckets)[order], [rows[i] for i in order])
    return self._epochs[epoch]

  def __call__(self, step: int) -> tuple[int, np.ndarray]:
    """Batch `step` of the stream -> (its bucket, its source rows [batch_sizes[bucket]])."""
    epoch, position = divmod(int(step), self.per_epoch)
    buckets, rows = self._epoch(epoch)
    return int(buckets[position]), rows[position]


def trim(batch: dict, keys: Sequence[str], length: int) -> dict:
  """`batch` with the arrays of `keys` [B, L] cut to [B, min(L, length)] (the cut part must be
  PAD); every other key unchanged."""
  return {k: (v[:, :length] if k in keys else v) for k, v in batch.items()}
