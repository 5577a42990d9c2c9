"""Date normalization: many human date formats -> ISO 8601 "YYYY-MM-DD".

  "tuesday, september 27, 1994" | "Sep 27, 1994" | "27/09/1994" | "1994.09.27" | ... -> "1994-09-27"

The seq2seq-with-attention demo task (Bahdanau et al. 2015 style alignment on a toy problem).
Dates are uniform over [min_year-01-01, max_year-12-31]; each example picks one of FORMATS
uniformly. Day-first and year-first numeric orders are used, never month-first numeric, so every
source has exactly one reading. Vocabularies are fixed: source = ASCII letters, digits and " ,./-";
target = digits and "-". Names are English and locale-independent.
The gold alignment (`dates_gold`, Task.gold_alignment) links each target digit to the source
characters of its field: the year digits, the month name or number, the day.
"""

from __future__ import annotations

import datetime
import string
from typing import Sequence

from attention_zoo.data.base import Task
from attention_zoo.data.registry import register_task
from attention_zoo.data.synthetic import GENERATORS, Generator, Links, synthetic_task
from attention_zoo.data.vocab import Vocab

MONTHS = ('january', 'february', 'march', 'april', 'may', 'june', 'july', 'august', 'september',
          'october', 'november', 'december')
WEEKDAYS = ('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday')
SOURCE_CHARS = string.ascii_letters + string.digits + ' ,./-'
TARGET_CHARS = string.digits + '-'


def _ordinal(d: int) -> str:
  suffix = 'th' if 10 <= d % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')
  return f'{d}{suffix}'


def _names(x: datetime.date) -> dict[str, str]:
  month, day = MONTHS[x.month - 1], WEEKDAYS[x.weekday()]
  return dict(B=month, Bc=month.capitalize(), BU=month.upper(), b=month[:3],
              bc=month[:3].capitalize(), bU=month[:3].upper(), A=day, Ac=day.capitalize(),
              ac=day[:3].capitalize(), d=f'{x.day:02d}', dn=str(x.day), do=_ordinal(x.day),
              m=f'{x.month:02d}', mn=str(x.month), Y=f'{x.year:04d}')


# Each format is a str.format template over _names(date).
FORMATS: tuple[str, ...] = (
    '{B} {dn}, {Y}', '{Bc} {dn}, {Y}', '{BU} {dn}, {Y}', '{bc} {dn}, {Y}', '{b} {dn} {Y}',
    '{b}. {dn}, {Y}', '{dn} {B} {Y}', '{d} {bc} {Y}', '{d} {bU} {Y}', '{d}-{b}-{Y}',
    '{d}/{m}/{Y}', '{d}.{m}.{Y}', '{d}-{m}-{Y}', '{dn}.{mn}.{Y}', '{Y}.{m}.{d}', '{Y}/{m}/{d}',
    '{Y}{m}{d}', '{Y}-{m}-{d}', '{A}, {B} {dn}, {Y}', '{ac}, {bc} {dn}, {Y}',
    '{Ac} {dn} {Bc} {Y}', 'the {do} of {B}, {Y}', '{B} {do}, {Y}', '{do} {b} {Y}',
)
MAX_SOURCE_LEN = 29  # 'wednesday, september 30, 1994'


def format_date(x: datetime.date, fmt: str) -> str:
  return fmt.format(**_names(x))


def _draw(rng, o) -> tuple[tuple[str, ...], tuple[str, ...]]:
  first = datetime.date(o['min_year'], 1, 1).toordinal()
  last = datetime.date(o['max_year'], 12, 31).toordinal()
  x = datetime.date.fromordinal(int(rng.integers(first, last + 1)))
  fmt = FORMATS[int(rng.integers(len(FORMATS)))]
  return tuple(format_date(x, fmt)), tuple(x.isoformat())


