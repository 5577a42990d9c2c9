"""Synthetic seq2seq tasks, generated locally and deterministically from the seed.

  addition  "123+45" -> "168"                   (Sutskever et al. 2014 reversal, Cho peeky runs)
  copy      "3a1b" -> "3a1b"; reverse -> "b1a3"; sort -> "13ab" (symbol order 0-9 then a-z)
  recall    "a1b7c3?b" -> "7"                   associative recall (Ba et al. 2016)
A generator draws one (source, target) pair; `unique_draws` deals distinct pairs into the splits,
so no test example is in train by construction. Vocabularies are fixed by the options (identical
across splits and seeds).
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Callable, Mapping

import numpy as np

from attention_zoo.data import pairs
from attention_zoo.data.base import Task
from attention_zoo.data.builder import build
from attention_zoo.data.registry import register_task
from attention_zoo.data.vocab import Vocab
from attention_zoo.registry import Registry

SYMBOLS = string.digits + string.ascii_lowercase  # copy / reverse / sort alphabet, in sort order


@dataclasses.dataclass(frozen=True)
class Generator:
  """How one synthetic family draws pairs. Every function takes the task's generation options."""

  vocabs: Callable[[Mapping[str, Any]], tuple[Vocab, Vocab]]   # (source, target)
  lengths: Callable[[Mapping[str, Any]], tuple[int, int]]       # (max_source_len, max_target_len)
  draw: Callable[[np.random.Generator, Mapping[str, Any]], tuple[tuple[str, ...], tuple[str, ...]]]


GENERATORS: Registry[Generator] = Registry('synthetic generator')


class AzSynthetic(pairs.Seq2SeqBuilder):
  """TFDS builder of every synthetic seq2seq family (options['generator'] picks it)."""

  VERSION = '1.0.0'

  @classmethod
  def pairs(cls, options, manual_dir):
    gen = GENERATORS.get(options['generator'])
    src_vocab, tgt_vocab = gen.vocabs(options)
    sizes = {'train': options['num_train'], 'validation': options['num_validation'],
             'test': options['num_test']}
    dealt = pairs.unique_draws(lambda rng: gen.draw(rng, options), sizes, options['seed'],
                               task=options['generator'])
    return ({name: [(s, t, f'{name}[{i}]: ') for i, (s, t) in enumerate(items)]
             for name, items in dealt.items()}, src_vocab, tgt_vocab, {})


def synthetic_task(name: str, *, tfds_dir: str | None, **options) -> Task:
  """Builds (or reuses) the cached dataset of generator `name` and wraps it as a Task."""
  gen = GENERATORS.get(name)
  s, t = gen.lengths(options)
  options = dict(options, generator=name, max_source_len=s, max_target_len=t)
  for k in ('num_train', 'num_validation', 'num_test'):
    if options[k] < 1:
      raise ValueError(f'task {name!r}: {k} must be >= 1, got {options[k]}')
  splits, _ = build(AzSynthetic, options, tfds_dir=tfds_dir)
  src_vocab, tgt_vocab = gen.vocabs(options)
  return pairs.seq2seq_task(name, splits, src_vocab, tgt_vocab, t)


# ----- addition -------------------------------------------------------------------------------

def _addition_draw(rng, o):
  a, b = (int(x) for x in rng.integers(0, 10 ** o['num_digits'], 2))
  return tuple(f'{a}+{b}'), tuple(str(a + b))


GENERATORS.register('addition')(Generator(
    vocabs=lambda o: (Vocab(string.digits + '+'), Vocab(string.digits)),
    lengths=lambda o: (2 * o['num_digits'] + 1, o['num_digits'] + 2),
    draw=_addition_draw))


@register_task('addition')
def addition(num_digits: int = 3, num_train: int = 20_000, num_validation: int = 1_000,
             num_test: int = 1_000, reverse_source: bool = False, seed: int = 0,
             tfds_dir: str | None = None) -> Task:
  """"a+b" -> str(a + b), a and b uniform in [0, 10**num_digits)."""
  if num_digits < 1:
    raise ValueError(f'task addition: num_digits must be >= 1, got {num_digits}')
  return synthetic_task('addition', num_digits=num_digits, num_train=num_train,
                        num_validation=num_validation, num_test=num_test,
                        reverse_source=reverse_source, seed=seed, tfds_dir=tfds_dir)


