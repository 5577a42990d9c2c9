"""TFDS catalog datasets by name, through tfds.data_source (array_record) + grain.

  tfds_mnist, cifar10      kind 'classify': inputs float32 [height, width, C] in [0, 1],
                           label int32
  imdb_reviews             kind 'classify': inputs [max_length] UTF-8 byte ids (the LRA "Text"
                           task, Tay et al. 2021), label in {0, 1}
  ted_hrlr_translate       kind 'seq2seq' (Qi et al. 2018), UTF-8 byte ids, BLEU
They download on first use (download=True) into tfds_dir; tests use tfds.testing.mock_data.
Byte vocabularies are fixed (Vocab.utf8(): 4 specials + 256 bytes), so no pass over the data is
needed; samples and BLEU decode the bytes back to text. Text longer than its max length is cut to
it when truncate=True (the LRA convention) and is an error otherwise. Validation for datasets
without one: the last num_validation train examples.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from attention_zoo.data import metrics, pairs
from attention_zoo.data.base import Task
from attention_zoo.specials import BOS, EOS
from attention_zoo.data.registry import register_task
from attention_zoo.data.vocab import Vocab

BYTES = Vocab.utf8()  # ids 4..259 are the bytes 0..255


class Mapped(Sequence):
  """A random-access view: source[indices[i]] passed through fn."""

  def __init__(self, source, fn: Callable[[dict], dict], indices: Sequence[int] | None = None):
    self._source, self._fn = source, fn
    self._indices = range(len(source)) if indices is None else indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int) -> dict:
    return self._fn(self._source[self._indices[i]])


def _open(name: str, split_names: Sequence[str], fn, num_validation: int, tfds_dir, download):
  raw = {s: tfds.data_source(name, split=s, data_dir=tfds_dir, download=download)
         for s in split_names}
  out = {s: Mapped(src, fn) for s, src in raw.items() if s != 'train'}
  train = raw['train']
  if 'validation' not in raw:
    if not 0 <= num_validation < len(train):
      raise ValueError(f'{name}: num_validation must be in [0, {len(train)}), got {num_validation}')
    cut = len(train) - num_validation
    out['validation'] = Mapped(train, fn, range(cut, len(train)))
    out['train'] = Mapped(train, fn, range(cut))
  else:
    out['train'] = Mapped(train, fn)
  return out


def _byte_ids(text: Any, length: int, truncate: bool, what: str, tail: Sequence[int] = ()):
  ids = BYTES.encode(text if isinstance(text, (str, bytes)) else str(text))
  room = length - len(tail)
  if len(ids) > room:
    if not truncate:
      raise ValueError(f'{what} has {len(ids) + len(tail)} byte tokens > {length} '
                       '(set truncate=True to cut)')
    ids = ids[:room]
  out = np.zeros(length, np.int32)
  out[:len(ids) + len(tail)] = list(ids) + list(tail)
  return out


def _image_task(name: str, num_validation: int, tfds_dir, download) -> Task:
  def fn(ex):
    return {'inputs': np.asarray(ex['image'], np.float32) / np.float32(255),
            'label': np.int32(ex['label'])}
  splits = _open(name, ('train', 'test'), fn, num_validation, tfds_dir, download)
  shape = splits['train'][0]['inputs'].shape
  return Task(name=name, kind='classify', splits=splits,
              model_dims={'num_classes': 10, 'in_channels': shape[-1], 'image_shape': shape},
              metrics_fn=metrics.classify_metrics)


@register_task('tfds_mnist')
def tfds_mnist(num_validation: int = 5_000, download: bool = True,
               tfds_dir: str | None = None) -> Task:
  """MNIST from the TFDS catalog (60k train - num_validation / 10k test)."""
  return _image_task('mnist', num_validation, tfds_dir, download)


@register_task('cifar10')
def cifar10(num_validation: int = 5_000, download: bool = True,
            tfds_dir: str | None = None) -> Task:
  """CIFAR-10 from the TFDS catalog (50k train - num_validation / 10k test)."""
  return _image_task('cifar10', num_validation, tfds_dir, download)


@register_task('imdb_reviews')
def imdb_reviews(max_length: int = 1_000, truncate: bool = True, num_validation: int = 2_500,
                 download: bool = True, tfds_dir: str | None = None) -> Task:
  """IMDB sentiment at the byte level: inputs [max_length] byte ids, label 0/1."""
  def fn(ex):
    return {'inputs': _byte_ids(ex['text'], max_length, truncate, 'imdb review'),
            'label': np.int32(ex['label'])}
  splits = _open('imdb_reviews', ('train', 'test'), fn, num_validation, tfds_dir, download)
  return Task(name='imdb_reviews', kind='classify', splits=splits,
              model_dims={'vocab_size': len(BYTES), 'num_classes': 2}, vocab=BYTES,
              metrics_fn=metrics.classify_metrics)


@register_task('ted_hrlr_translate')
def ted_hrlr_translate(config: str = 'pt_to_en', max_source_len: int = 256,
                       max_target_len: int = 256, truncate: bool = True,
                       reverse_source: bool = False, download: bool = True,
                       tfds_dir: str | None = None) -> Task:
  """TED talks translation (e.g. pt_to_en) at the byte level, with BLEU on decoded text."""
  src_lang, _, tgt_lang = config.partition('_to_')

  def fn(ex):
    src = _byte_ids(ex[src_lang], max_source_len, truncate, f'{src_lang} sentence')
    if reverse_source:
      n = int((src != 0).sum())
      src[:n] = src[:n][::-1]
    text = ex[tgt_lang]
    tgt = BYTES.encode(text if isinstance(text, (str, bytes)) else str(text))
    if len(tgt) + 1 > max_target_len:
      if not truncate:
        raise ValueError(f'{tgt_lang} sentence has {len(tgt)} byte tokens + EOS > {max_target_len}')
      tgt = tgt[:max_target_len - 1]
    t_in, t_out = np.zeros(max_target_len, np.int32), np.zeros(max_target_len, np.int32)
    t_in[:len(tgt) + 1] = [BOS] + tgt
    t_out[:len(tgt) + 1] = tgt + [EOS]
    return {'source': src, 'target_in': t_in, 'target_out': t_out}

  splits = _open(f'ted_hrlr_translate/{config}', ('train', 'validation', 'test'), fn, 0,
                 tfds_dir, download)
  return pairs.seq2seq_task('ted_hrlr_translate', splits, BYTES, BYTES, max_target_len,
                            with_bleu=True)