# Which target characters of "YYYY-MM-DD" each format field feeds, by field name.
_TARGET_OF_FIELD = {**dict.fromkeys(('Y',), range(0, 4)),
                    **dict.fromkeys(('B', 'Bc', 'BU', 'b', 'bc', 'bU', 'm', 'mn'), range(5, 7)),
                    **dict.fromkeys(('d', 'dn', 'do'), range(8, 10))}


def _fields(x: datetime.date, fmt: str) -> list[tuple[str, int, str]]:
  """(field name, start in the formatted source, field text) of each field of `fmt`."""
  out, at = [], 0
  for literal, name, _, _ in string.Formatter().parse(fmt):
    at += len(literal)
    if name is not None:
      text = _names(x)[name]
      out.append((name, at, text))
      at += len(text)
  return out


def dates_gold(source: Sequence[str], target: Sequence[str]) -> list[Links]:
  """Which source characters each character of the ISO target comes from.

  The source is matched against FORMATS to find its fields. A target digit's possible links are
  its field in the source: the 4 year digits, the month name (letters only) or number, the day's
  digits (an ordinal's suffix left out); its sure link is the source digit it copies when the
  field is a number, right-aligned ("5" -> "05": '5' is sure, the '0' has only the possible
  link). A month name has no sure link. The '-' separators have no gold.
  Example: "Sep 7, 1994" -> "1994-09-07": '1' sure {7}, possible {7, 8, 9, 10}; each month digit
  possible {0, 1, 2}; the day's '0' possible {4}, its '7' sure and possible {4}.
  """
  source, target = ''.join(source), ''.join(target)
  x = datetime.date.fromisoformat(target)
  fmt = next((f for f in FORMATS if format_date(x, f) == source), None)
  if fmt is None:
    raise ValueError(f'dates: {source!r} -> {target!r} matches no format of FORMATS')
  out: list[Links] = [(frozenset(), frozenset())] * len(target)
  for name, start, text in _fields(x, fmt):
    if name not in _TARGET_OF_FIELD:
      continue  # the weekday
    targets = list(_TARGET_OF_FIELD[name])
    if text[0].isdigit():
      digits = [start + j for j, c in enumerate(text) if c.isdigit()]
      shift = len(targets) - len(digits)  # right-aligned: "5" -> "05"
      for j, t in enumerate(targets):
        sure = frozenset([digits[j - shift]]) if j >= shift else frozenset()
        out[t] = (sure, frozenset(digits))
    else:
      letters = frozenset(start + j for j, c in enumerate(text) if c.isalpha())
      for t in targets:
        out[t] = (frozenset(), letters)
  return out


GENERATORS.register('dates')(Generator(
    vocabs=lambda o: (Vocab(SOURCE_CHARS), Vocab(TARGET_CHARS)),
    lengths=lambda o: (o['max_source_len'], 11), draw=_draw, gold=dates_gold))


@register_task('dates')
def dates(num_train: int = 40_000, num_validation: int = 2_000, num_test: int = 2_000,
          min_year: int = 1900, max_year: int = 2099, max_source_len: int = 30,
          reverse_source: bool = False, seed: int = 0, tfds_dir: str | None = None) -> Task:
  """Human-written dates -> "YYYY-MM-DD" (target 10 chars + EOS = max_target_len 11)."""
  if not 1 <= min_year <= max_year <= 9999:
    raise ValueError('task dates: need 1 <= min_year <= max_year <= 9999, '
                     f'got {min_year}, {max_year}')
  if max_source_len < MAX_SOURCE_LEN:
    raise ValueError(f'task dates: max_source_len={max_source_len} is shorter than the longest '
                     f'format ({MAX_SOURCE_LEN} chars)')
  return synthetic_task('dates', num_train=num_train, num_validation=num_validation,
                        num_test=num_test, min_year=min_year, max_year=max_year,
                        max_source_len=max_source_len, reverse_source=reverse_source, seed=seed,
                        tfds_dir=tfds_dir)
