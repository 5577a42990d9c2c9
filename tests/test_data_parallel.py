"""Bring-your-own parallel text: round trips, delimiters, padding, malformed lines, vocab checks."""

import logging

import numpy as np
import pytest

from attention_zoo.data import get_task


def _write(path, lines):
  path.write_text(''.join(line + '\n' for line in lines), encoding='utf-8')


def _all_pairs(task, split, reverse=False):
  s = task.splits[split]
  b = s.read_batch(range(len(s)))
  return [(task.source_vocab.decode(x[::-1] if reverse else x), task.vocab.decode(y))
          for x, y in zip(b['source'], b['target_out'])]


def test_word_level_tab_round_trip_with_given_splits(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  train = ['je suis ici\tI am here', 'tu es là\tyou are there', 'il est ici\the is here']
  _write(data / 'train.txt', train)
  _write(data / 'dev.txt', ['je suis là\tI am there'])
  _write(data / 'test.txt', ['tu es ici\tyou are here I am there'])  # >= 4 words for BLEU
  task = get_task({'name': 'parallel_text', 'tokenization': 'word', 'validation_file': 'dev.txt',
                   'test_file': 'test.txt', 'data_dir': str(data),
                   'tfds_dir': str(tmp_path / 'tfds')})
  assert _all_pairs(task, 'train') == [tuple(x.split('\t')) for x in train]
  assert _all_pairs(task, 'validation') == [('je suis là', 'I am there')]
  assert task.splits['train'][0]['source'].shape == (3,)          # longest source: 3 words
  assert task.max_target_len == 7                                  # 6 words + EOS
  ids = task.splits['test'].read_batch([0])['target_out']
  m = task.generation_metrics_fn(ids, {'target_out': ids})
  assert m['exact_match'] == 1.0 and m['bleu'] == pytest.approx(100.0)


def test_underscore_delimiter_padding_spaces_and_holdout(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  rng = np.random.default_rng(0)
  sums = [(int(a), int(b)) for a, b in rng.integers(0, 500, (60, 2))]
  _write(data / 'train.txt', [f'{a}+{b}'.ljust(7) + '_' + str(a + b).ljust(4) for a, b in sums])
  task = get_task({'name': 'parallel_text', 'delimiter': '_', 'num_validation': 6, 'num_test': 4,
                   'reverse_source': True, 'data_dir': str(data),
                   'tfds_dir': str(tmp_path / 'tfds')})
  assert {k: len(v) for k, v in task.splits.items()} == {'train': 50, 'validation': 6, 'test': 4}
  got = sorted(p for split in task.splits for p in _all_pairs(task, split, reverse=True))
  assert got == sorted((f'{a}+{b}', str(a + b)) for a, b in sums)   # spaces stripped
  assert ' ' not in task.source_vocab.tokens
  kept = get_task({'name': 'parallel_text', 'delimiter': '_', 'strip': False,
                   'data_dir': str(data), 'tfds_dir': str(tmp_path / 'tfds')})
  assert ' ' in kept.source_vocab.tokens                           # strip=False keeps padding


def test_malformed_line_names_file_and_line(tmp_path, caplog):
  data = tmp_path / 'data'
  data.mkdir()
  _write(data / 'train.txt', ['a\tb', 'c\td', 'no delimiter here', 'x\ty\tz', 'e\tf'] * 4)
  with pytest.raises(ValueError, match=r"train.txt:3: expected one '\\t' delimiter, found 0"):
    get_task({'name': 'parallel_text', 'data_dir': str(data), 'tfds_dir': str(tmp_path / 't')})
  with caplog.at_level(logging.WARNING):
    task = get_task({'name': 'parallel_text', 'skip_bad_lines': True, 'num_validation': 1,
                     'num_test': 1, 'data_dir': str(data), 'tfds_dir': str(tmp_path / 't')})
  assert sum(len(v) for v in task.splits.values()) == 12
  assert 'skipped 8 malformed line(s)' in caplog.text


def test_out_of_vocabulary_becomes_unk_and_too_long(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  _write(data / 'train.txt', ['ab\tba', 'ba\tab'])
  _write(data / 'test.txt', ['abz\tzbza'])
  _write(data / 'dev.txt', ['ab\tba'])
  opts = {'name': 'parallel_text', 'validation_file': 'dev.txt', 'test_file': 'test.txt',
          'data_dir': str(data), 'tfds_dir': str(tmp_path / 't')}
  task = get_task(opts)                                   # 'z' is not in train: never an error
  assert _all_pairs(task, 'test') == [('ab<unk>', '<unk>b<unk>a')]
  assert task.metadata['unk_counts'] == {'train': {'source': 0, 'target': 0},
                                         'validation': {'source': 0, 'target': 0},
                                         'test': {'source': 1, 'target': 2}}
  assert task.metadata['token_counts']['test'] == {'source': 3, 'target': 4}
  _write(data / 'test.txt', ['abab\tba'])
  with pytest.raises(ValueError,
                     match=r"test.txt:1: source 'abab' has 4 tokens > max_source_len=3"):
    get_task(dict(opts, max_source_len=3, max_target_len=6))  # a new build


def test_over_long_lines_are_reported_with_file_line_and_count(tmp_path, caplog):
  data = tmp_path / 'data'
  data.mkdir()
  rng = np.random.default_rng(0)
  words = [''.join(rng.choice(list('abcdef'), 5)) for _ in range(60)]
  train = [f'{w}\t{w[::-1]}' for w in words]
  train[40] = f'{"ab" * 2500}\tba'  # a lost line break: 5,000 characters
  _write(data / 'train.txt', train)
  dev = [f'{w}\t{w[::-1]}' for w in words[:5]]
  dev[2] = f'ab\t{"ba" * 100}'  # 200 target characters
  _write(data / 'dev.txt', dev)
  _write(data / 'test.txt', dev[:2])
  opts = {'name': 'parallel_text', 'validation_file': 'dev.txt', 'test_file': 'test.txt',
          'data_dir': str(data), 'tfds_dir': str(tmp_path / 't')}
  for _ in range(2):  # built, then read from the cache: reported both times
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      task = get_task(opts)
    report = task.metadata['long_lines']
    assert report['bounds'] == [32, 32]  # 4 x the 99th percentile (5 characters): at least 32
    assert report['counts'] == {'train': 1, 'validation': 1, 'test': 0}
    assert report['lines'] == [[f'{data / "train.txt"}:41', 5000, 2],
                               [f'{data / "dev.txt"}:3', 2, 200]]
    assert '2 pair(s) longer than 32 source or 32 target tokens' in caplog.text
    assert f'{data / "train.txt"}:41 (5000 / 2 tokens)' in caplog.text
    assert 'max_train_len drops such train pairs' in caplog.text
  assert task.splits['train'][0]['source'].shape == (5000,)  # the width it reports
  task = get_task(dict(opts, max_train_len=100))  # dropped: validation's line alone is left
  assert task.metadata['long_lines']['counts'] == {'train': 0, 'validation': 1, 'test': 0}
  assert task.splits['train'][0]['source'].shape == (5,)


def test_no_over_long_line_in_ordinary_data(tmp_path, caplog):
  data = tmp_path / 'data'
  data.mkdir()
  lengths = np.random.default_rng(1).integers(1, 60, 300)  # a long tail, but no stray line
  _write(data / 'train.txt', [f'{"a" * n}\t{"b" * n}' for n in lengths])
  with caplog.at_level(logging.WARNING):
    task = get_task({'name': 'parallel_text', 'data_dir': str(data),
                     'tfds_dir': str(tmp_path / 't')})
  assert sum(task.metadata['long_lines']['counts'].values()) == 0
  assert 'longer than' not in caplog.text
