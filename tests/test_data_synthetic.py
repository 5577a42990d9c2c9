"""Synthetic tasks: answers checked by independent computations; splits disjoint; bad input."""

import datetime
import hashlib
import math
import re
import statistics

import numpy as np
import pytest

from attention_zoo.data import get_task
from attention_zoo.data.pairs import encode_pair
from attention_zoo.data.vocab import Vocab

SIZES = {'num_train': 400, 'num_validation': 50, 'num_test': 50}


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _pairs(task, split):
  """(source text, target text) of every example, the source un-reversed."""
  s = task.splits[split]
  b = s.read_batch(range(len(s)))
  rev = getattr(task, '_reversed', False)
  return [(task.source_vocab.decode(x[::-1] if rev else x), task.vocab.decode(y))
          for x, y in zip(b['source'], b['target_out'])]


# Written independently of attention_zoo.data.dates: strptime patterns (case-insensitive names).
STRPTIME = ['%B %d, %Y', '%b %d, %Y', '%b %d %Y', '%b. %d, %Y', '%d %B %Y', '%d %b %Y',
            '%d-%b-%Y', '%d/%m/%Y', '%d.%m.%Y', '%d-%m-%Y', '%Y.%m.%d', '%Y/%m/%d', '%Y%m%d',
            '%Y-%m-%d', '%A, %B %d, %Y', '%a, %b %d, %Y', '%A %d %B %Y', 'the %d of %B, %Y']


WEEKDAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday']


def _parse_date(text):
  text = re.sub(r'(\d+)(st|nd|rd|th)\b', r'\1', text)
  found = {}
  for p in STRPTIME:
    try:
      found[p] = datetime.datetime.strptime(text, p).date()
    except ValueError:
      pass
  return found


def test_dates_targets_are_the_parsed_dates_and_formats_vary(tfds_dir):
  task = get_task(dict(SIZES, name='dates', num_train=2000, tfds_dir=tfds_dir))
  used, weekdays = set(), 0
  for src, tgt in _pairs(task, 'train') + _pairs(task, 'test'):
    found = _parse_date(src)
    assert len(set(found.values())) == 1, (src, found)   # exactly one reading
    date = next(iter(found.values()))
    assert tgt == date.isoformat(), (src, tgt)
    for word in re.findall('[a-z]+', src.lower()):
      if word in WEEKDAYS or word in [d[:3] for d in WEEKDAYS]:
        assert date.weekday() == [d[:len(word)] for d in WEEKDAYS].index(word), src
        weekdays += 1
    used.update(found)
    assert len(src) <= 30 and len(tgt) == 10
  assert len(used) >= 15 and weekdays > 100               # many human formats
  assert task.max_target_len == 11
  assert task.model_dims == {'src_vocab_size': len(task.source_vocab), 'tgt_vocab_size': 15}


def test_addition_sums(tfds_dir):
  task = get_task(dict(SIZES, name='addition', num_digits=3, tfds_dir=tfds_dir))
  for src, tgt in _pairs(task, 'train'):
    a, b = src.split('+')
    assert int(tgt) == int(a) + int(b) and int(a) < 1000 and int(b) < 1000


@pytest.mark.parametrize('name,fn', [('copy', lambda s: s), ('reverse', lambda s: s[::-1]),
                                     ('sort', lambda s: ''.join(sorted(s)))])
def test_copy_reverse_sort(tfds_dir, name, fn):
  task = get_task(dict(SIZES, name=name, num_symbols=12, min_len=3, max_len=9,
                       tfds_dir=tfds_dir))
  lengths = set()
  for src, tgt in _pairs(task, 'train'):
    assert tgt == fn(src) and set(src) <= set('0123456789ab')
    lengths.add(len(src))
  assert lengths == set(range(3, 10))


def test_associative_recall(tfds_dir):
  task = get_task(dict(SIZES, name='recall', num_pairs=5, tfds_dir=tfds_dir))
  for src, tgt in _pairs(task, 'train'):
    body, query = src.split('?')
    table = dict(zip(body[0::2], body[1::2]))
    assert len(table) == 5 and tgt == table[query]


def _listops_value(tokens):
  """Recursive-descent evaluator, separate from the library's stack machine."""
  def parse(i):
    if tokens[i].isdigit():
      return int(tokens[i]), i + 1
    op, args, i = tokens[i], [], i + 1
    while tokens[i] != ']':
      v, i = parse(i)
      args.append(v)
    value = {'[MIN': min(args), '[MAX': max(args), '[SM': sum(args) % 10,
             '[MED': math.floor(statistics.median(args))}[op]
    return value, i + 1
  value, end = parse(0)
  assert end == len(tokens)
  return value


def test_listops_labels_and_lengths(tfds_dir):
  task = get_task(dict(SIZES, name='listops', max_length=40, tfds_dir=tfds_dir))
  split = task.splits['train']
  b = split.read_batch(range(len(split)))
  assert b['inputs'].shape == (400, 40) and task.kind == 'classify'
  for ids, label in zip(b['inputs'], b['label']):
    tokens = task.vocab.decode(ids).split()
    assert _listops_value(tokens) == label
  assert len(set(b['label'].tolist())) == 10
  assert task.model_dims == {'vocab_size': 19, 'num_classes': 10}


