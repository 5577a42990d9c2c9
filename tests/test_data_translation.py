"""Translation data: the MT file layout, vocabularies (word, sentencepiece), <unk> counts, the
length filter, bad-input errors, and BLEU / chrF on the raw references.

Corpora are slices of the real Multi30k files (fixture data_dir) written to tmp_path, or tiny
hand-written files where an error needs a malformed one.
"""

import collections
import gzip
import logging
import os
import unicodedata

import numpy as np
import pytest
import sacrebleu

from attention_zoo.data import get_task, tokenizers
from attention_zoo.data.vocab import SentencePieceVocab, Vocab
from attention_zoo.specials import BOS, EOS, PAD, SPECIALS, UNK


def _raw(data_dir, name):
  with gzip.open(os.path.join(data_dir, 'multi30k', name), 'rt', encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


def _write(path, lines, gz=False):
  text = ''.join(line + '\n' for line in lines).encode('utf-8')
  if gz:
    with gzip.open(str(path) + '.gz', 'wb') as f:
      f.write(text)
  else:
    path.write_bytes(text)


@pytest.fixture(scope='module')
def corpus(data_dir, tmp_path_factory):
  """A Multi30k slice in the MT layout: 2,000 train pairs (gzip), 200 val, 200 test (plain)."""
  folder = tmp_path_factory.mktemp('mt')
  sizes = {'train': 2000, 'val': 200, 'test': 200}
  files = {'train': 'train', 'val': 'val', 'test': 'test_2016_flickr'}
  lines = {}
  for split, n in sizes.items():
    for lang in ('de', 'en'):
      lines[split, lang] = _raw(data_dir, f'{files[split]}.{lang}.gz')[:n]
      _write(folder / f'{split}.{lang}', lines[split, lang], gz=split == 'train')
  return folder, lines


def _decoded(task, split, key='target_out', vocab=None):
  s = task.splits[split]
  b = s.read_batch(range(len(s)))
  return [(vocab or task.vocab).decode(row) for row in b[key]]


def test_mt_layout_word_vocab_unk_counted(corpus, tmp_path):
  folder, lines = corpus
  task = get_task({'name': 'parallel_text', 'source_language': 'de', 'target_language': 'en',
                   'tokenization': 'word', 'data_dir': str(folder),
                   'tfds_dir': str(tmp_path)})
  assert {k: len(v) for k, v in task.splits.items()} == {'train': 2000, 'validation': 200,
                                                         'test': 200}
  train_words = {side: {w for line in lines['train', lang] for w in line.split()}
                 for side, lang in (('source', 'de'), ('target', 'en'))}
  assert set(task.source_vocab.content_tokens) == train_words['source']   # from train only
  for split, key in (('validation', 'val'), ('test', 'test')):
    want = {side: sum(w not in train_words[side] for line in lines[key, lang]
                      for w in line.split())
            for side, lang in (('source', 'de'), ('target', 'en'))}
    assert want['source'] > 0 and task.metadata['unk_counts'][split] == want
    expect = [' '.join(w if w in train_words['target'] else '<unk>' for w in line.split())
              for line in lines[key, 'en']]
    assert _decoded(task, split) == expect                     # OOV -> <unk>, file order kept
  assert _decoded(task, 'train', 'source', task.source_vocab) == [   # words, single spaces
      ' '.join(x.split()) for x in lines['train', 'de']]
  assert task.metadata['unk_counts']['train'] == {'source': 0, 'target': 0}


def test_min_count_and_max_vocab():
  texts = ['a a a b b c', 'b d d d d', 'e']                       # a 3, b 3, c 1, d 4, e 1
  assert Vocab.from_texts(texts, level='word').content_tokens == tuple('abcde')
  assert Vocab.from_texts(texts, level='word', min_count=2).content_tokens == ('a', 'b', 'd')
  top = Vocab.from_texts(texts, level='word', max_vocab=2)        # d (4), then a before b (tie)
  assert top.content_tokens == ('a', 'd')
  assert top.encode('b d e', allow_unk=True) == [UNK, top.id('d'), UNK]
  with pytest.raises(ValueError, match='min_count must be >= 1'):
    Vocab.from_texts(texts, level='word', min_count=0)


def test_length_filter_on_train_only(corpus, tmp_path, caplog):
  folder, lines = corpus
  with caplog.at_level(logging.INFO):
    task = get_task({'name': 'parallel_text', 'source_language': 'en', 'target_language': 'de',
                     'tokenization': 'word', 'max_train_len': 10, 'data_dir': str(folder),
                     'tfds_dir': str(tmp_path)})
  keep = [max(len(e.split()), len(d.split())) <= 10
          for e, d in zip(lines['train', 'en'], lines['train', 'de'])]
  assert 0 < sum(keep) < 2000 and len(task.splits['train']) == sum(keep)
  assert task.metadata['dropped_train'] == 2000 - sum(keep)
  assert f'dropped {2000 - sum(keep)} of 2000 train pairs' in caplog.text
  assert len(task.splits['validation']) == len(task.splits['test']) == 200   # never filtered
  longest = max(len(x.split()) for x in lines['val', 'en'] + lines['test', 'en'])
  assert longest > 10 and task.splits['test'][0]['source'].shape == (longest,)
  assert _decoded(task, 'train', 'source', task.source_vocab) == [
      ' '.join(x.split()) for x, k in zip(lines['train', 'en'], keep) if k]


def test_bad_input_errors_name_the_file(tmp_path, caplog):
  d = tmp_path / 'd'
  d.mkdir()
  opts = {'name': 'parallel_text', 'source_language': 'en', 'target_language': 'de',
          'num_validation': 1, 'num_test': 1, 'data_dir': str(d), 'tfds_dir': str(tmp_path)}
  with pytest.raises(ValueError, match=r'has no train.en / train.de'):
    get_task(opts)
  _write(d / 'train.en', ['a b', 'c d', 'e f', 'g h'])
  _write(d / 'train.de', ['A B', 'C D', 'E F'])
  with pytest.raises(ValueError, match=r'train.en has 4 lines but .*train.de has 3'):
    get_task(opts)
  _write(d / 'train.de', ['A B', '  ', 'E F', 'G H'])
  with pytest.raises(ValueError, match=r'train.de:2: empty line'):
    get_task(opts)
  with caplog.at_level(logging.WARNING):
    task = get_task(dict(opts, skip_bad_lines=True))
  assert sum(len(v) for v in task.splits.values()) == 3
  assert 'skipped 1 malformed line(s)' in caplog.text
  (d / 'train.de').write_bytes(b'A B\nC D\nE \xff F\nG H\n')
  with pytest.raises(ValueError, match=r'train.de:3: bytes that are not UTF-8 at column 3'):
    get_task(opts)
  _write(d / 'train.de', ['A B', 'C D', 'E F', 'G H'], gz=True)
  with pytest.raises(ValueError, match=r'both .*train.de and .*train.de.gz exist'):
    get_task(opts)
  os.remove(d / 'train.de')
  _write(d / 'val.en', ['a b'])
  with pytest.raises(ValueError, match=r'no val.de\[.gz\] for the validation split'):
    get_task(opts)
  with pytest.raises(ValueError, match='give both source_language and target_language'):
    get_task({'name': 'parallel_text', 'source_language': 'en', 'data_dir': str(d)})
  with pytest.raises(ValueError, match="unknown tokenization 'wordpiece'"):
    get_task(dict(opts, tokenization='wordpiece'))


def test_sentencepiece_round_trip_ids_and_detokenized_text(corpus):
  _, lines = corpus
  v = tokenizers.train_sentencepiece(lines['train', 'de'] + lines['train', 'en'], vocab_size=1000,
                                     model_type='unigram')
  assert isinstance(v, Vocab) and len(v) == 1000 and v.tokens[:4] == SPECIALS
  for line in lines['val', 'de'] + lines['val', 'en']:
    ids = v.encode(line)
    assert min(ids) > UNK or UNK in ids
    # SentencePiece normalizes with NFKC and collapses whitespace, nothing else
    assert v.decode([BOS] + ids + [EOS, 7, PAD]) == ' '.join(
        unicodedata.normalize('NFKC', line).split())
    assert v.encode(v.tokenize(line)) == ids                    # pieces -> the same ids
  assert v.decode(v.encode('ein 中 Hund')) == 'ein  \u2047  Hund'  # unseen character: UNK
  assert Vocab.from_json(v.to_json()).model_proto == v.model_proto
  assert v.labels(v.encode('Hund')) == v.tokenize('Hund')
  bpe = tokenizers.train_sentencepiece(lines['train', 'en'], vocab_size=500, model_type='bpe')
  assert bpe.decode(bpe.encode(lines['val', 'en'][0])) == lines['val', 'en'][0]
  with pytest.raises(ValueError, match=r'vocab_size=100000\) on 2000 train .* failed.*too high'):
    tokenizers.train_sentencepiece(lines['train', 'en'], vocab_size=100_000)


def test_sentencepiece_build_is_deterministic_keyed_and_reused(corpus, tmp_path):
  folder, _ = corpus
  opts = {'name': 'parallel_text', 'source_language': 'de', 'target_language': 'en',
          'tokenization': 'sentencepiece', 'vocab_size': 600, 'data_dir': str(folder)}
  a = get_task(dict(opts, tfds_dir=str(tmp_path / 'a')))
  b = get_task(dict(opts, tfds_dir=str(tmp_path / 'b')))               # a second, separate build
  assert isinstance(a.vocab, SentencePieceVocab) and a.vocab is not a.source_vocab  # separate
  assert a.vocab.model_proto == b.vocab.model_proto
  assert a.source_vocab.model_proto == b.source_vocab.model_proto
  for split in a.splits:
    x, y = (t.splits[split].read_batch(range(len(t.splits[split]))) for t in (a, b))
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
  folders = lambda: sorted(p.name for p in (tmp_path / 'a' / 'az_parallel_text').iterdir()
                           if p.name != 'memo')
  built = folders()
  again = get_task(dict(opts, tfds_dir=str(tmp_path / 'a')))            # re-run: reused
  assert folders() == built and again.vocab.model_proto == a.vocab.model_proto
  joint = get_task(dict(opts, joint_vocab=True, sentencepiece_type='unigram',
                        tfds_dir=str(tmp_path / 'a')))                   # other options: rebuilt
  assert len(folders()) == len(built) + 1
  assert joint.vocab is joint.source_vocab and len(joint.vocab) == 600
  assert joint.vocab.model_proto != a.vocab.model_proto


def test_bleu_and_chrf_are_sacrebleu_on_the_raw_references(corpus, tmp_path):
  folder, lines = corpus
  task = get_task({'name': 'parallel_text', 'source_language': 'de', 'target_language': 'en',
                   'tokenization': 'word', 'data_dir': str(folder), 'tfds_dir': str(tmp_path)})
  val = task.splits['validation'].read_batch(range(200))
  assert list(val['ref_index']) == list(range(200))
  assert (task.splits['train'].read_batch(range(5))['ref_index'] == -1).all()
  rng = np.random.default_rng(0)
  predicted = np.where(rng.random(val['target_out'].shape) < 0.1, 5, val['target_out'])
  hyps = [task.vocab.decode(row) for row in predicted]
  m = task.generation_metrics_fn(predicted, val)
  raw = lines['val', 'en']
  assert m['bleu'] == pytest.approx(sacrebleu.corpus_bleu(hyps, [raw]).score, abs=1e-9)
  assert m['chrf'] == pytest.approx(sacrebleu.corpus_chrf(hyps, [raw]).score, abs=1e-9)
  assert 20 < m['bleu'] < 90
  # the targets themselves score 100 against their own decoding, less against the raw lines:
  # the validation words missing from train are <unk> in the ids, never in the references
  perfect = task.generation_metrics_fn(val['target_out'], val)
  assert perfect['bleu'] < 95
  without = {k: v for k, v in val.items() if k != 'ref_index'}
  assert task.generation_metrics_fn(val['target_out'], without)['bleu'] == pytest.approx(100)
  assert task.metadata['bleu_signature'].startswith('nrefs:1|case:mixed|eff:no|tok:13a')
  # test references follow validation's in the one list
  test = task.splits['test'].read_batch(range(3))
  assert list(test['ref_index']) == [200, 201, 202]
  words = collections.Counter(w for x in lines['train', 'en'] for w in x.split())
  if all(w in words for x in lines['test', 'en'][:3] for w in x.split()):
    assert task.generation_metrics_fn(test['target_out'], test)['bleu'] == pytest.approx(100)
