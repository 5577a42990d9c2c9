"""ListOps (Nangia & Bowman 2018; the Long Range Arena task, Tay et al. 2021), at CPU lengths.

  "[MAX 4 3 [MIN 2 3 ] 1 0 ]" -> 4        kind 'classify': inputs [L] token ids, label in 0..9
Operators over lists of digits: MIN, MAX, MED (floor of the median, as LRA's int(np.median)),
SM (sum mod 10). The root is an operator with 2..max_args arguments; each argument is a nested
operator with probability op_prob while depth < max_depth, else a digit. Sequences longer than
max_length or shorter than min_length are redrawn. Distinct sequences are dealt into the splits.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from attention_zoo.data import metrics
from attention_zoo.data.base import Task
from attention_zoo.data.builder import ArrayBuilder, build
from attention_zoo.data.pairs import unique_draws
from attention_zoo.data.registry import register_task
from attention_zoo.data.vocab import Vocab

OPERATORS = ('[MIN', '[MAX', '[MED', '[SM')
VOCAB = Vocab(OPERATORS + (']',) + tuple('0123456789'), level='word')


def evaluate(tokens: Sequence[str]) -> int:
  """Value of a ListOps token sequence (stack machine)."""
  stack: list[list] = []
  for tok in tokens:
    if tok in OPERATORS:
      stack.append([tok])
    elif tok == ']':
      op, *args = stack.pop()
      value = {'[MIN': min, '[MAX': max, '[SM': lambda a: sum(a) % 10,
               '[MED': lambda a: int(np.median(a))}[op](args)
      if not stack:
        return value
      stack[-1].append(value)
    else:
      stack[-1].append(int(tok))
  raise ValueError(f'unbalanced ListOps sequence: {" ".join(tokens)}')


def _tree(rng: np.random.Generator, depth: int, o: Mapping[str, Any]) -> list[str]:
  out = [OPERATORS[int(rng.integers(len(OPERATORS)))]]
  for _ in range(int(rng.integers(2, o['max_args'] + 1))):
    if depth < o['max_depth'] and rng.random() < o['op_prob']:
      out += _tree(rng, depth + 1, o)
    else:
      out.append(str(int(rng.integers(10))))
  return out + [']']


def _draw(rng: np.random.Generator, o: Mapping[str, Any]) -> tuple[str, ...]:
  for _ in range(10_000):
    tokens = _tree(rng, 1, o)
    if o['min_length'] <= len(tokens) <= o['max_length']:
      return tuple(tokens)
  raise ValueError(f'task listops: no sequence with length in [{o["min_length"]}, '
                   f'{o["max_length"]}] in 10,000 draws; change max_depth/max_args/op_prob')


class AzListops(ArrayBuilder):
  """TFDS builder of ListOps: inputs [max_length] int32 (PAD-padded), label [] int32."""

  @classmethod
  def feature_spec(cls, options):
    return {'inputs': ((options['max_length'],), np.int32), 'label': ((), np.int32)}

  @classmethod
  def generate(cls, options, manual_dir):
    sizes = {'train': options['num_train'], 'validation': options['num_validation'],
             'test': options['num_test']}
    dealt = unique_draws(lambda rng: _draw(rng, options), sizes, options['seed'], task='listops')

    def encode(tokens):
      inputs = np.zeros(options['max_length'], np.int32)
      inputs[:len(tokens)] = VOCAB.encode(tokens)
      return {'inputs': inputs, 'label': np.int32(evaluate(tokens))}

    return {name: map(encode, items) for name, items in dealt.items()}, {}


@register_task('listops')
def listops(num_train: int = 20_000, num_validation: int = 2_000, num_test: int = 2_000,
            max_depth: int = 4, max_args: int = 5, op_prob: float = 0.3, max_length: int = 128,
            min_length: int = 1, seed: int = 0, tfds_dir: str | None = None) -> Task:
  """ListOps classification (10 classes); lengths in tokens, brackets and operators included."""
  if max_args < 2 or max_depth < 1 or not 0 <= op_prob <= 1 or not 1 <= min_length <= max_length:
    raise ValueError('task listops: need max_args >= 2, max_depth >= 1, 0 <= op_prob <= 1, '
                     f'1 <= min_length <= max_length; got {max_args}, {max_depth}, {op_prob}, '
                     f'{min_length}, {max_length}')
  options = dict(num_train=num_train, num_validation=num_validation, num_test=num_test,
                 max_depth=max_depth, max_args=max_args, op_prob=op_prob, max_length=max_length,
                 min_length=min_length, seed=seed)
  splits, _ = build(AzListops, options, tfds_dir=tfds_dir)
  return Task(name='listops', kind='classify', splits=splits,
              model_dims={'vocab_size': len(VOCAB), 'num_classes': 10}, vocab=VOCAB,
              metrics_fn=metrics.classify_metrics)
