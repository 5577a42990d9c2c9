"""Vocabularies built from the train split of a parallel corpus: one per side, or one joint.

  tokenization   vocabulary (attention_zoo.data.vocab)              options
  'char'         characters of the train text                       min_count, max_vocab
  'word'         whitespace-separated words of the train text       min_count, max_vocab
  'byte'         UTF-8 bytes of the train text                      min_count, max_vocab
  'sentencepiece' a SentencePiece model (Kudo & Richardson 2018)    vocab_size, sentencepiece_type
                 trained on the train text: 'bpe' (Sennrich et al. 2016) or 'unigram'
                 (Kudo 2018)

joint_vocab: one vocabulary from both sides' train text (so a model can share its embeddings),
else one per side. Anything outside the vocabulary, in any split, encodes to UNK (never an error).

SentencePiece training is deterministic: the sentences in file order (no shuffling, no sampling:
input_sentence_size=0), num_threads=1, the random generator seeded, and the ids PAD=0, BOS=1,
EOS=2, UNK=3 with the pieces of attention_zoo.specials (so the model's ids are the Vocab's ids).
character_coverage=1.0: every character of the train text is kept (right for small alphabets such
as English and German; the SentencePiece default 0.9995 is meant for CJK).
"""

from __future__ import annotations

import io
from typing import Any, Callable, Mapping, Sequence

import sentencepiece as spm

from attention_zoo.registry import choose
from attention_zoo.specials import BOS, EOS, PAD, SPECIALS, UNK
from attention_zoo.data.vocab import SentencePieceVocab, Vocab

SENTENCEPIECE_TYPES = ('bpe', 'unigram')


def train_sentencepiece(texts: Sequence[str], *, vocab_size: int, model_type: str = 'bpe',
                        seed: int = 0) -> SentencePieceVocab:
  """A SentencePiece model of `vocab_size` pieces (specials included) trained on `texts`, in order.

  Raises ValueError naming the option when SentencePiece refuses (e.g. vocab_size too large for
  the text).
  """
  choose(dict.fromkeys(SENTENCEPIECE_TYPES), model_type, 'sentencepiece_type')
  model = io.BytesIO()
  spm.set_random_generator_seed(seed)
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, character_coverage=1.0, num_threads=1,
        input_sentence_size=0, shuffle_input_sentence=False,
        pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, pad_piece=SPECIALS[PAD],
        bos_piece=SPECIALS[BOS], eos_piece=SPECIALS[EOS], unk_piece=SPECIALS[UNK],
        minloglevel=2)
  except RuntimeError as e:
    raise ValueError(f'sentencepiece ({model_type}, vocab_size={vocab_size}) on {len(texts)} '
                     f'train sentences failed: {e}') from None
  return SentencePieceVocab(model.getvalue())


def _counted(level: str) -> Callable[..., Vocab]:
  def build(texts: Sequence[str], o: Mapping[str, Any]) -> Vocab:
    return Vocab.from_texts(texts, level=level, min_count=o['min_count'],
                            max_vocab=o['max_vocab'])
  return build


def _sentencepiece(texts: Sequence[str], o: Mapping[str, Any]) -> Vocab:
  return train_sentencepiece(texts, vocab_size=o['vocab_size'],
                             model_type=o['sentencepiece_type'])


# tokenization -> (builder from train texts and options, the options it reads).
TOKENIZATIONS: dict[str, tuple[Callable[..., Vocab], tuple[str, ...]]] = {
    'char': (_counted('char'), ('min_count', 'max_vocab')),
    'word': (_counted('word'), ('min_count', 'max_vocab')),
    'byte': (_counted('byte'), ('min_count', 'max_vocab')),
    'sentencepiece': (_sentencepiece, ('vocab_size', 'sentencepiece_type')),
}


def options_of(tokenization: str, options: Mapping[str, Any]) -> dict[str, Any]:
  """The entries of `options` that `tokenization` reads (so that only they key a built dataset)."""
  return {k: options[k] for k in choose(TOKENIZATIONS, tokenization, 'tokenization')[1]}


def build_vocabs(source_texts: Sequence[str], target_texts: Sequence[str], *, tokenization: str,
                 joint_vocab: bool, **options) -> tuple[Vocab, Vocab]:
  """(source vocab, target vocab) from the train texts; the same object twice when joint_vocab."""
  build, _ = choose(TOKENIZATIONS, tokenization, 'tokenization')
  if joint_vocab:
    vocab = build(list(source_texts) + list(target_texts), options)
    return vocab, vocab
  return build(source_texts, options), build(target_texts, options)