@pytest.mark.parametrize('name', ['dates', 'addition', 'copy', 'reverse', 'sort', 'recall',
                                  'listops'])
def test_no_test_example_in_train(tfds_dir, name):
  task = get_task(dict(SIZES, name=name, tfds_dir=tfds_dir))
  key = 'inputs' if task.kind == 'classify' else 'source'
  hashes = {}
  for split, src in task.splits.items():
    rows = src.read_batch(range(len(src)))[key]
    hashes[split] = {hashlib.sha1(r.tobytes()).hexdigest() for r in rows}
    assert len(hashes[split]) == len(src)                 # no duplicates inside a split either
  assert not hashes['train'] & hashes['test']
  assert not hashes['train'] & hashes['validation']
  assert not hashes['validation'] & hashes['test']


def test_reverse_source_reverses_only_the_source(tfds_dir):
  plain = get_task(dict(SIZES, name='dates', tfds_dir=tfds_dir))
  rev = get_task(dict(SIZES, name='dates', reverse_source=True, tfds_dir=tfds_dir))
  a, b = plain.splits['train'][5], rev.splits['train'][5]
  n = int((a['source'] != 0).sum())
  np.testing.assert_array_equal(b['source'][:n], a['source'][:n][::-1])
  assert not b['source'][n:].any()
  np.testing.assert_array_equal(a['target_out'], b['target_out'])


def test_seed_changes_data_not_vocab(tfds_dir):
  a = get_task(dict(SIZES, name='dates', tfds_dir=tfds_dir))
  b = get_task(dict(SIZES, name='dates', seed=1, tfds_dir=tfds_dir))
  assert list(a.source_vocab) == list(b.source_vocab)
  assert not np.array_equal(a.splits['train'][0]['source'], b.splits['train'][0]['source'])


def test_pair_layout_and_too_long_sample():
  v = Vocab('abc')
  ex = encode_pair(list('ab'), list('cab'), v, v, max_source_len=4, max_target_len=5)
  np.testing.assert_array_equal(ex['source'], [4, 5, 0, 0])
  np.testing.assert_array_equal(ex['target_in'], [1, 6, 4, 5, 0])
  np.testing.assert_array_equal(ex['target_out'], [6, 4, 5, 2, 0])
  with pytest.raises(ValueError, match=r"source 'abca' has 4 tokens > max_source_len=3"):
    encode_pair(list('abca'), list('a'), v, v, max_source_len=3, max_target_len=5)
  with pytest.raises(ValueError, match=r"target 'abca' has 4 tokens \+ EOS > max_target_len=4"):
    encode_pair(list('a'), list('abca'), v, v, max_source_len=3, max_target_len=4)


def test_bad_options_raise(tfds_dir):
  with pytest.raises(ValueError, match='max_source_len=20 is shorter than the longest format'):
    get_task({'name': 'dates', 'max_source_len': 20, 'tfds_dir': tfds_dir})
  with pytest.raises(ValueError, match='only 100 distinct examples'):
    get_task({'name': 'addition', 'num_digits': 1, 'num_train': 200, 'tfds_dir': tfds_dir})
  with pytest.raises(ValueError, match='num_pairs'):
    get_task({'name': 'recall', 'num_pairs': 30, 'tfds_dir': tfds_dir})


def _operand_shares(task) -> np.ndarray:
  """Share of operands with 1, 2, 3 digits over every split, counted from the decoded text."""
  lengths = [len(x) for split in ('train', 'validation', 'test') for s, _ in _pairs(task, split)
             for x in s.split('+')]
  return np.bincount(lengths, minlength=4)[1:] / len(lengths)


def test_addition_operands_saito_match_the_book(tfds_dir):
  """`operands=saito` at the saito split sizes gives the book's addition.txt shares of 1-, 2- and
  3-digit operands (9.7% / 32.5% / 57.8%) within 0.5 points; uniform operands give ~1/9/90%."""
  from configs import addition_seq2seq  # pylint: disable=import-outside-toplevel
  task_fields = addition_seq2seq.config(size='saito', operands='saito').task.to_dict()
  task = get_task(dict(task_fields, tfds_dir=tfds_dir))
  assert len(task.splits['train']) == 45_000
  np.testing.assert_allclose(_operand_shares(task), [0.097, 0.325, 0.578], atol=0.005)
  uniform = get_task(dict(name='addition', num_digits=3, tfds_dir=tfds_dir, **SIZES))
  np.testing.assert_allclose(_operand_shares(uniform), [0.01, 0.09, 0.90], atol=0.03)
  assert 'digit_weights' not in addition_seq2seq.config(size='saito').task  # uniform: no field


def test_addition_digit_weights_refused(tfds_dir):
  for weights in [(1.0, 1.0), (0.5, -0.1, 0.6), (0.0, 0.0, 0.0)]:
    with pytest.raises(ValueError, match=r'digit_weights must be 3 non-negative weights'):
      get_task(dict(name='addition', num_digits=3, digit_weights=weights, tfds_dir=tfds_dir,
                    **SIZES))
  with pytest.raises(ValueError, match=r"operands='book'; valid values: \['saito', 'uniform'\]"):
    from configs import addition_seq2seq  # pylint: disable=import-outside-toplevel
    addition_seq2seq.config(operands='book')
