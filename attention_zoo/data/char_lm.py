"""Character-level language modelling on a text file, e.g. Tiny Shakespeare (Karpathy 2015).

The text is split by position: the first 90% of characters is train, the next 5% validation, the
last 5% test. Each split is cut into windows of seq_len + 1 characters starting every `stride`
characters (default seq_len: no overlap); a window gives inputs = w[:-1], targets = w[1:] [L].
The vocabulary is the sorted distinct characters of the train part (Tiny Shakespeare: 65) after
the 4 specials; a character of another split missing from it is an error.
kind 'lm': inputs [L] int32, targets [L] int32.
"""

from __future__ import annotations

import os

import numpy as np

from attention_zoo.data import files, metrics
from attention_zoo.data.base import Task
from attention_zoo.data.builder import ArrayBuilder, build, resolve_data_dir
from attention_zoo.data.registry import register_task
from attention_zoo.data.vocab import Vocab

FRACTIONS = {'train': (0.0, 0.9), 'validation': (0.9, 0.95), 'test': (0.95, 1.0)}


def read_text(path: str) -> str:
  if not os.path.exists(path):
    raise ValueError(f'char_lm: file {path} does not exist')
  with files.open_file(path, 'rt', encoding='utf-8') as f:
    return f.read()


def split_text(text: str) -> dict[str, str]:
  n = len(text)
  return {k: text[int(a * n):int(b * n)] for k, (a, b) in FRACTIONS.items()}


class AzCharLm(ArrayBuilder):
  """TFDS builder of char-LM windows: inputs [seq_len], targets [seq_len] int32."""

  @classmethod
  def feature_spec(cls, o):
    return {'inputs': ((o['seq_len'],), np.int32), 'targets': ((o['seq_len'],), np.int32)}

  @classmethod
  def generate(cls, o, manual_dir):
    path = os.path.join(manual_dir, o['file'])
    parts = split_text(read_text(path))
    vocab = Vocab(sorted(set(parts['train'])), level='char')
    for name, text in parts.items():
      missing = sorted(set(text) - set(vocab.tokens))
      if missing:
        raise ValueError(f'char_lm {path}: the {name} split has characters not in the train '
                         f'vocabulary: {missing}')
    L, stride = o['seq_len'], o['stride'] or o['seq_len']
    ids_of = {c: i for i, c in enumerate(vocab.tokens)}

    def windows(text):
      ids = np.array([ids_of[c] for c in text], np.int32)
      for start in range(0, len(ids) - L, stride):
        w = ids[start:start + L + 1]
        yield {'inputs': w[:-1], 'targets': w[1:]}

    return ({name: windows(text) for name, text in parts.items()},
            {'vocab': vocab.to_json(), 'chars': {k: len(v) for k, v in parts.items()}})


def lm_metrics(logits, batch):
  """metrics_fn of an LM: logits [B, L, V], batch['targets'] [B, L]."""
  ce = metrics.mean_cross_entropy(logits, batch['targets'])
  return {'token_accuracy': metrics.token_accuracy(logits, batch['targets']),
          'bits_per_char': metrics.bits_per_char(ce)}


@register_task('char_lm')
def char_lm(seq_len: int = 128, stride: int | None = None, file: str = 'input.txt.gz',
            data_dir: str | None = None, tfds_dir: str | None = None) -> Task:
  """Char-level LM on data_dir/file (default $ATTENTION_ZOO_DATA/tinyshakespeare/input.txt.gz)."""
  if seq_len < 1 or (stride is not None and stride < 1):
    raise ValueError(f'task char_lm: seq_len and stride must be >= 1, got {seq_len}, {stride}')
  data_dir = resolve_data_dir(data_dir, 'tinyshakespeare', 'char_lm')
  options = dict(seq_len=seq_len, stride=stride, file=file)
  splits, meta = build(AzCharLm, options, tfds_dir=tfds_dir, manual_dir=data_dir)
  vocab = Vocab.from_json(meta['vocab'])
  return Task(name='char_lm', kind='lm', splits=splits, model_dims={'vocab_size': len(vocab)},
              vocab=vocab, metrics_fn=lm_metrics)


register_task('tiny_shakespeare')(char_lm)
