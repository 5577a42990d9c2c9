"""The NaN/Inf guard, locked configs and the config-flag entry point."""

import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.build import build_model
from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import load_params
from attention_zoo.train.loop import MAX_LOSS, DivergedError, NonFiniteError, train_and_evaluate
from attention_zoo.train.steps import all_finite
from tests import fixtures as h

pytestmark = pytest.mark.usefixtures('tiny_models')
REPO = pathlib.Path(__file__).resolve().parents[1]


def test_nan_guard_names_metric_and_step_and_saves_nothing(tmp_path):
  config = h.tiny_config('_tiny_classifier', steps=4, model={'hidden': 8}, checkpoint_every=1)
  with pytest.raises(NonFiniteError, match=r"train metric 'loss' is nan at step 1"):
    train_and_evaluate(config, tmp_path, task=h.blobs_task(nan_inputs=True))
  ckpt = tmp_path / wd.CHECKPOINTS
  assert not ckpt.exists() or not any(p.name.isdigit() for p in ckpt.iterdir())


def test_nan_guard_stops_on_exploding_params_keeping_only_finite_checkpoints(tmp_path):
  # sgd with an absurd learning rate: params overflow after a few steps
  config = h.tiny_config('_tiny_classifier', steps=30, model={'hidden': 8}, checkpoint_every=1,
                         log_every=1, optimizer='sgd', lr=1e30, clip_norm=0.0, momentum=0.0)
  with pytest.raises(NonFiniteError, match=r'at step (\d+)') as err:
    train_and_evaluate(config, tmp_path, task=h.blobs_task())
  bad_step = int(re.search(r'at step (\d+)', str(err.value)).group(1))
  saved = sorted(int(p.name) for p in (tmp_path / wd.CHECKPOINTS).iterdir() if p.name.isdigit())
  assert saved and max(saved) < bad_step
  task = h.blobs_task()
  abstract = nnx.state(nnx.eval_shape(lambda: build_model(config, task)), nnx.Param)
  for leaf in jax.tree.leaves(load_params(tmp_path / wd.CHECKPOINTS, abstract)[0]):
    assert np.all(np.isfinite(np.asarray(leaf)))


def test_all_finite_checks_every_float_leaf():
  tree = {'a': jnp.ones(3), 'b': {'c': jnp.arange(3), 'd': jnp.array([1.0, 2.0])}}
  assert bool(all_finite(tree))
  tree['b']['d'] = jnp.array([1.0, jnp.inf])
  assert not bool(all_finite(tree))


def test_locked_config_rejects_typo_naming_the_valid_key():
  config = h.tiny_config()
  with pytest.raises(AttributeError, match='Did you mean "lr"'):
    config_utils.apply_overrides(config, {'train.lrr': 0.1})


def test_main_rejects_typo_override(tmp_path):
  config_file = tmp_path / 'c.py'
  config_file.write_text('from configs import common\n'
                         'def get_config(arg=None):\n  return common.base_config()\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.main', f'--config={config_file}',
       f'--workdir={tmp_path / "run"}', '--config.train.stepz=3'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert 'stepz' in proc.stderr and 'Did you mean "steps"' in proc.stderr
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('model_name,make_task', [('_tiny_classifier', h.blobs_task),
                                                  ('_tiny_seq2seq', h.reverse_task)])
def test_divergence_stops_a_huge_learning_rate_and_not_a_normal_run(tmp_path, model_name,
                                                                    make_task):
  # Adam at lr = 1e12: finite, but the loss jumps to ~1e12 - 1e24 from the first window on.
  model = {'hidden': 8} if model_name == '_tiny_classifier' else None
  train = dict(steps=20, log_every=5, eval_every=0, checkpoint_every=5)
  huge = h.tiny_config(model_name, model=model, lr=1e12, clip_norm=0.0, **train)
  with pytest.raises(DivergedError, match=r"train metric 'loss' diverged at step 5: its mean "
                     r'over steps 1-5 is \S+ > 1000 nats per target') as err:
    train_and_evaluate(huge, tmp_path / 'huge', task=make_task())
  assert isinstance(err.value, NonFiniteError)
  assert float(re.search(r'is (\S+) >', str(err.value)).group(1)) > 1e10
  assert not wd.has_checkpoint(tmp_path / 'huge')  # the diverged state is never saved
  assert not (tmp_path / 'huge' / wd.RESULTS).exists()
  normal = h.tiny_config(model_name, model=model, **train)  # lr 3e-3
  assert train_and_evaluate(normal, tmp_path / 'normal', task=make_task())['step'] == 20
  losses = [r['loss'] for r in wd.read_jsonl(tmp_path / 'normal' / wd.METRICS)
            if r['split'] == 'train']
  assert len(losses) == 4 and max(losses) < 3 < MAX_LOSS / 100  # near log V; far below the bound
