"""The data path: TFDS array_record build + grain batches, determinism, registry errors."""

import itertools
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


# ---- length buckets (attention_zoo.train.batching, train.batching='bucketed') --------------
def _lengths(n=500, seed=0):
  return np.random.default_rng(seed).integers(1, 41, n)


def _all_rows(plan, epoch):
  return [plan(epoch * plan.per_epoch + j) for j in range(plan.per_epoch)]


def test_plan_is_a_pure_function_of_seed_and_step():
  lengths = _lengths()
  a = pipeline.LengthBuckets(lengths, (8, 16, 40), (16, 16, 16), seed=3)
  b = pipeline.LengthBuckets(lengths, (8, 16, 40), (16, 16, 16), seed=3)
  steps_ = [5 * a.per_epoch + 2, 0, 3 * a.per_epoch - 1, 7]  # out of order, far epochs first
  for s in steps_:
    ba, ra = a(s)
    bb, rb = b(s)
    assert ba == bb
    np.testing.assert_array_equal(ra, rb)
  other = pipeline.LengthBuckets(lengths, (8, 16, 40), (16, 16, 16), seed=4)
  assert any(not np.array_equal(a(s)[1], other(s)[1]) for s in range(5))


def test_an_epoch_holds_every_example_and_each_fits_its_bucket():
  # 94 examples for bucket 8, 96 for 16, 310 for 40, in a random order
  lengths = np.random.default_rng(0).permutation(np.repeat([5, 12, 30], [94, 96, 310]))
  lengths[:3] = (8, 16, 40)  # each bucket's own length still fits in it
  sizes = (16, 12, 8)
  plan = pipeline.LengthBuckets(lengths, (8, 16, 40), sizes, seed=0)
  # 94 // 16 = 5 batches (14 carried up), (96 + 14) // 12 = 9 (2 carried), ceil(312 / 8) = 39
  assert plan.batches_per_bucket == [5, 9, 39] and plan.per_epoch == 53
  for epoch in (0, 1):
    batches = _all_rows(plan, epoch)
    for bucket, rows in batches:
      assert len(rows) == sizes[bucket]
      assert lengths[rows].max() <= (8, 16, 40)[bucket]
    seen = np.concatenate([rows for _, rows in batches])
    assert sorted(set(seen.tolist())) == list(range(len(lengths)))  # every example
    assert len(seen) == len(lengths)  # 5*16 + 9*12 + 39*8 = 500: no repeats here
  first = [r.tolist() for _, r in _all_rows(plan, 0)]
  assert first != [r.tolist() for _, r in _all_rows(plan, 1)]  # a new order each epoch
  # a remainder in the longest bucket is filled up with repeats of its own first examples
  plan = pipeline.LengthBuckets(lengths, (8, 16, 40), (16, 12, 10), seed=0)
  seen = np.concatenate([rows for _, rows in _all_rows(plan, 0)])
  assert plan.batches_per_bucket[-1] == 32 and len(seen) == 80 + 108 + 320
  assert sorted(set(seen.tolist())) == list(range(len(lengths)))


def _positions(lengths, buckets):
  return sum(buckets[np.searchsorted(buckets, n)] for n in lengths)


def test_bucket_lengths_are_the_least_padding_choice():
  assert pipeline.best_bucket_lengths(np.arange(1, 101), 4, width=100) == (24, 48, 72, 100)
  assert pipeline.best_bucket_lengths(np.arange(1, 101), 1, width=120) == (104,)
  assert pipeline.best_bucket_lengths(np.full(9, 3), 8, width=5) == (5,)
  rng = np.random.default_rng(0)
  for _ in range(30):  # == brute force over every subset of the candidate lengths
    lengths = rng.integers(1, rng.integers(2, 60), rng.integers(1, 40))
    k, width = int(rng.integers(1, 5)), int(max(lengths.max(), rng.integers(1, 70)))
    top = min(-(-lengths.max() // 8) * 8, width)
    cands = sorted({*range(8, top, 8), top})
    brute = min(_positions(lengths, list(sub) + [top])
                for r in range(k) for sub in itertools.combinations(cands[:-1], r))
    got = pipeline.best_bucket_lengths(lengths, k, width)
    assert len(got) <= k and got[-1] == top and _positions(lengths, got) == brute


def test_sequence_lengths_end_at_the_last_real_token():
  source = [{'a': np.array([4, 5, 0, 0], np.int32), 'b': np.array([1, 4, 4, 2, 0], np.int32)},
            {'a': np.array([4, 0, 6, 0], np.int32), 'b': np.array([1, 2, 0, 0, 0], np.int32)},
            {'a': np.zeros(4, np.int32), 'b': np.zeros(5, np.int32)}]
  assert pipeline.sequence_lengths(source, ('a',)).tolist() == [2, 3, 0]
  assert pipeline.sequence_lengths(source, ('a', 'b'), chunk=2).tolist() == [4, 3, 0]
