"""Multi30k (Elliott et al. 2016): English-German image captions, one sentence a line.

  data_dir (default $ATTENTION_ZOO_DATA/multi30k) holds the WMT16 multimodal task-1 files
  {train, val, test_2016_flickr}.{en, de}[.gz]: 29,000 / 1,014 / 1,000 pairs.
  splits: train, val -> 'validation', test_2016_flickr -> 'test'.

The files are read as the MT layout of attention_zoo.data.parallel_text (every option of that
task's vocabularies applies: tokenization, vocab_size, sentencepiece_type, joint_vocab, min_count,
max_vocab, max_train_len). Default: a joint BPE SentencePiece vocabulary of 8,000 pieces trained
on the train split of both languages, de -> en, no length filter. BLEU and chrF (gen_bleu,
gen_chrf) are sacrebleu's, on the detokenized predictions against the raw reference lines.
"""

from __future__ import annotations

from attention_zoo.data import parallel_text
from attention_zoo.data.base import Task
from attention_zoo.data.builder import resolve_data_dir
from attention_zoo.data.registry import register_task

LANGUAGES = ('de', 'en')
FILES = {'train': 'train', 'validation': 'val', 'test': 'test_2016_flickr'}  # split -> prefix


@register_task('multi30k')
def multi30k(source_language: str = 'de', target_language: str = 'en',
             tokenization: str = 'sentencepiece', vocab_size: int = 8000,
             sentencepiece_type: str = 'bpe', joint_vocab: bool = True, min_count: int = 1,
             max_vocab: int | None = None, max_train_len: int | None = None,
             max_source_len: int | None = None, max_target_len: int | None = None,
             reverse_source: bool = False, skip_bad_lines: bool = False,
             data_dir: str | None = None, tfds_dir: str | None = None) -> Task:
  """The Multi30k translation task (see module docstring).

  Args:
    source_language, target_language: 'de' and 'en', either way round.
    tokenization: 'char' | 'word' | 'byte' | 'sentencepiece' (attention_zoo.data.tokenizers).
    vocab_size, sentencepiece_type: the SentencePiece model ('bpe' | 'unigram').
    joint_vocab: one vocabulary for both languages (shared embeddings possible).
    min_count, max_vocab: the char / word / byte vocabularies.
    max_train_len: drop train pairs with more tokens on a side (validation and test: never).
    max_source_len, max_target_len: array widths (None: the longest in the data).
  """
  parallel_text.check_languages('multi30k', source_language, target_language, LANGUAGES)
  data_dir = resolve_data_dir(data_dir, 'multi30k', 'multi30k')
  o = dict(source_language=source_language, target_language=target_language,
           train_file=FILES['train'], validation_file=FILES['validation'],
           test_file=FILES['test'], num_validation=None, num_test=None, split_seed=0,
           delimiter='\t', strip=True, tokenization=tokenization, joint_vocab=joint_vocab,
           skip_bad_lines=skip_bad_lines, max_train_len=max_train_len,
           reverse_source=reverse_source,
           tokenizer_options=dict(min_count=min_count, max_vocab=max_vocab,
                                  vocab_size=vocab_size, sentencepiece_type=sentencepiece_type))
  return parallel_text.load('multi30k', o, data_dir, max_source_len=max_source_len,
                            max_target_len=max_target_len, bleu=True, tfds_dir=tfds_dir)
