"""Resuming: interrupted + resumed == uninterrupted; a changed config is refused."""

import jax
import numpy as np
import pytest
from flax import nnx

from attention_zoo.build import build_model
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import load_params
from attention_zoo.train.loop import train_and_evaluate
from attention_zoo.train.steps import split_model
from attention_zoo.train.workdir import ConfigMismatchError
from tests import fixtures as h

pytestmark = pytest.mark.usefixtures('tiny_models')


def _final_state(workdir, config, task):
  """The leaves of the last checkpoint's params and other model state."""
  _, params, _, other = split_model(nnx.eval_shape(lambda: build_model(config, task)))
  return jax.tree.leaves(load_params(workdir / wd.CHECKPOINTS, params, other))


def _final_params(workdir, config, task):
  abstract = nnx.state(nnx.eval_shape(lambda: build_model(config, task)), nnx.Param)
  return jax.tree.leaves(load_params(workdir / wd.CHECKPOINTS, abstract)[0])


@pytest.mark.parametrize('model_name,make_task', [('_tiny_classifier', h.blobs_task),
                                                  ('_tiny_seq2seq', h.reverse_task)])
def test_killed_and_resumed_equals_uninterrupted(tmp_path, model_name, make_task):
  model = {'hidden': 8} if model_name == '_tiny_classifier' else None
  config = h.tiny_config(model_name, steps=8, model=model, checkpoint_every=3, eval_every=0)
  task = make_task()
  full, cut = tmp_path / 'full', tmp_path / 'cut'
  uninterrupted = train_and_evaluate(config, full, task=task)
  assert train_and_evaluate(config, cut, task=task, stop_after_step=5) == {}  # killed at step 5
  assert sorted(int(p.name) for p in (cut / wd.CHECKPOINTS).iterdir()) == [3]
  resumed = train_and_evaluate(config, cut, task=task)  # resumes from step 3, redoes 4 and 5
  assert resumed['step'] == 8
  assert resumed['test'] == uninterrupted['test']  # eval also uses restored BatchNorm statistics
  for a, b in zip(_final_params(full, config, task), _final_params(cut, config, task), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rows_full = wd.read_jsonl(full / wd.METRICS)
  rows_cut = wd.read_jsonl(cut / wd.METRICS)
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
  assert '"lr": 0.5' in (tmp_path / wd.CONFIG).read_text()


def test_model_state_that_counts_steps_survives_resume(tmp_path):
  # The tiny memory network counts its train steps for linear start (softmax from step 3): a run
  # killed after step 3 resumes from checkpoint 2 with its count, as if never stopped.
  config = h.tiny_config('_tiny_memory', steps=6, model={'hidden': 8, 'linear_start_steps': 3},
                         checkpoint_every=2, eval_every=0)
  task = h.recall_qa_task()
  train_and_evaluate(config, tmp_path / 'full', task=task)
  train_and_evaluate(config, tmp_path / 'cut', task=task, stop_after_step=3)
  train_and_evaluate(config, tmp_path / 'cut', task=task)
  full = _final_state(tmp_path / 'full', config, task)
  for a, b in zip(full, _final_state(tmp_path / 'cut', config, task), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert 6 in [int(np.asarray(x)) for x in full if np.ndim(x) == 0]  # the count: 6 train steps
  off = h.tiny_config('_tiny_memory', steps=6, model={'hidden': 8, 'linear_start_steps': 0},
                      checkpoint_every=2, eval_every=0)
  train_and_evaluate(off, tmp_path / 'off', task=task)
  assert _final_params(tmp_path / 'off', off, task)[0].tolist() != \
      _final_params(tmp_path / 'full', config, task)[0].tolist()
