"""Bring-your-own seq2seq data: one example per line, "source<delimiter>target".

  data_dir/train.txt:   "16+75  _91  "   (delimiter '_', padding spaces stripped when strip=True)
                        "je suis\tI am"  (delimiter '\\t', tokenization 'word')
A line without exactly one delimiter, or with an empty side, raises ValueError naming file:line;
with skip_bad_lines=True such lines are skipped and their count is logged. Vocabularies (source and
target separately) are built from the train file; a token of another split missing from them is
an error naming file:line. Without validation_file / test_file, num_validation / num_test train
lines (default 10% each) are held out with np.random.default_rng(split_seed).
max_source_len / max_target_len None: the longest in the data (target + EOS).
tokenization: 'char', 'word' or 'byte' (UTF-8 bytes), the levels of attention_zoo.data.vocab.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import numpy as np

from attention_zoo.data import pairs
from attention_zoo.data.base import Task
from attention_zoo.data.builder import build, resolve_data_dir
from attention_zoo.data.registry import register_task
from attention_zoo.data.vocab import Vocab, tokenize

Line = tuple[list[str], list[str], str]  # source tokens, target tokens, 'file:line: '


def read_pairs(path: str, *, delimiter: str, strip: bool, tokenization: str,
               skip_bad_lines: bool) -> list[Line]:
  """The tokenized pairs of one file."""
  if not os.path.isfile(path):
    raise ValueError(f'parallel_text: file {path} does not exist')
  if not delimiter:
    raise ValueError('parallel_text: the delimiter must not be empty')
  out, bad = [], 0
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      parts = line.rstrip('\r\n').split(delimiter)
      if strip:
        parts = [p.strip() for p in parts]
      problem = (f'expected one {delimiter!r} delimiter, found {len(parts) - 1}' if len(parts) != 2
                 else 'empty source or target' if not (parts[0] and parts[1]) else None)
      if problem:
        if skip_bad_lines:
          bad += 1
          continue
        raise ValueError(f'{path}:{lineno}: {problem}: {line.rstrip()!r} '
                         '(skip_bad_lines=True skips such lines)')
      out.append((tokenize(parts[0], tokenization), tokenize(parts[1], tokenization),
                  f'{path}:{lineno}: '))
  if bad:
    logging.warning('parallel_text: skipped %d malformed line(s) of %s', bad, path)
  return out


def read_splits(o: dict[str, Any], data_dir: str) -> dict[str, list[Line]]:
  """{'train', 'validation', 'test'} lines, holding out from train where a file is not given."""
  read = lambda name: read_pairs(os.path.join(data_dir, name), delimiter=o['delimiter'],
                                 strip=o['strip'], tokenization=o['tokenization'],
                                 skip_bad_lines=o['skip_bad_lines'])
  train = read(o['train_file'])
  held = {k: o[f'{k}_file'] for k in ('validation', 'test')}
  counts = {k: (o[f'num_{k}'] if o[f'num_{k}'] is not None else len(train) // 10)
            for k, f in held.items() if f is None}
  order = np.random.default_rng(o['split_seed']).permutation(len(train))
  if sum(counts.values()) >= len(train):
    raise ValueError(f'parallel_text: holding out {counts} leaves no train lines of {len(train)}')
  out, start = {}, 0
  for k, n in counts.items():
    out[k] = [train[i] for i in order[start:start + n]]
    start += n
  out['train'] = [train[i] for i in sorted(order[start:])]
  for k, f in held.items():
    if f is not None:
      out[k] = read(f)
  return out


class AzParallelText(pairs.Seq2SeqBuilder):
  """TFDS builder of a parallel-text folder (see module docstring)."""

  @classmethod
  def pairs(cls, o, manual_dir):
    splits = read_splits(o, manual_dir)
    level = o['tokenization']
    src_vocab = Vocab(sorted({x for s, _, _ in splits['train'] for x in s}), level=level)
    tgt_vocab = Vocab(sorted({x for _, t, _ in splits['train'] for x in t}), level=level)
    for name, lines in splits.items():
      for s, t, where in lines:
        for side, tokens, vocab in (('source', s, src_vocab), ('target', t, tgt_vocab)):
          missing = [x for x in tokens if x not in vocab.tokens]
          if missing:
            raise ValueError(f'{where}{side} token(s) {sorted(set(missing))} of the {name} split '
                             'are not in the train vocabulary')
    return splits, src_vocab, tgt_vocab, {}


@register_task('parallel_text')
def parallel_text(train_file: str = 'train.txt', validation_file: str | None = None,
                  test_file: str | None = None, num_validation: int | None = None,
                  num_test: int | None = None, split_seed: int = 0, delimiter: str = '\t',
                  strip: bool = True, tokenization: str = 'char', skip_bad_lines: bool = False,
                  max_source_len: int | None = None, max_target_len: int | None = None,
                  reverse_source: bool = False, bleu: bool | None = None,
                  data_dir: str | None = None, tfds_dir: str | None = None) -> Task:
  """A seq2seq task from line files in data_dir. bleu None: on for word tokenization."""
  tokenize('', tokenization)  # validates
  data_dir = resolve_data_dir(data_dir, 'parallel_text', 'parallel_text')
  o: dict[str, Any] = dict(train_file=train_file, validation_file=validation_file,
                           test_file=test_file, num_validation=num_validation, num_test=num_test,
                           split_seed=split_seed, delimiter=delimiter, strip=strip,
                           tokenization=tokenization, skip_bad_lines=skip_bad_lines,
                           reverse_source=reverse_source)
  if max_source_len is None or max_target_len is None:
    lines = [x for v in read_splits(o, data_dir).values() for x in v]
    max_source_len = max_source_len or max(len(s) for s, _, _ in lines)
    max_target_len = max_target_len or max(len(t) for _, t, _ in lines) + 1
  o.update(max_source_len=max_source_len, max_target_len=max_target_len)
  splits, meta = build(AzParallelText, o, tfds_dir=tfds_dir, manual_dir=data_dir)
  src_vocab = Vocab.from_json(meta['source_vocab'])
  tgt_vocab = Vocab.from_json(meta['target_vocab'])
  with_bleu = tokenization == 'word' if bleu is None else bleu
  return pairs.seq2seq_task('parallel_text', splits, src_vocab, tgt_vocab, max_target_len,
                            with_bleu=with_bleu)
