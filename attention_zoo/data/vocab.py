"""A small vocabulary: id <-> token, with the specials PAD=0, BOS=1, EOS=2, UNK=3 first."""

from __future__ import annotations

from typing import Iterable, Sequence

from attention_zoo.data.base import BOS, EOS, PAD

UNK = 3
SPECIALS = ('<pad>', '<bos>', '<eos>', '<unk>')
LEVELS = ('char', 'word')


def tokenize(text: str, level: str) -> list[str]:
  """'char': one token per character; 'word': whitespace-separated words."""
  if level == 'char':
    return list(text)
  if level == 'word':
    return text.split()
  raise ValueError(f'unknown tokenization {level!r}; valid: {list(LEVELS)}')


class Vocab(Sequence[str]):
  """id -> token is `vocab[i]`; token -> id is `vocab.id(token)`; ids 0..3 are SPECIALS.

  Example:
    v = Vocab('abc', level='char'); v.encode('cab') == [6, 4, 5]; v.decode([6, 4, 2, 5]) == 'ca'
  """

  def __init__(self, tokens: Iterable[str], *, level: str = 'char'):
    tokens = list(tokens)
    if len(set(tokens)) != len(tokens):
      raise ValueError('vocabulary tokens must be distinct')
    if set(tokens) & set(SPECIALS):
      raise ValueError(f'vocabulary tokens must not include the specials {SPECIALS}')
    tokenize('', level)  # validates level
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
      raise ValueError(f'token {token!r} is not in the vocabulary ({len(self)} tokens)')
    return self._ids[token]

  def missing(self, text: str) -> list[str]:
    """Tokens of `text` that are not in the vocabulary."""
    return [t for t in tokenize(text, self.level) if t not in self._ids]

  def encode(self, text: str | Sequence[str], *, allow_unk: bool = False) -> list[int]:
    """Ids of a text (tokenized at this vocab's level) or of a token list.

    An unknown token raises ValueError, or becomes UNK when allow_unk.
    """
    tokens = tokenize(text, self.level) if isinstance(text, str) else text
    if allow_unk:
      return [self._ids.get(t, UNK) for t in tokens]
    return [self.id(t) for t in tokens]

  def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
    """Text of `ids`, skipping PAD/BOS and stopping at the first EOS."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS and stop_at_eos:
        break
      if i in (PAD, BOS, EOS):
        continue
      out.append(self.tokens[i])
    return ('' if self.level == 'char' else ' ').join(out)

  def to_json(self) -> dict:
    return {'level': self.level, 'tokens': list(self.content_tokens)}

  @classmethod
  def from_json(cls, d: dict) -> 'Vocab':
    return cls(d['tokens'], level=d['level'])
