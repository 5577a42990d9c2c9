"""Resuming: interrupted + resumed == uninterrupted; a changed config is refused."""

import jax
import numpy as np
import pytest
from flax import nnx

from attention_zoo.train import ConfigMismatchError, build_model, train_and_evaluate, writers
from attention_zoo.train.checkpoints import load_params
from tests import test_train_helpers as h

pytestmark = pytest.mark.usefixtures('tiny_models')
tiny_models = h.tiny_models  # the fixture, visible to this module


def _final_params(workdir, config, task):
  abstract = nnx.state(nnx.eval_shape(lambda: build_model(config, task)), nnx.Param)
  return jax.tree.leaves(load_params(workdir / 'checkpoints', abstract))


@pytest.mark.parametrize('model_name,make_task', [('_tiny_classifier', h.blobs_task),
                                                  ('_tiny_seq2seq', h.reverse_task)])
def test_killed_and_resumed_equals_uninterrupted(tmp_path, model_name, make_task):
  config = h.tiny_config(model_name, steps=8, checkpoint_every=3, eval_every=0)
  if model_name == '_tiny_classifier':
    config.unlock(); config.model = {'hidden': 8}; config.lock()
  task = make_task()
  full, cut = tmp_path / 'full', tmp_path / 'cut'
  uninterrupted = train_and_evaluate(config, full, task=task)
  assert train_and_evaluate(config, cut, task=task, stop_after_step=5) == {}  # killed at step 5
  assert sorted(int(p.name) for p in (cut / 'checkpoints').iterdir()) == [3]
  resumed = train_and_evaluate(config, cut, task=task)  # resumes from step 3, redoes 4 and 5
  assert resumed['step'] == 8
  assert resumed['test'] == uninterrupted['test']  # eval also uses restored BatchNorm statistics
  for a, b in zip(_final_params(full, config, task), _final_params(cut, config, task), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rows_full = writers.read_jsonl(full / 'metrics.jsonl')
  rows_cut = writers.read_jsonl(cut / 'metrics.jsonl')
  assert [(r['step'], r['split']) for r in rows_cut] == [(r['step'], r['split']) for r in rows_full]
  assert [r['loss'] for r in rows_cut] == [r['loss'] for r in rows_full]


def test_resume_with_changed_config_is_refused_naming_the_key(tmp_path):
  task = h.reverse_task()
  train_and_evaluate(h.tiny_config(steps=3), tmp_path, task=task)
  changed = h.tiny_config(steps=3, lr=0.5)
  with pytest.raises(ConfigMismatchError, match=r'train\.lr: 0\.003 -> 0\.5'):
    train_and_evaluate(changed, tmp_path, task=task)
  results = train_and_evaluate(changed, tmp_path, task=task, fresh=True)  # explicit fresh start
  assert results['step'] == 3
  assert '"lr": 0.5' in (tmp_path / 'config.json').read_text()


def test_linear_start_is_driven_by_step_and_survives_resume(tmp_path):
  config = h.tiny_config('_tiny_memory', steps=6, checkpoint_every=2, eval_every=0,
                         linear_start_steps=3)
  config.unlock(); config.model = {'hidden': 8}; config.lock()
  task = h.recall_qa_task()
  h.LINEAR_START_CALLS.clear()
  train_and_evaluate(config, tmp_path / 'full', task=task)
  assert h.LINEAR_START_CALLS == [True, False]  # on for steps 0-2, off from step 3
  h.LINEAR_START_CALLS.clear()
  train_and_evaluate(config, tmp_path / 'cut', task=task, stop_after_step=3)  # killed in phase 1
  train_and_evaluate(config, tmp_path / 'cut', task=task)  # resumes at step 2: still linear
  assert h.LINEAR_START_CALLS == [True, True, False]
  for a, b in zip(_final_params(tmp_path / 'full', config, task),
                  _final_params(tmp_path / 'cut', config, task), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  h.LINEAR_START_CALLS.clear()
  config.unlock(); config.train.linear_start_steps = 0; config.lock()
  train_and_evaluate(config, tmp_path / 'off', task=task)
  assert h.LINEAR_START_CALLS == []  # 0 = never touched
  assert _final_params(tmp_path / 'off', config, task)[0].tolist() != \
      _final_params(tmp_path / 'full', config, task)[0].tolist()
