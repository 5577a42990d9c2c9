"""Vocabularies: id <-> token, with the specials PAD=0, BOS=1, EOS=2, UNK=3 first.

The one place where token ids become text: `Vocab.decode` (generated samples, BLEU, tests) and
`Vocab.labels` (one string per token, for the axes of attention plots).

Levels (how a text is cut into tokens, and how decode joins them back):
  'char'  one token per character; decode concatenates
  'word'  whitespace-separated words; decode joins with one space
  'byte'  one token per UTF-8 byte (BYTE_TOKENS); decode reads the bytes back as UTF-8
"""

from __future__ import annotations

from typing import Iterable, Sequence

from attention_zoo.registry import choose
from attention_zoo.specials import BOS, EOS, PAD, SPECIALS, UNK

# The token of each byte 0..255: the character itself for printable ASCII, else '<0xNN>'.
BYTE_TOKENS = tuple(chr(b) if 32 <= b < 127 else f'<0x{b:02x}>' for b in range(256))
_BYTE_OF = {t: b for b, t in enumerate(BYTE_TOKENS)}


def _str(text: str | bytes) -> str:
  return text.decode('utf-8') if isinstance(text, bytes) else text


def _bytes(text: str | bytes) -> list[str]:
  return [BYTE_TOKENS[b] for b in (text.encode('utf-8') if isinstance(text, str) else text)]


def _utf8(tokens: list[str]) -> str:
  return bytes(_BYTE_OF[t] for t in tokens if t in _BYTE_OF).decode('utf-8', errors='replace')


# level -> (text -> tokens, tokens -> text). Bytes given to 'char' / 'word' are read as UTF-8.
LEVELS = {'char': (lambda text: list(_str(text)), ''.join),
          'word': (lambda text: _str(text).split(), ' '.join),
          'byte': (_bytes, _utf8)}


def tokenize(text: str | bytes, level: str) -> list[str]:
  """'char': one token per character; 'word': whitespace-separated words; 'byte': one token per
  UTF-8 byte."""
  return choose(LEVELS, level, 'tokenization')[0](text)


class Vocab(Sequence[str]):
  """id -> token is `vocab[i]`; token -> id is `vocab.id(token)`; ids 0..3 are SPECIALS.

  Example:
    v = Vocab('abc', level='char'); v.encode('cab') == [6, 4, 5]; v.decode([6, 4, 2, 5]) == 'ca'
    b = Vocab.utf8(); b.decode(b.encode('olá')) == 'olá'; b.labels(b.encode('hi')) == ['h', 'i']
  """

  def __init__(self, tokens: Iterable[str], *, level: str = 'char'):
    tokens = list(tokens)
    if len(set(tokens)) != len(tokens):
      raise ValueError('vocabulary tokens must be distinct')
    if set(tokens) & set(SPECIALS):
      raise ValueError(f'vocabulary tokens must not include the specials {SPECIALS}')
    tokenize('', level)  # validates level
    if level == 'byte' and not set(tokens) <= set(BYTE_TOKENS):
      raise ValueError("a 'byte' vocabulary holds tokens of BYTE_TOKENS only")
    self.level = level
    self.tokens = tuple(SPECIALS) + tuple(tokens)
    self._ids = {t: i for i, t in enumerate(self.tokens)}

  @classmethod
  def from_texts(cls, texts: Iterable[str], *, level: str) -> 'Vocab':
    """Sorted distinct tokens of `texts`."""
    seen: set[str] = set()
    for text in texts:
      seen.update(tokenize(text, level))
    return cls(sorted(seen), level=level)

  @classmethod
  def utf8(cls) -> 'Vocab':
    """Every byte, in order: ids 4..259 are the bytes 0..255 (no pass over the data needed)."""
    return cls(BYTE_TOKENS, level='byte')

  def __len__(self) -> int:
    return len(self.tokens)

  def __getitem__(self, i):
    return self.tokens[i]

  @property
  def content_tokens(self) -> tuple[str, ...]:
    """The tokens without the specials."""
    return self.tokens[len(SPECIALS):]

  def id(self, token: str) -> int:
    if token not in self._ids:
      raise ValueError(self._not_in(token))
    return self._ids[token]

  def _not_in(self, token: str) -> str:
    return f'token {token!r} is not in the vocabulary ({len(self)} tokens)'

  def encode(self, text: str | bytes | Sequence[str], *, allow_unk: bool = False) -> list[int]:
    """Ids of a text (tokenized at this vocab's level) or of a token list.

    An unknown token raises ValueError, or becomes UNK when allow_unk.
    """
    tokens = tokenize(text, self.level) if isinstance(text, (str, bytes)) else text
    if allow_unk:
      return [self._ids.get(t, UNK) for t in tokens]
    try:
      return [self._ids[t] for t in tokens]
    except KeyError as unknown:
      raise ValueError(self._not_in(unknown.args[0])) from None

  def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
    """Text of `ids` [L], skipping PAD/BOS/EOS and stopping at the first EOS (when stop_at_eos).

    'byte': an invalid UTF-8 sequence becomes U+FFFD, and UNK (no byte) is dropped.
    """
    out = []
    for i in map(int, ids):
      if i == EOS and stop_at_eos:
        break
      if i in (PAD, BOS, EOS):
        continue
      out.append(self.tokens[i])
    return LEVELS[self.level][1](out)

  def labels(self, ids: Iterable[int], *, stop_at_eos: bool = False) -> list[str]:
    """One string per token of `ids` [L] (plot axes): PAD dropped, the other specials kept as
    '<bos>' / '<eos>' / '<unk>'; with stop_at_eos, nothing after the first EOS."""
    out = []
    for i in map(int, ids):
      if i == PAD:
        continue
      out.append(self.tokens[i])
      if stop_at_eos and i == EOS:
        break
    return out

  def to_json(self) -> dict:
    return {'level': self.level, 'tokens': list(self.content_tokens)}

  @classmethod
  def from_json(cls, d: dict) -> 'Vocab':
    return cls(d['tokens'], level=d['level'])
