"""The data path: TFDS array_record build + grain batches, determinism, registry errors."""

import os

import numpy as np
import pytest

from attention_zoo.data import get_task, pipeline, task_names


@pytest.fixture(scope='module')
def copy_task(tmp_path_factory):
  return get_task({'name': 'copy', 'num_train': 300, 'num_validation': 20, 'num_test': 20,
                   'max_len': 8, 'tfds_dir': str(tmp_path_factory.mktemp('tfds'))})


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_same_seed_same_batches_different_seed_different_order(copy_task):
  a = _take(copy_task.batches('train', 32, seed=3), 12)   # > 1 epoch: reshuffled per epoch
  b = _take(copy_task.batches('train', 32, seed=3), 12)
  c = _take(copy_task.batches('train', 32, seed=4), 12)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert not np.array_equal(a[0]['source'], c[0]['source'])
  rows = lambda bs: sorted(map(bytes, np.concatenate([x['source'] for x in bs[:10]])[:300]))
  assert rows(a) == rows(c)  # same first epoch content, another order


def test_one_epoch_without_remainder_drop_sees_every_example_once(copy_task):
  batches = list(copy_task.batches('train', 64, seed=0, num_epochs=1, drop_remainder=False))
  assert [len(b['source']) for b in batches] == [64] * 4 + [300 - 256]
  got = sorted(map(bytes, np.concatenate([b['source'] for b in batches])))
  split = copy_task.splits['train']
  want = sorted(map(bytes, split.read_batch(range(len(split)))['source']))
  assert got == want


def test_no_shuffle_keeps_stored_order(copy_task):
  b = next(copy_task.batches('train', 5, seed=0, shuffle=False))
  np.testing.assert_array_equal(b['source'], np.stack([copy_task.splits['train'][i]['source']
                                                      for i in range(5)]))


def test_batched_read_equals_tfds_decoder_and_generic_grain_path(copy_task):
  split = copy_task.splits['train']
  for i in (0, 7, 299):
    ours, theirs = split[i], split.tfds_example(i)
    assert set(ours) == set(theirs)
    for k in ours:
      np.testing.assert_array_equal(ours[k], theirs[k])
  plain = [split[i] for i in range(len(split))]  # a list: grain's per-example source path
  a = _take(pipeline.batches(plain, 16, seed=9), 3)
  b = _take(pipeline.batches(split, 16, seed=9), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['target_out'], y['target_out'])


def test_prefetch_gives_the_same_batches(copy_task):
  a = _take(copy_task.batches('train', 32, seed=1), 3)
  b = _take(pipeline.batches(copy_task.splits['train'], 32, seed=1, prefetch=2), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['source'], y['source'])


def test_options_hash_to_separate_caches(tmp_path):
  opts = {'name': 'copy', 'num_train': 50, 'num_validation': 5, 'num_test': 5,
          'tfds_dir': str(tmp_path)}
  get_task(opts)
  get_task(opts)                       # reused, not rebuilt
  get_task(dict(opts, seed=1))         # other options -> other cache
  assert len(os.listdir(tmp_path / 'az_synthetic')) == 2


def test_unknown_task_and_option_list_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown task 'datez'.*did you mean 'dates'.*addition"):
    get_task({'name': 'datez'})
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_trian'\].*num_train"):
    get_task({'name': 'dates', 'num_trian': 5})
  with pytest.raises(ValueError, match='no "name"'):
    get_task({'num_train': 5})
  assert {'addition', 'babi', 'char_lm', 'copy', 'dates', 'listops', 'mnist', 'parallel_text',
          'recall', 'reverse', 'sort', 'imdb_reviews', 'cifar10'} <= set(task_names())


def test_missing_split_and_bad_batch_size(copy_task):
  with pytest.raises(ValueError, match="no split 'dev'"):
    copy_task.batches('dev', 4, seed=0)
  with pytest.raises(ValueError, match='batch_size'):
    copy_task.batches('train', 0, seed=0)


def test_config_dict_is_accepted(tmp_path):
  import ml_collections
  c = ml_collections.ConfigDict({'name': 'addition', 'num_digits': 2, 'num_train': 40,
                                 'num_validation': 5, 'num_test': 5, 'tfds_dir': str(tmp_path)})
  assert len(get_task(c).splits['train']) == 40


def test_each_epoch_is_a_new_permutation():
  source = [{'x': np.int32(i)} for i in range(10)]
  got = np.concatenate([b['x'] for b in pipeline.batches(source, 4, seed=0, num_epochs=2,
                                                         drop_remainder=False)])
  assert len(got) == 20
  assert sorted(got[:10]) == list(range(10)) and sorted(got[10:]) == list(range(10))
  assert list(got[:10]) != list(got[10:])
  want = np.random.default_rng([0, 1]).permutation(10)       # the documented permutation
  np.testing.assert_array_equal(got[10:], want)
