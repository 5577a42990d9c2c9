"""Synthetic seq2seq tasks, generated locally and deterministically from the seed.

  addition  "123+45" -> "168"                   (Sutskever et al. 2014 reversal, Cho peeky runs)
  copy      "3a1b" -> "3a1b"; reverse -> "b1a3"; sort -> "13ab" (symbol order 0-9 then a-z)
  recall    "a1b7c3?b" -> "7"                   associative recall (Ba et al. 2016)
A generator draws one (source, target) pair; `unique_draws` deals distinct pairs into the splits,
so no test example is in train by construction. Vocabularies are fixed by the options (identical
across splits and seeds). A generator that knows which source tokens each target token comes from
(`Generator.gold`: dates, addition) gives its task a gold alignment (Task.gold_alignment).
"""

from __future__ import annotations

import dataclasses
import functools
import string
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from attention_zoo.data import pairs
from attention_zoo.data.base import Alignment, Task
from attention_zoo.data.builder import build
from attention_zoo.data.registry import register_task
from attention_zoo.data.vocab import Vocab
from attention_zoo.registry import Registry
from attention_zoo.specials import EOS, PAD

SYMBOLS = string.digits + string.ascii_lowercase  # copy / reverse / sort alphabet, in sort order


Links = tuple[frozenset[int], frozenset[int]]  # (sure, possible) source positions of one step


@dataclasses.dataclass(frozen=True)
class Generator:
  """How one synthetic family draws pairs. Every function takes the task's generation options."""

  vocabs: Callable[[Mapping[str, Any]], tuple[Vocab, Vocab]]   # (source, target)
  lengths: Callable[[Mapping[str, Any]], tuple[int, int]]       # (max_source_len, max_target_len)
  draw: Callable[[np.random.Generator, Mapping[str, Any]], tuple[tuple[str, ...], tuple[str, ...]]]
  # (source tokens, target tokens) as drawn -> per target token (sure, possible) source positions
  # (see data.base.Alignment); None: the family knows no gold alignment.
  gold: Callable[[Sequence[str], Sequence[str]], list[Links]] | None = None


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
  task = pairs.seq2seq_task(name, splits, src_vocab, tgt_vocab, t)
  if gen.gold is not None:
    task.gold_alignment_fn = functools.partial(
        _gold_alignment, gen.gold, task.splits, src_vocab, tgt_vocab, options['reverse_source'])
  return task


def _gold_alignment(gold, splits, src_vocab: Vocab, tgt_vocab: Vocab, reverse_source: bool,
                    split: str, indices: Sequence[int]) -> list[Alignment]:
  """Task.gold_alignment of a generator with `gold`: each stored example is read back as tokens
  (the source un-reversed), `gold` links its target tokens to source positions, and positions
  are mapped to the stored (reversed) source; the EOS step has no gold."""
  out = []
  for i in indices:
    row = splits[split][int(i)]
    source = [src_vocab[t] for t in np.asarray(row['source']) if t != PAD]
    target = [tgt_vocab[t] for t in np.asarray(row['target_out']) if t not in (PAD, EOS)]
    if reverse_source:
      source = source[::-1]
    at = (lambda p: len(source) - 1 - p) if reverse_source else (lambda p: p)
    links = gold(source, target) + [(frozenset(), frozenset())]  # + the EOS step
    out.append(Alignment(sure=tuple(frozenset(map(at, s)) for s, _ in links),
                         possible=tuple(frozenset(map(at, p)) for _, p in links)))
  return out


# ----- addition -------------------------------------------------------------------------------

def _addition_draw(rng, o):
  weights = o.get('digit_weights')
  if weights is None:  # a, b uniform in [0, 10**num_digits)
    a, b = (int(x) for x in rng.integers(0, 10 ** o['num_digits'], 2))
  else:  # each operand: its number of digits L ~ weights, then uniform among the L-digit numbers
    lengths = 1 + rng.choice(len(weights), size=2, p=np.asarray(weights) / sum(weights))
    a, b = (int(rng.integers(0 if n == 1 else 10 ** (n - 1), 10 ** n)) for n in lengths)
  return tuple(f'{a}+{b}'), tuple(str(a + b))


def addition_gold(source: Sequence[str], target: Sequence[str]) -> list[Links]:
  """Which operand digits each answer digit of "a+b" -> str(a + b) depends on.

  The answer digit at place k (10**k) is (a_k + b_k + carry_k) mod 10, and the carry into place
  k depends on every operand digit below it. So: sure = the operand digits at place k (one or
  two, none for a final carry digit); possible = every operand digit at places <= k.
  Example: "95+7" -> "102": '2' (place 0): sure {1, 3}, possible {1, 3}; '0' (place 1): sure
  {0}, possible {0, 1, 3}; '1' (the carry, place 2): sure {}, possible {0, 1, 3}.
  """
  plus = list(source).index('+')
  operands = ((0, plus), (plus + 1, len(source)))  # [start, stop) of a and of b
  def at_place(k: int) -> set[int]:  # the operand digits at place k
    return {stop - 1 - k for start, stop in operands if k < stop - start}
  out = []
  for t in range(len(target)):
    k = len(target) - 1 - t
    out.append((frozenset(at_place(k)), frozenset(p for j in range(k + 1) for p in at_place(j))))
  return out


GENERATORS.register('addition')(Generator(
    vocabs=lambda o: (Vocab(string.digits + '+'), Vocab(string.digits)),
    lengths=lambda o: (2 * o['num_digits'] + 1, o['num_digits'] + 2),
    draw=_addition_draw, gold=addition_gold))


@register_task('addition')
def addition(num_digits: int = 3, num_train: int = 20_000, num_validation: int = 1_000,
             num_test: int = 1_000, reverse_source: bool = False, seed: int = 0,
             digit_weights: Sequence[float] | None = None, tfds_dir: str | None = None) -> Task:
  """"a+b" -> str(a + b).

  digit_weights: None draws a and b uniform in [0, 10**num_digits) (so 90% of 3-digit operands
  have 3 digits); otherwise one weight per operand length 1..num_digits: each operand draws its
  length L with probability w_L / Σw, then uniformly among the L-digit numbers (0-9 for L = 1).
  """
  if num_digits < 1:
    raise ValueError(f'task addition: num_digits must be >= 1, got {num_digits}')
  options = {}
  if digit_weights is not None:
    weights = tuple(float(w) for w in digit_weights)
    if len(weights) != num_digits or min(weights) < 0 or sum(weights) <= 0:
      raise ValueError(f'task addition: digit_weights must be {num_digits} non-negative weights '
                       f'(operand lengths 1..{num_digits}) with a positive sum, got '
                       f'{tuple(digit_weights)}')
    options['digit_weights'] = weights  # absent when uniform: the cached datasets keep their key
  return synthetic_task('addition', num_digits=num_digits, num_train=num_train,
                        num_validation=num_validation, num_test=num_test,
                        reverse_source=reverse_source, seed=seed, tfds_dir=tfds_dir, **options)


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
