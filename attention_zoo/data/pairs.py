"""Seq2seq tasks from (source tokens, target tokens) pairs: encoding, builder base, Task assembly.

Encoding of one pair with max lengths S and T (PAD = 0, BOS = 1, EOS = 2):
  source     [S] = x (reversed when reverse_source: Sutskever et al. 2014) + PAD...   (no BOS/EOS)
                   so vocab.decode(source[::-1]) is x again when reversed (decode skips PAD)
  target_in  [T] = BOS y + PAD...
  target_out [T] = y EOS + PAD...          so len(y) + 1 <= T
  ref_index  []  = row of the example's raw target line in the task's references (translation
                   tasks that keep them: validation and test), -1 for train; only when the
                   builder's options set `references`
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import numpy as np

from attention_zoo.data import metrics
from attention_zoo.data.base import Task
from attention_zoo.specials import BOS, EOS
from attention_zoo.data.builder import ArrayBuilder, Example, Spec
from attention_zoo.data.vocab import Vocab

Pair = tuple[Sequence[str], Sequence[str]]


def encode_pair(source: Sequence[str], target: Sequence[str], src_vocab: Vocab, tgt_vocab: Vocab,
                *, max_source_len: int, max_target_len: int, reverse_source: bool = False,
                where: str = '', allow_unk: bool = False) -> Example:
  """One example dict (see module docstring); a pair too long raises ValueError naming it.

  A token not in its vocabulary raises ValueError, or becomes UNK when allow_unk."""
  return encode_ids(src_vocab.encode(source, allow_unk=allow_unk),
                    tgt_vocab.encode(target, allow_unk=allow_unk),
                    max_source_len=max_source_len, max_target_len=max_target_len,
                    reverse_source=reverse_source, where=where,
                    texts=(''.join(source), ''.join(target)))


def encode_ids(src: Sequence[int], tgt: Sequence[int], *, max_source_len: int,
               max_target_len: int, reverse_source: bool = False, where: str = '',
               texts: tuple[str, str] = ('', '')) -> Example:
  """One example dict from the ids of x and y (see module docstring); a pair too long raises
  ValueError naming `where` (file:line) and the side's text `texts`."""
  if len(src) > max_source_len:
    raise ValueError(f'{where}source {texts[0]!r} has {len(src)} tokens > '
                     f'max_source_len={max_source_len}')
  if len(tgt) + 1 > max_target_len:
    raise ValueError(f'{where}target {texts[1]!r} has {len(tgt)} tokens + EOS > '
                     f'max_target_len={max_target_len}')
  src, tgt = list(src), list(tgt)
  if reverse_source:
    src = src[::-1]
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
    spec = {'source': ((s,), np.int32), 'target_in': ((t,), np.int32),
            'target_out': ((t,), np.int32)}
    if options.get('references'):
      spec['ref_index'] = ((), np.int32)
    return spec

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
                 max_target_len: int, *, with_bleu: bool = False,
                 references: Sequence[str] | None = None,
                 metadata: Mapping[str, Any] | None = None) -> Task:
  """A 'seq2seq' Task with token / sequence accuracy and generation metrics (+ BLEU and chrF).

  With with_bleu, generation_metrics_fn adds sacrebleu's corpus BLEU and chrF
  (metrics.text_scores) of the decoded predictions (tgt_vocab.decode: detokenized text) against
  the raw reference line of each example, `references[batch['ref_index'][i]]`; an example with
  no reference (no ref_index, or -1) is scored against its decoded target_out instead. The
  sacrebleu signatures are logged at the first scoring and kept in task.metadata['bleu_signature'] /
  ['chrf_signature'] (with `metadata`, e.g. the dataset's <unk> counts).
  """
  refs_all = list(references or ())
  metadata = dict(metadata or {})
  if with_bleu:  # the signature depends on the settings only (nrefs 1): known before any run
    metadata.update({f'{k}_signature': v for k, v in metrics.text_scores(['.'], ['.'])[1].items()})
  logged = []

  def metrics_fn(logits, batch):
    return {'token_accuracy': metrics.token_accuracy(logits, batch['target_out']),
            'sequence_accuracy': metrics.sequence_accuracy(logits, batch['target_out'])}

  def generation_metrics_fn(predicted, batch):
    out = metrics.generation_metrics(predicted, batch['target_out'])
    if with_bleu:
      hyps = [tgt_vocab.decode(row) for row in np.asarray(predicted)]
      index = np.asarray(batch.get('ref_index', np.full(len(hyps), -1)))
      refs = [refs_all[i] if i >= 0 else tgt_vocab.decode(row)
              for i, row in zip(index, np.asarray(batch['target_out']))]
      scores, signatures = metrics.text_scores(hyps, refs)
      out.update(scores)
      if not logged:
        logging.info('%s: sacrebleu signatures: BLEU %s; chrF %s', name, signatures['bleu'],
                     signatures['chrf'])
        logged.append(True)
    return out

  return Task(name=name, kind='seq2seq', splits=dict(splits),
              model_dims={'src_vocab_size': len(src_vocab), 'tgt_vocab_size': len(tgt_vocab)},
              vocab=tgt_vocab, source_vocab=src_vocab, max_target_len=max_target_len,
              metrics_fn=metrics_fn, generation_metrics_fn=generation_metrics_fn,
              metadata=metadata)
