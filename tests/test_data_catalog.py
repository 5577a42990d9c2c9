"""TFDS catalog datasets through tfds.data_source + grain, with tfds.testing.mock_data (offline)."""

import sys
import types

import numpy as np
import pytest
import sacrebleu
import tensorflow_datasets as tfds

from attention_zoo.data import get_task
from attention_zoo.train import evaluation


@pytest.mark.parametrize('name,shape', [('tfds_mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_image_datasets(tmp_path, name, shape):
  with tfds.testing.mock_data(num_examples=12):
    task = get_task({'name': name, 'num_validation': 2, 'tfds_dir': str(tmp_path)})
    assert {k: len(v) for k, v in task.splits.items()} == {'train': 10, 'validation': 2,
                                                           'test': 12}
    b = next(task.batches('train', 4, seed=0))
  assert b['inputs'].shape == (4,) + shape and b['inputs'].dtype == np.float32
  assert b['inputs'].max() <= 1.0 and b['label'].dtype == np.int32
  assert task.model_dims == {'num_classes': 10, 'in_channels': shape[-1], 'image_shape': shape}
  assert 'tensorflow' not in sys.modules


def test_imdb_bytes(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    task = get_task({'name': 'imdb_reviews', 'max_length': 8, 'num_validation': 1,
                     'tfds_dir': str(tmp_path)})
    ex = task.splits['test'][0]
    raw = tfds.data_source('imdb_reviews', split='test', data_dir=str(tmp_path))[0]['text']
    b = next(task.batches('train', 5, seed=0))
  assert b['inputs'].shape == (5, 8)
  text = raw if isinstance(raw, str) else raw.decode()
  assert task.vocab.decode(ex['inputs']) == text.encode()[:8].decode('utf-8', 'replace')
  with tfds.testing.mock_data(num_examples=6):
    strict = get_task({'name': 'imdb_reviews', 'max_length': 2, 'truncate': False,
                       'num_validation': 1, 'tfds_dir': str(tmp_path)})
    with pytest.raises(ValueError, match='byte tokens > 2'):
      strict.splits['train'][0]


def test_ted_translation_bytes_and_bleu(tmp_path):
  with tfds.testing.mock_data(num_examples=5):
    task = get_task({'name': 'ted_hrlr_translate', 'tfds_dir': str(tmp_path)})
    raw = tfds.data_source('ted_hrlr_translate/pt_to_en', split='validation',
                           data_dir=str(tmp_path))[1]
    ex = task.splits['validation'][1]
    b = next(task.batches('train', 5, seed=0))
    val = next(task.batches('validation', 5, seed=0, shuffle=False))
    src = tfds.data_source('ted_hrlr_translate/pt_to_en', split='validation',
                           data_dir=str(tmp_path))
    refs = [x['en'] if isinstance(x['en'], str) else x['en'].decode() for x in src]
  assert task.kind == 'seq2seq' and b['source'].shape == (5, 256)
  en = raw['en'] if isinstance(raw['en'], str) else raw['en'].decode()
  assert task.vocab.decode(ex['target_out']) == en
  assert task.vocab.decode(ex['target_in'][1:]) == en
  m = task.generation_metrics_fn(val['target_out'], val)
  assert m['exact_match'] == 1.0
  assert m['bleu'] == pytest.approx(sacrebleu.corpus_bleu(refs, [refs]).score)
  wrong = np.where(val['target_out'] > 2, 4 + ord('q'), val['target_out'])
  assert task.generation_metrics_fn(wrong, val)['exact_match'] == 0.0
  # The samples written during evaluation are text, not one '<0x61>' per byte.
  samples = evaluation.Evaluator(task, lambda *a: None, None, None,
                                 types.SimpleNamespace(num_samples=5))._samples(wrong, val)
  assert [s['target'] for s in samples] == refs
  assert [s['prediction'] for s in samples] == ['q' * len(r.encode()) for r in refs]
