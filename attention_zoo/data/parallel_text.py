"""Bring-your-own seq2seq data, in one of two layouts.

One delimited file per split (the default): one example per line, "source<delimiter>target".
  data_dir/train.txt:   "16+75  _91  "   (delimiter '_', padding spaces stripped when strip=True)
                        "je suis\tI am"  (delimiter '\\t', tokenization 'word')
  A line without exactly one delimiter raises ValueError naming file:line.

The standard MT layout (when source_language and target_language are given): line-aligned files
per language, `{split}.{language}` with `.gz` optional, e.g. train.en train.de val.en val.de
test.en test.de; split `train`, `val` (or `validation`, `valid`, `dev`) and `test` (other prefixes:
train_file / validation_file / test_file). Two files of a split with different line counts raise
ValueError naming both files and counts.

Either layout: an empty source or target raises ValueError naming file:line, or with
skip_bad_lines=True is skipped and counted in the log; bytes that are not UTF-8 raise ValueError
naming file:line. Without a validation / test file, num_validation / num_test train lines
(default 10% each) are held out with np.random.default_rng(split_seed).

Vocabularies come from the train split only (attention_zoo.data.tokenizers: tokenization 'char',
'word', 'byte' with min_count / max_vocab, or 'sentencepiece' with vocab_size /
sentencepiece_type; joint_vocab for one vocabulary of both sides). A token outside the
vocabulary, in any split, becomes <unk>: the <unk> and token counts per split and side are logged
and kept in task.metadata['unk_counts'] / ['token_counts'].

max_train_len: train pairs with more tokens than that on either side (EOS not counted) are
dropped, and their count logged (task.metadata['dropped_train']); validation and test are never
filtered. max_source_len / max_target_len None: the longest kept in the data (target + EOS); a
longer pair is an error naming file:line.

Over-long lines: since the longest pair sets the array width of its side, and every padded batch
has that width, one stray line (a lost line break: 5,000 characters) slows every batch of its
split. A pair with a side longer than LONG_LINE_FACTOR x the 99th percentile of that side's train
lengths (numpy's 'lower' percentile; at least LONG_LINE_MIN tokens) is counted, per split, and
reported at every load with its file:line (the first MAX_REPORTED), before any batch is made: a
logged warning, not an error, since a long tail can be real data; the warning names what drops
them (max_train_len, train only) or fixes the widths (max_source_len / max_target_len: a longer
pair is then an error naming file:line). task.metadata['long_lines'] keeps the report.

BLEU and chrF (bleu=None: on for 'word', 'sentencepiece' and the MT layout) score the decoded
predictions against the raw target lines of validation and test (see pairs.seq2seq_task).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Sequence

from absl import logging
import numpy as np

from attention_zoo.data import files, pairs, tokenizers
from attention_zoo.data.base import Task
from attention_zoo.data.builder import build, memo_json, resolve_data_dir
from attention_zoo.data.registry import register_task
from attention_zoo.data.vocab import Vocab
from attention_zoo.specials import UNK

Text = tuple[str, str, str]  # source text, target text, 'file:line: '
SPLITS = ('train', 'validation', 'test')
# The file prefixes of each split in the MT layout, tried in order.
MT_PREFIXES = {'train': ('train',), 'validation': ('val', 'validation', 'valid', 'dev'),
               'test': ('test',)}
LONG_LINE_FACTOR, LONG_LINE_MIN = 4, 32  # over-long: > max(4 x the train 99th percentile, 32)
MAX_REPORTED = 10  # over-long lines named (file:line) in the warning and the task's metadata
# Options of the build that are filled in after reading the data (not part of the pre-pass key).
_LATE = ('max_source_len', 'max_target_len', 'references', 'data_dir')


def read_lines(path: str) -> list[str]:
  """The lines of a text file (gzip when it ends in .gz) without their line breaks; bytes that
  are not UTF-8 raise ValueError naming file:line, a cut-short or corrupt .gz one naming the
  file (files.open_file)."""
  out = []
  with files.open_file(path, 'rb') as f:
    for lineno, raw in enumerate(f, 1):
      try:
        out.append(raw.decode('utf-8').rstrip('\r\n'))
      except UnicodeDecodeError as e:
        raise ValueError(f'{path}:{lineno}: bytes that are not UTF-8 at column {e.start + 1}: '
                         f'{raw[max(0, e.start - 10):e.end + 10]!r}') from None
  return out


def _log_skipped(texts: list[Text], bad: int, what: str) -> list[Text]:
  if bad:
    logging.warning('parallel_text: skipped %d malformed line(s) of %s', bad, what)
  return texts


def read_delimited(path: str, *, delimiter: str, strip: bool, skip_bad_lines: bool) -> list[Text]:
  """The (source, target, where) texts of one delimited file."""
  if not os.path.isfile(path):
    raise ValueError(f'parallel_text: file {path} does not exist')
  if not delimiter:
    raise ValueError('parallel_text: the delimiter must not be empty')
  out, bad = [], 0
  for lineno, line in enumerate(read_lines(path), 1):
    parts = line.split(delimiter)
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
    out.append((parts[0], parts[1], f'{path}:{lineno}: '))
  return _log_skipped(out, bad, path)


def find_language_file(data_dir: str, prefix: str, language: str) -> str | None:
  """data_dir/prefix.language or its .gz; None when neither exists; both is an error."""
  found = [p for p in (os.path.join(data_dir, f'{prefix}.{language}'),
                       os.path.join(data_dir, f'{prefix}.{language}.gz')) if os.path.isfile(p)]
  if len(found) > 1:
    raise ValueError(f'parallel_text: both {found[0]} and {found[1]} exist; keep one')
  return found[0] if found else None


def read_language_pair(source_path: str, target_path: str, *, strip: bool,
                       skip_bad_lines: bool) -> list[Text]:
  """The (source, target, where) texts of two line-aligned files."""
  src, tgt = read_lines(source_path), read_lines(target_path)
  if len(src) != len(tgt):
    raise ValueError(f'parallel_text: {source_path} has {len(src)} lines but {target_path} has '
                     f'{len(tgt)}; the two files of a split must be line-aligned')
  out, bad = [], 0
  for lineno, (s, t) in enumerate(zip(src, tgt), 1):
    if strip:
      s, t = s.strip(), t.strip()
    empty = [p for p, text in ((source_path, s), (target_path, t)) if not text.strip()]
    if empty:
      if skip_bad_lines:
        bad += 1
        continue
      raise ValueError(f'{empty[0]}:{lineno}: empty line (skip_bad_lines=True skips such pairs)')
    out.append((s, t, f'{source_path}:{lineno}: '))
  return _log_skipped(out, bad, f'{source_path} / {target_path}')


def _mt_reader(o: dict[str, Any], data_dir: str):
  """split -> (the texts of that split, or None when its files are absent)."""
  src_lang, tgt_lang = o['source_language'], o['target_language']

  def read(split: str):
    given = o[f'{split}_file']
    for prefix in (given,) if given else MT_PREFIXES[split]:
      paths = [find_language_file(data_dir, prefix, lang) for lang in (src_lang, tgt_lang)]
      if all(paths):
        return read_language_pair(*paths, strip=o['strip'], skip_bad_lines=o['skip_bad_lines'])
      if any(paths) or given:
        missing = [f'{prefix}.{lang}[.gz]' for lang, p in zip((src_lang, tgt_lang), paths)
                   if not p]
        raise ValueError(f'parallel_text: {data_dir} has no {" or ".join(missing)} for the '
                         f'{split} split ({src_lang} -> {tgt_lang})')
    if split == 'train':
      raise ValueError(f'parallel_text: {data_dir} has no train.{src_lang} / train.{tgt_lang} '
                       '(.gz optional)')
    return None
  return read


def _delimited_reader(o: dict[str, Any], data_dir: str):
  def read(split: str):
    name = o[f'{split}_file'] or ('train.txt' if split == 'train' else None)
    if name is None:
      return None
    return read_delimited(os.path.join(data_dir, name), delimiter=o['delimiter'],
                          strip=o['strip'], skip_bad_lines=o['skip_bad_lines'])
  return read


def read_splits(o: dict[str, Any], data_dir: str) -> dict[str, list[Text]]:
  """{'train', 'validation', 'test'} texts, holding out from train a split that has no file."""
  mt = o['source_language'] is not None
  read = (_mt_reader if mt else _delimited_reader)(o, data_dir)
  found = {k: read(k) for k in SPLITS}
  train = found['train']
  counts = {k: (o[f'num_{k}'] if o[f'num_{k}'] is not None else len(train) // 10)
            for k in ('validation', 'test') if found[k] is None}
  if sum(counts.values()) >= len(train):
    raise ValueError(f'parallel_text: holding out {counts} leaves no train lines of {len(train)}')
  order = np.random.default_rng(o['split_seed']).permutation(len(train))
  out, start = {}, 0
  for k, n in counts.items():
    logging.info('parallel_text: no %s file; holding out %d train lines', k, n)
    out[k] = [train[i] for i in order[start:start + n]]
    start += n
  out['train'] = [train[i] for i in sorted(order[start:])]
  out.update({k: v for k, v in found.items() if k != 'train' and v is not None})
  return {k: out[k] for k in SPLITS}


def _key(o: dict[str, Any]) -> str:
  return json.dumps({k: v for k, v in o.items() if k not in _LATE}, sort_keys=True, default=str)


def prepare(o: dict[str, Any], data_dir: str) -> dict[str, Any]:
  """Reads, builds the vocabularies, encodes, filters: the whole dataset before it is written."""
  return _prepare(_key(o), data_dir)


@functools.lru_cache(maxsize=1)  # one `load` reads once for its pre-pass (lengths) and build
def _prepare(key: str, data_dir: str) -> dict[str, Any]:
  o = json.loads(key)
  texts = read_splits(o, data_dir)
  train = texts['train']
  src_vocab, tgt_vocab = tokenizers.build_vocabs(
      [s for s, _, _ in train], [t for _, t, _ in train], tokenization=o['tokenization'],
      joint_vocab=o['joint_vocab'], **o['tokenizer_options'])
  splits: dict[str, list] = {}
  references: list[str] = []
  unk, tokens = {}, {}
  dropped = 0
  for split, lines in texts.items():
    rows = []
    for s, t, where in lines:
      src, tgt = src_vocab.encode(s, allow_unk=True), tgt_vocab.encode(t, allow_unk=True)
      if split == 'train' and o['max_train_len'] and max(len(src), len(tgt)) > o['max_train_len']:
        dropped += 1
        continue
      ref = -1
      if split != 'train':
        ref = len(references)
        references.append(t)
      rows.append((src, tgt, where, ref, (s, t)))
    splits[split] = rows
    unk[split] = {side: int(sum(np.sum(np.asarray(r[i]) == UNK) for r in rows))
                  for i, side in enumerate(('source', 'target'))}
    tokens[split] = {side: int(sum(len(r[i]) for r in rows))
                     for i, side in enumerate(('source', 'target'))}
    logging.info('parallel_text: %s: %d pairs; <unk>: %d of %d source tokens, %d of %d target '
                 'tokens', split, len(rows), unk[split]['source'], tokens[split]['source'],
                 unk[split]['target'], tokens[split]['target'])
  if o['max_train_len']:
    logging.info('parallel_text: dropped %d of %d train pairs longer than max_train_len=%d',
                 dropped, len(train), o['max_train_len'])
  if not splits['train']:
    raise ValueError(f'parallel_text: max_train_len={o["max_train_len"]} drops every train pair')
  rows = [r for v in splits.values() for r in v]
  return {'splits': splits, 'vocabs': (src_vocab, tgt_vocab), 'references': references,
          'metadata': {'unk_counts': unk, 'token_counts': tokens, 'dropped_train': dropped,
                       'joint_vocab': o['joint_vocab'], 'long_lines': long_lines(splits)},
          'lengths': (max(len(r[0]) for r in rows), max(len(r[1]) for r in rows) + 1)}


def long_lines(splits: dict[str, list]) -> dict[str, Any]:
  """The over-long pairs of encoded `splits` (rows (source ids, target ids, 'file:line: ', ...);
  see the module docstring): {'bounds': [source, target] token bounds, 'counts': {split: n},
  'lines': [[file:line, source tokens, target tokens], ...] (the first MAX_REPORTED)}."""
  # 'lower': an element of the data, never the longest one unless all are (a single stray line
  # of a small train split does not raise its own bound)
  p99 = [int(np.percentile([len(r[i]) for r in splits['train']], 99, method='lower'))
         for i in (0, 1)]
  bounds = [max(LONG_LINE_FACTOR * p, LONG_LINE_MIN) for p in p99]
  counts, lines = {}, []
  for split, rows in splits.items():
    long = [r for r in rows if len(r[0]) > bounds[0] or len(r[1]) > bounds[1]]
    counts[split] = len(long)
    lines += [[r[2].rstrip(': '), len(r[0]), len(r[1])] for r in long]
  return {'bounds': bounds, 'counts': counts, 'lines': lines[:MAX_REPORTED]}


def report_long_lines(name: str, report: dict[str, Any] | None) -> None:
  """Logs a warning for the over-long lines of `report` (long_lines), if any."""
  if not report or not sum(report['counts'].values()):
    return
  (src, tgt), total = report['bounds'], sum(report['counts'].values())
  shown = ', '.join(f'{where} ({s} / {t} tokens)' for where, s, t in report['lines'])
  logging.warning(
      '%s: %d pair(s) longer than %d source or %d target tokens (%d x the train 99th '
      'percentile), per split %s: they set the width of every padded batch of their split. '
      'First %d: %s. max_train_len drops such train pairs; max_source_len / max_target_len fix '
      'the widths (a longer pair is then an error naming file:line)', name, total, src, tgt,
      LONG_LINE_FACTOR, {k: v for k, v in report['counts'].items() if v},
      len(report['lines']), shown)


class AzParallelText(pairs.Seq2SeqBuilder):
  """TFDS builder of a parallel-text folder (see module docstring)."""

  @classmethod
  def generate(cls, options, manual_dir):
    p = prepare(options, manual_dir)
    src_vocab, tgt_vocab = p['vocabs']

    def examples(rows):
      for src, tgt, where, ref, texts in rows:
        ex = pairs.encode_ids(src, tgt, max_source_len=options['max_source_len'],
                              max_target_len=options['max_target_len'],
                              reverse_source=options['reverse_source'], where=where, texts=texts)
        if options['references']:
          ex['ref_index'] = np.int32(ref)
        yield ex

    metadata = dict(p['metadata'], source_vocab=src_vocab.to_json(),
                    target_vocab=tgt_vocab.to_json(), references=p['references'])
    return {name: examples(rows) for name, rows in p['splits'].items()}, metadata


def load(name: str, o: dict[str, Any], data_dir: str, *, max_source_len: int | None,
         max_target_len: int | None, bleu: bool | None, tfds_dir: str | None) -> Task:
  """Builds (once per options) and opens a parallel-text dataset as the seq2seq Task `name`."""
  _prepare.cache_clear()  # the files may have changed since another load
  try:
    return _load(name, o, data_dir, max_source_len=max_source_len,
                 max_target_len=max_target_len, bleu=bleu, tfds_dir=tfds_dir)
  finally:
    _prepare.cache_clear()  # do not keep a corpus in memory


def _load(name: str, o: dict[str, Any], data_dir: str, *, max_source_len: int | None,
          max_target_len: int | None, bleu: bool | None, tfds_dir: str | None) -> Task:
  o = dict(o, tokenizer_options=tokenizers.options_of(o['tokenization'], o['tokenizer_options']))
  if max_source_len is None or max_target_len is None:
    lengths = memo_json(tfds_dir, 'az_parallel_text', dict(o, data_dir=data_dir),
                        lambda: {'lengths': prepare(o, data_dir)['lengths']})['lengths']
    max_source_len = max_source_len or lengths[0]
    max_target_len = max_target_len or lengths[1]
  with_bleu = (o['tokenization'] in ('word', 'sentencepiece') or o['source_language'] is not None
               if bleu is None else bleu)
  o.update(max_source_len=max_source_len, max_target_len=max_target_len, references=with_bleu)
  splits, meta = build(AzParallelText, o, tfds_dir=tfds_dir, manual_dir=data_dir)
  tgt_vocab = Vocab.from_json(meta['target_vocab'])
  src_vocab = tgt_vocab if meta['joint_vocab'] else Vocab.from_json(meta['source_vocab'])
  for split, counts in meta['unk_counts'].items():
    logging.info('%s %s: <unk> %s of tokens %s', name, split, counts, meta['token_counts'][split])
  report_long_lines(name, meta.get('long_lines'))  # a dataset built before it: none
  facts = {k: meta[k] for k in ('unk_counts', 'token_counts', 'dropped_train')}
  facts['long_lines'] = meta.get('long_lines')
  return pairs.seq2seq_task(name, splits, src_vocab, tgt_vocab, max_target_len,
                            with_bleu=with_bleu, references=meta['references'], metadata=facts)


def check_languages(task: str, source_language: str | None, target_language: str | None,
                    known: Sequence[str] | None = None) -> None:
  """Both languages or neither; different; among `known` when given."""
  if (source_language is None) != (target_language is None):
    raise ValueError(f'task {task!r}: give both source_language and target_language (the MT '
                     f'layout {{split}}.{{language}}), or neither; got {source_language!r} and '
                     f'{target_language!r}')
  if source_language is not None and source_language == target_language:
    raise ValueError(f'task {task!r}: source_language and target_language are both '
                     f'{source_language!r}')
  for lang in (source_language, target_language):
    if known is not None and lang not in known:
      raise ValueError(f'task {task!r}: unknown language {lang!r}; known: {", ".join(known)}')


@register_task('parallel_text')
def parallel_text(source_language: str | None = None, target_language: str | None = None,
                  train_file: str | None = None, validation_file: str | None = None,
                  test_file: str | None = None, num_validation: int | None = None,
                  num_test: int | None = None, split_seed: int = 0, delimiter: str = '\t',
                  strip: bool = True, tokenization: str = 'char', min_count: int = 1,
                  max_vocab: int | None = None, vocab_size: int = 8000,
                  sentencepiece_type: str = 'bpe', joint_vocab: bool = False,
                  skip_bad_lines: bool = False, max_train_len: int | None = None,
                  max_source_len: int | None = None, max_target_len: int | None = None,
                  reverse_source: bool = False, bleu: bool | None = None,
                  data_dir: str | None = None, tfds_dir: str | None = None) -> Task:
  """A seq2seq task from the files in data_dir (see module docstring).

  Args:
    source_language, target_language: e.g. 'en', 'de': read the MT layout {split}.{language};
      None (both): one delimited file per split.
    train_file, validation_file, test_file: the delimited files (default train.txt, no
      validation / test file), or in the MT layout the split prefixes (default train,
      val|validation|valid|dev, test).
    tokenization: 'char' | 'word' | 'byte' | 'sentencepiece' (attention_zoo.data.tokenizers);
      min_count, max_vocab for the first three, vocab_size, sentencepiece_type ('bpe' |
      'unigram') for sentencepiece; joint_vocab: one vocabulary for both sides.
    max_train_len: drop train pairs with more tokens on a side (None: keep all).
    bleu: add gen_bleu / gen_chrf (None: on for word, sentencepiece and the MT layout).
  """
  check_languages('parallel_text', source_language, target_language)
  data_dir = resolve_data_dir(data_dir, 'parallel_text', 'parallel_text')
  o: dict[str, Any] = dict(
      source_language=source_language, target_language=target_language, train_file=train_file,
      validation_file=validation_file, test_file=test_file, num_validation=num_validation,
      num_test=num_test, split_seed=split_seed, delimiter=delimiter, strip=strip,
      tokenization=tokenization, joint_vocab=joint_vocab, skip_bad_lines=skip_bad_lines,
      max_train_len=max_train_len, reverse_source=reverse_source,
      tokenizer_options=dict(min_count=min_count, max_vocab=max_vocab, vocab_size=vocab_size,
                             sentencepiece_type=sentencepiece_type))
  return load('parallel_text', o, data_dir, max_source_len=max_source_len,
              max_target_len=max_target_len, bleu=bleu, tfds_dir=tfds_dir)
