"""The multi30k task on the real files (fixture data_dir): splits, vocabularies, references."""

import gzip
import os
import unicodedata

import pytest
import sacrebleu

from attention_zoo.data import get_task, task_names
from attention_zoo.data.vocab import SentencePieceVocab

SIZES = {'train': 29_000, 'validation': 1_014, 'test': 1_000}


def _raw(data_dir, name):
  with gzip.open(os.path.join(data_dir, 'multi30k', name), 'rt', encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _all(task, split):
  s = task.splits[split]
  return s.read_batch(range(len(s)))


def test_multi30k_word_level_from_attention_zoo_data(data_dir, tfds_dir, monkeypatch):
  monkeypatch.setenv('ATTENTION_ZOO_DATA', data_dir)        # no data_dir option: multi30k/ under it
  assert 'multi30k' in task_names()
  task = get_task({'name': 'multi30k', 'source_language': 'en', 'target_language': 'de',
                   'tokenization': 'word', 'joint_vocab': False, 'tfds_dir': tfds_dir})
  assert {k: len(v) for k, v in task.splits.items()} == SIZES
  train_de = {w for x in _raw(data_dir, 'train.de.gz') for w in x.split()}
  assert set(task.vocab.content_tokens) == train_de and task.vocab is not task.source_vocab
  val_de = _raw(data_dir, 'val.de.gz')
  assert 'Eisfischerhütte' in val_de[3] and 'Eisfischerhütte' not in train_de
  val = _all(task, 'validation')
  assert task.vocab.decode(val['target_out'][3]).split() == [
      w if w in train_de else '<unk>' for w in val_de[3].split()]
  assert task.metadata['unk_counts']['validation']['target'] == sum(
      w not in train_de for x in val_de for w in x.split())
  assert task.source_vocab.decode(val['source'][0]) == _raw(data_dir, 'val.en.gz')[0]
  test = _all(task, 'test')
  raw = _raw(data_dir, 'test_2016_flickr.de.gz')
  hyps = [task.vocab.decode(row) for row in test['target_out']]
  m = task.generation_metrics_fn(test['target_out'], test)       # BLEU on the raw test lines
  assert m['bleu'] == pytest.approx(sacrebleu.corpus_bleu(hyps, [raw]).score, abs=1e-9)
  assert m['bleu'] < 100 and m['exact_match'] == 1.0


def test_multi30k_default_joint_sentencepiece(data_dir, tfds_dir):
  task = get_task({'name': 'multi30k', 'data_dir': os.path.join(data_dir, 'multi30k'),
                   'tfds_dir': tfds_dir})                         # de -> en, joint BPE 8,000
  assert {k: len(v) for k, v in task.splits.items()} == SIZES
  assert isinstance(task.vocab, SentencePieceVocab) and task.vocab is task.source_vocab
  assert task.model_dims == {'src_vocab_size': 8000, 'tgt_vocab_size': 8000}
  assert task.metadata['unk_counts']['test'] == {'source': 0, 'target': 0}
  test = _all(task, 'test')
  raw_en, raw_de = (_raw(data_dir, f'test_2016_flickr.{lang}.gz') for lang in ('en', 'de'))
  norm = lambda x: ' '.join(unicodedata.normalize('NFKC', x).split())
  assert [task.vocab.decode(r) for r in test['target_out']] == [norm(x) for x in raw_en]
  assert [task.source_vocab.decode(r) for r in test['source']] == [norm(x) for x in raw_de]
  lengths = (test['target_out'] != 0).sum(1) - 1                   # pieces per sentence
  assert 10 < lengths.mean() < 20                                  # the issue's ~15
  assert task.max_target_len == max(int((_all(task, s)['target_out'] != 0).sum(1).max())
                                    for s in SIZES)               # the longest target + EOS
  m = task.generation_metrics_fn(test['target_out'], test)
  assert m['bleu'] == pytest.approx(100) and m['chrf'] == pytest.approx(100)


def test_multi30k_options_are_checked(data_dir, tfds_dir):
  root = os.path.join(data_dir, 'multi30k')
  with pytest.raises(ValueError, match="unknown language 'fr'; known: de, en"):
    get_task({'name': 'multi30k', 'target_language': 'fr', 'data_dir': root})
  with pytest.raises(ValueError, match="source_language and target_language are both 'de'"):
    get_task({'name': 'multi30k', 'target_language': 'de', 'data_dir': root})
  with pytest.raises(ValueError, match="unknown sentencepiece_type 'wordpiece'"):
    get_task({'name': 'multi30k', 'sentencepiece_type': 'wordpiece', 'data_dir': root,
              'tfds_dir': tfds_dir})
