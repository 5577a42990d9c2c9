"""Seq2seq tasks from (source tokens, target tokens) pairs: encoding, builder base, Task assembly.

Encoding of one pair with max lengths S and T (PAD = 0, BOS = 1, EOS = 2):
  source     [S] = x (reversed when reverse_source: Sutskever et al. 2014) + PAD...   (no BOS/EOS)
                   so vocab.decode(source[::-1]) is x again when reversed (decode skips PAD)
  target_in  [T] = BOS y + PAD...
  target_out [T] = y EOS + PAD...          so len(y) + 1 <= T
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from attention_zoo.data import metrics
from attention_zoo.data.base import Task
from attention_zoo.specials import BOS, EOS
from attention_zoo.data.builder import ArrayBuilder, Example, Spec
from attention_zoo.data.vocab import Vocab

Pair = tuple[Sequence[str], Sequence[str]]


def encode_pair(source: Sequence[str], target: Sequence[str], src_vocab: Vocab, tgt_vocab: Vocab,
                *, max_source_len: int, max_target_len: int, reverse_source: bool = False,
                where: str = '') -> Example:
  """One example dict (see module docstring); a pair too long raises ValueError naming it."""
  if len(source) > max_source_len:
    raise ValueError(f'{where}source {"".join(source)!r} has {len(source)} tokens > '
                     f'max_source_len={max_source_len}')
  if len(target) + 1 > max_target_len:
    raise ValueError(f'{where}target {"".join(target)!r} has {len(target)} tokens + EOS > '
                     f'max_target_len={max_target_len}')
  src = src_vocab.encode(source)
  if reverse_source:
    src = src[::-1]
  tgt = tgt_vocab.encode(target)
  out = {k: np.zeros(n, np.int32) for k, n in
         (('source', max_source_len), ('target_in', max_target_len),
          ('target_out', max_target_len))}
  out['source'][:len(src)] = src
  out['target_in'][:len(tgt) + 1] = [BOS] + tgt
  out['target_out'][:len(tgt) + 1] = tgt + [EOS]
  return out


def unique_draws(draw: Callable[[np.random.Generator], Any], sizes: Mapping[str, int], seed: int,
                 *, task: str, max_misses: int = 100_000) -> dict[str, list]:
  """Draws distinct items (hashable) and deals them into splits in order: no item is in two splits.

  Raises ValueError when the space runs out (max_misses duplicates in a row).
  """
  rng = np.random.default_rng(seed)
  total = sum(sizes.values())
  seen: dict[Any, None] = {}
  misses = 0
  while len(seen) < total:
    item = draw(rng)
    if item in seen:
      misses += 1
      if misses > max_misses:
        raise ValueError(f'task {task!r}: only {len(seen)} distinct examples found, {total} asked '
                         f'({dict(sizes)}); lower the sizes or widen the task options')
      continue
    misses = 0
    seen[item] = None
  items = list(seen)
  out, start = {}, 0
  for split, n in sizes.items():
    out[split] = items[start:start + n]
    start += n
  return out


class Seq2SeqBuilder(ArrayBuilder, skip_registration=True):
  """Builder base for seq2seq: subclasses implement `pairs(options, manual_dir)`.

  `pairs` returns ({split: iterable of (source tokens, target tokens, where)}, source vocab,
  target vocab, extra metadata). Options used here: max_source_len, max_target_len,
  reverse_source (the lengths may be None in `options` when `pairs` fills them in metadata).
  """

  @classmethod
  def feature_spec(cls, options: Mapping[str, Any]) -> Spec:
    s, t = options['max_source_len'], options['max_target_len']
    return {'source': ((s,), np.int32), 'target_in': ((t,), np.int32),
            'target_out': ((t,), np.int32)}

  @classmethod
  def pairs(cls, options, manual_dir):
    raise NotImplementedError

  @classmethod
  def generate(cls, options, manual_dir):
    splits, src_vocab, tgt_vocab, metadata = cls.pairs(options, manual_dir)
    encode = functools.partial(encode_pair, src_vocab=src_vocab, tgt_vocab=tgt_vocab,
                               max_source_len=options['max_source_len'],
                               max_target_len=options['max_target_len'],
                               reverse_source=options.get('reverse_source', False))
    metadata = dict(metadata, source_vocab=src_vocab.to_json(), target_vocab=tgt_vocab.to_json())
    return ({name: (encode(s, t, where=w) for s, t, w in items) for name, items in splits.items()},
            metadata)


def seq2seq_task(name: str, splits: Mapping[str, Any], src_vocab: Vocab, tgt_vocab: Vocab,
                 max_target_len: int, *, with_bleu: bool = False) -> Task:
  """A 'seq2seq' Task with token / sequence accuracy and generation metrics (+ BLEU if asked)."""

  def metrics_fn(logits, batch):
    return {'token_accuracy': metrics.token_accuracy(logits, batch['target_out']),
            'sequence_accuracy': metrics.sequence_accuracy(logits, batch['target_out'])}

  def generation_metrics_fn(predicted, batch):
    out = metrics.generation_metrics(predicted, batch['target_out'])
    if with_bleu:
      hyps = [tgt_vocab.decode(row) for row in np.asarray(predicted)]
      refs = [tgt_vocab.decode(row) for row in np.asarray(batch['target_out'])]
      out['bleu'] = metrics.bleu(hyps, refs)
    return out

  return Task(name=name, kind='seq2seq', splits=dict(splits),
              model_dims={'src_vocab_size': len(src_vocab), 'tgt_vocab_size': len(tgt_vocab)},
              vocab=tgt_vocab, source_vocab=src_vocab, max_target_len=max_target_len,
              metrics_fn=metrics_fn, generation_metrics_fn=generation_metrics_fn)