# ----- copy / reverse / sort ------------------------------------------------------------------

def _symbols_vocab(o):
  v = Vocab(SYMBOLS[:o['num_symbols']])
  return v, v


def _sequence_draw(transform):
  def draw(rng, o):
    n = int(rng.integers(o['min_len'], o['max_len'] + 1))
    ids = rng.integers(0, o['num_symbols'], n)
    return tuple(SYMBOLS[i] for i in ids), tuple(SYMBOLS[i] for i in transform(ids))
  return draw


def _sequence_task(name: str, transform: Callable[[np.ndarray], np.ndarray], doc: str):
  """Registers the generator and the task `name`: symbol strings x -> transform(x)."""
  GENERATORS.register(name)(Generator(
      vocabs=_symbols_vocab, lengths=lambda o: (o['max_len'], o['max_len'] + 1),
      draw=_sequence_draw(transform)))

  def task(num_symbols: int = 10, min_len: int = 5, max_len: int = 20, num_train: int = 20_000,
           num_validation: int = 1_000, num_test: int = 1_000, reverse_source: bool = False,
           seed: int = 0, tfds_dir: str | None = None) -> Task:
    if not 1 <= num_symbols <= len(SYMBOLS):
      raise ValueError(f'task {name!r}: num_symbols must be in [1, {len(SYMBOLS)}], '
                       f'got {num_symbols}')
    if not 1 <= min_len <= max_len:
      raise ValueError(f'task {name!r}: need 1 <= min_len <= max_len, got {min_len}, {max_len}')
    return synthetic_task(name, num_symbols=num_symbols, min_len=min_len, max_len=max_len,
                          num_train=num_train, num_validation=num_validation, num_test=num_test,
                          reverse_source=reverse_source, seed=seed, tfds_dir=tfds_dir)

  task.__name__ = task.__qualname__ = name
  task.__doc__ = doc
  return register_task(name)(task)


copy = _sequence_task('copy', lambda x: x,
                      'x -> x for random symbol strings x of length in [min_len, max_len].')
reverse = _sequence_task('reverse', lambda x: x[::-1], 'x -> x reversed.')
sort = _sequence_task('sort', np.sort, 'x -> x sorted by symbol order (0-9 then a-z).')


# ----- associative recall ---------------------------------------------------------------------

def _recall_draw(rng, o):
  n = o['num_pairs']
  keys = rng.choice(26, n, replace=False)
  values = rng.integers(0, 10, n)
  q = int(rng.integers(n))
  src = []
  for k, v in zip(keys, values):
    src += [string.ascii_lowercase[k], string.digits[v]]
  return tuple(src + ['?', string.ascii_lowercase[keys[q]]]), (string.digits[values[q]],)


GENERATORS.register('recall')(Generator(
    vocabs=lambda o: (Vocab(string.ascii_lowercase + string.digits + '?'), Vocab(string.digits)),
    lengths=lambda o: (2 * o['num_pairs'] + 2, 2),
    draw=_recall_draw))


@register_task('recall')
def recall(num_pairs: int = 8, num_train: int = 20_000, num_validation: int = 1_000,
           num_test: int = 1_000, reverse_source: bool = False, seed: int = 0,
           tfds_dir: str | None = None) -> Task:
  """Associative recall: "k1 v1 ... kn vn ? kq" -> vq; keys distinct letters, values digits."""
  if not 1 <= num_pairs <= 26:
    raise ValueError(f'task recall: num_pairs must be in [1, 26], got {num_pairs}')
  return synthetic_task('recall', num_pairs=num_pairs, num_train=num_train,
                        num_validation=num_validation, num_test=num_test,
                        reverse_source=reverse_source, seed=seed, tfds_dir=tfds_dir)
