"""Real datasets from the real-data folder (fixture data_dir; skipped with a reason when absent)."""

import gzip
import os

import numpy as np
import pytest

from attention_zoo.data import babi, get_task, mnist


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.mark.parametrize('task_id', range(1, 21))
def test_babi_parse_counts(data_dir, task_id):
  qs = babi.load_questions(os.path.join(data_dir, 'babi/en'), task_id)
  assert len(qs['train']) == 1000 and len(qs['test']) == 1000
  assert all(q.story and q.query and q.answer for q in qs['train'])


def test_babi_task_layout(data_dir, tfds_dir):
  root = os.path.join(data_dir, 'babi/en')
  task = get_task({'name': 'babi', 'task_id': 1, 'data_dir': root, 'tfds_dir': tfds_dir})
  assert {k: len(v) for k, v in task.splits.items()} == {'train': 900, 'validation': 100,
                                                         'test': 1000}
  dims = task.model_dims
  assert dims['memory_size'] == 50 and dims['sentence_len'] == 6
  assert dims['vocab_size'] == dims['num_classes'] == len(task.vocab) == 4 + 19
  q = babi.load_questions(root, 1)['test'][0]           # test split keeps file order
  ex = task.splits['test'][0]
  assert task.vocab.decode(ex['query']) == ' '.join(q.query)
  assert task.vocab[int(ex['label'])] == q.answer
  assert task.vocab.decode(ex['story'][0]) == ' '.join(q.story[-1])   # row 0 = most recent
  assert task.vocab.decode(ex['story'][len(q.story) - 1]) == ' '.join(q.story[0])
  assert not ex['story'][len(q.story):].any()


def test_babi_flat_and_unknown_words(data_dir, tfds_dir):
  root = os.path.join(data_dir, 'babi/en')
  flat = get_task({'name': 'babi', 'task_id': 1, 'flat': True, 'data_dir': root,
                   'tfds_dir': tfds_dir})
  q = babi.load_questions(root, 1)['test'][0]
  ids = flat.splits['test'][0]['inputs']
  assert flat.kind == 'classify'
  want = [w for s in q.story for w in s] + ['<bos>'] + list(q.query)
  assert [flat.vocab[i] for i in ids if i] == want
  with pytest.raises(ValueError, match=r"qa8_lists-sets_test.txt: question \d+ .*football,apple,"
                                       r"milk.*unknown_words"):
    get_task({'name': 'babi', 'task_id': 8, 'data_dir': root, 'tfds_dir': tfds_dir})
  t8 = get_task({'name': 'babi', 'task_id': 8, 'unknown_words': 'unk', 'data_dir': root,
                 'tfds_dir': tfds_dir})
  labels = t8.splits['test'].read_batch(range(1000))['label']
  assert (labels == 3).sum() == 1                      # the one unseen answer -> <unk>


def test_mnist_decode_counts_and_split(data_dir, tfds_dir):
  root = os.path.join(data_dir, 'mnist-t10k')
  images = mnist.read_idx(os.path.join(root, mnist.IMAGES), 2051)
  labels = mnist.read_idx(os.path.join(root, mnist.LABELS), 2049)
  assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(labels),
                                [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  task = get_task({'name': 'mnist', 'data_dir': root, 'tfds_dir': tfds_dir})
  sizes = {k: len(v) for k, v in task.splits.items()}
  assert sizes == {'train': 7000, 'validation': 1000, 'test': 2000}
  all_labels = np.concatenate([s.read_batch(range(len(s)))['label'] for s in task.splits.values()])
  np.testing.assert_array_equal(np.bincount(all_labels), np.bincount(labels))
  b = next(task.batches('train', 64, seed=0))
  assert b['inputs'].shape == (64, 28, 28, 1) and b['inputs'].dtype == np.float32
  assert 0.0 <= b['inputs'].min() and b['inputs'].max() <= 1.0 and b['inputs'].max() > 0.99
  # the stored pixels are the file's pixels: find train[0] among the raw images
  x = (task.splits['train'][0]['inputs'][..., 0] * 255).round().astype(np.uint8)
  assert (images == x).all(axis=(1, 2)).sum() >= 1


def test_mnist_bad_magic_names_the_file(tmp_path):
  path = tmp_path / 'bad-images.gz'
  with gzip.open(path, 'wb') as f:
    f.write(np.array([2049, 1, 28, 28], '>u4').tobytes() + bytes(784))
  with pytest.raises(ValueError, match=r'bad-images.gz has magic number 2049, expected 2051'):
    mnist.read_idx(str(path), 2051)


def test_tiny_shakespeare_vocab_and_windows(data_dir, tfds_dir):
  task = get_task({'name': 'tiny_shakespeare', 'seq_len': 64,
                   'data_dir': os.path.join(data_dir, 'tinyshakespeare'), 'tfds_dir': tfds_dir})
  assert len(task.vocab.content_tokens) == 65 and task.model_dims == {'vocab_size': 69}
  ex = task.splits['train'][0]
  np.testing.assert_array_equal(ex['inputs'][1:], ex['targets'][:-1])
  assert task.vocab.decode(ex['inputs']).startswith('First Citizen:\nBefore we proceed')
  n = 1_115_394
  assert len(task.splits['train']) == (int(0.9 * n) - 1) // 64
  assert len(task.splits['test']) == (n - int(0.95 * n) - 1) // 64


def test_missing_data_dir_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.delenv('ATTENTION_ZOO_DATA', raising=False)
  with pytest.raises(ValueError, match='set the option data_dir .* ATTENTION_ZOO_DATA'):
    get_task({'name': 'mnist', 'tfds_dir': str(tmp_path)})
  with pytest.raises(ValueError, match='does not exist'):
    get_task({'name': 'babi', 'data_dir': str(tmp_path / 'nope'), 'tfds_dir': str(tmp_path)})
