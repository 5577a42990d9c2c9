"""Vocabularies: id <-> token, with the specials PAD=0, BOS=1, EOS=2, UNK=3 first.

The one place where token ids become text: `Vocab.decode` (generated samples, BLEU, tests) and
`Vocab.labels` (one string per token, for the axes of attention plots).

Levels (how a text is cut into tokens, and how decode joins them back):
  'char'  one token per character; decode concatenates
  'word'  whitespace-separated words; decode joins with one space
  'byte'  one token per UTF-8 byte (BYTE_TOKENS); decode reads the bytes back as UTF-8
  'sentencepiece'  subword pieces of a trained SentencePiece model (Kudo & Richardson 2018):
          `SentencePieceVocab`; decode detokenizes (the pieces' '▁' become spaces). Trained
          by attention_zoo.data.tokenizers.
"""

from __future__ import annotations

import base64
import collections
from typing import Iterable, Sequence

import sentencepiece as spm

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
    tokenize('', level)  # validates level
    if level == 'byte' and not set(tokens) <= set(BYTE_TOKENS):
      raise ValueError("a 'byte' vocabulary holds tokens of BYTE_TOKENS only")
    self._set_tokens(tokens, level)

  def _set_tokens(self, tokens: list[str], level: str) -> None:
    if len(set(tokens)) != len(tokens):
      raise ValueError('vocabulary tokens must be distinct')
    if set(tokens) & set(SPECIALS):
      raise ValueError(f'vocabulary tokens must not include the specials {SPECIALS}')
    self.level = level
    self.tokens = tuple(SPECIALS) + tuple(tokens)
    self._ids = {t: i for i, t in enumerate(self.tokens)}

  @classmethod
  def from_texts(cls, texts: Iterable[str], *, level: str, min_count: int = 1,
                 max_vocab: int | None = None) -> 'Vocab':
    """The tokens of `texts` seen at least `min_count` times, at most `max_vocab` of them (the
    most frequent; ties by token), sorted. With the defaults: every distinct token, sorted."""
    if min_count < 1:
      raise ValueError(f'min_count must be >= 1, got {min_count}')
    if max_vocab is not None and max_vocab < 1:
      raise ValueError(f'max_vocab must be >= 1 or None, got {max_vocab}')
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
      counts.update(tokenize(text, level))
    kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return cls(sorted(kept[:max_vocab]), level=level)

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

  def tokenize(self, text: str | bytes) -> list[str]:
    """The tokens of `text` at this vocab's level (some may not be in the vocabulary)."""
    return tokenize(text, self.level)

  def encode(self, text: str | bytes | Sequence[str], *, allow_unk: bool = False) -> list[int]:
    """Ids of a text (tokenized at this vocab's level) or of a token list.

    An unknown token raises ValueError, or becomes UNK when allow_unk.
    """
    tokens = self.tokenize(text) if isinstance(text, (str, bytes)) else text
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
      out.append(i)
    return self._detokenize(out)

  def _detokenize(self, ids: list[int]) -> str:
    return LEVELS[self.level][1]([self.tokens[i] for i in ids])

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
    """The vocabulary of `to_json` (a Vocab, or a SentencePieceVocab for its level)."""
    load = _FROM_JSON.get(d['level'])
    return load(d) if load else Vocab(d['tokens'], level=d['level'])


class SentencePieceVocab(Vocab):
  """A trained SentencePiece model as a Vocab: ids are the model's ids, with PAD=0, BOS=1, EOS=2,
  UNK=3 (the model is trained with those ids and pieces: attention_zoo.data.tokenizers).

  encode(text) is the model's segmentation (a character it never saw becomes UNK, never an
  error); decode(ids) is the model's detokenization ('▁' -> space; UNK -> ' ⁇ ').
  `model_proto` is the serialized model (stored base64 in to_json, so in the dataset metadata).

  Example:
    v = tokenizers.train_sentencepiece(lines, vocab_size=100, model_type='bpe')
    v.decode(v.encode('a dog runs')) == 'a dog runs'
  """

  LEVEL = 'sentencepiece'

  def __init__(self, model_proto: bytes):  # pylint: disable=super-init-not-called
    self.model_proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
    pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
    if tuple(pieces[:len(SPECIALS)]) != SPECIALS:
      raise ValueError(f'a SentencePiece model for a Vocab has the pieces {SPECIALS} as ids 0..3, '
                       f'this one has {pieces[:len(SPECIALS)]}')
    self._set_tokens(pieces[len(SPECIALS):], self.LEVEL)

  def __reduce__(self):
    return SentencePieceVocab, (self.model_proto,)

  def tokenize(self, text: str | bytes) -> list[str]:
    return self._sp.encode(_str(text), out_type=str)

  def encode(self, text: str | bytes | Sequence[str], *, allow_unk: bool = False) -> list[int]:
    """Ids of a text (the model's segmentation; unknown characters -> UNK) or of a piece list."""
    if isinstance(text, (str, bytes)):
      return self._sp.encode(_str(text))
    return super().encode(text, allow_unk=allow_unk)

  def _detokenize(self, ids: list[int]) -> str:
    return self._sp.decode(ids)

  def to_json(self) -> dict:
    return {'level': self.LEVEL, 'model': base64.b64encode(self.model_proto).decode('ascii')}

  @classmethod
  def from_json(cls, d: dict) -> 'SentencePieceVocab':
    return cls(base64.b64decode(d['model']))


# Levels whose vocabulary is not a token list: level -> from_json.
_FROM_JSON = {SentencePieceVocab.LEVEL: SentencePieceVocab.from_json}
