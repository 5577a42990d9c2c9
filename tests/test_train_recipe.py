"""The training-recipe fields: label smoothing, checkpoint averaging, and a final
evaluation that decodes with beam search while periodic validation stays greedy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from attention_zoo.build import build_model
from attention_zoo.specials import PAD
from attention_zoo.models.registry import MODELS
from attention_zoo.train import batching, checkpoints, evaluation, steps
from attention_zoo.train.selection import select_step
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import Checkpoints
from attention_zoo.train.loop import train_and_evaluate
from configs import common
from tests import fixtures as h


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_smoothed(logits, targets, eps):
  """Szegedy et al. (2016) sec. 7 by hand: -sum_k ((1 - eps) [k = y] + eps / V) log p(k)."""
  vocab = logits.shape[-1]
  q = (1 - eps) * np.eye(vocab)[targets] + eps / vocab
  return -(q * _np_log_softmax(logits)).sum(-1)


@pytest.mark.parametrize('eps', [0.0, 0.1, 0.3])
def test_label_smoothed_token_loss_matches_numpy_with_padding_masked(eps):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 7)).astype(np.float32) * 3
  targets = rng.integers(1, 7, (3, 5)).astype(np.int32)
  targets[0, 3:] = PAD  # padded positions ...
  targets[2, 1:] = PAD
  example_mask = np.array([1.0, 0.0, 1.0], np.float32)  # ... and a padding row count for nothing
  loss_sum, objective_sum, weight, _ = steps._token_loss(  # pylint: disable=protected-access
      jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(example_mask), eps)
  keep = (targets != PAD) * example_mask[:, None]
  plain = -np.take_along_axis(_np_log_softmax(logits), targets[..., None], -1)[..., 0]
  assert float(weight) == keep.sum() == 4
  np.testing.assert_allclose(float(loss_sum), (plain * keep).sum(), rtol=1e-5)
  np.testing.assert_allclose(float(objective_sum),
                             (_np_smoothed(logits, targets, eps) * keep).sum(), rtol=1e-5)
  if eps:  # smoothing changes the objective, never the reported cross-entropy
    assert abs(float(objective_sum) - float(loss_sum)) > 1e-2


def test_label_smoothed_label_loss_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 5)).astype(np.float32) * 2
  labels = np.array([0, 4, 2, 1], np.int32)
  mask = np.array([1, 1, 0, 1], np.float32)
  _, objective_sum, weight, _ = steps._label_loss(  # pylint: disable=protected-access
      jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), 0.2)
  assert float(weight) == 3
  np.testing.assert_allclose(float(objective_sum),
                             (_np_smoothed(logits, labels, 0.2) * mask).sum(), rtol=1e-5)


@pytest.mark.usefixtures('tiny_models')
def test_train_step_descends_the_smoothed_loss_and_logs_the_plain_one():
  """SGD with lr 1: the update is minus the gradient of the numpy-style smoothed loss."""
  eps = 0.1
  task = h.reverse_task(n_train=8)
  config = h.tiny_config(model={'hidden': 8, 'dropout': 0.0})
  model = build_model(config, task)
  batch = {k: jnp.stack([ex[k] for ex in task.splits['train']]) for k in task.splits['train'][0]}
  batch['target_out'] = batch['target_out'].at[:3, -2:].set(PAD)  # some padding to mask

  def reference(m):  # smoothed cross-entropy over the non-PAD targets, written out
    logits = m(batch['source'], batch['target_in'])
    vocab = logits.shape[-1]
    q = (1 - eps) * jax.nn.one_hot(batch['target_out'], vocab) + eps / vocab
    per_token = -(q * jax.nn.log_softmax(logits)).sum(-1)
    keep = batch['target_out'] != PAD
    return (per_token * keep).sum() / keep.sum(), logits

  (want_objective, logits), want_grads = nnx.value_and_grad(reference, has_aux=True)(model)
  tx = optax.sgd(1.0)
  graphdef, _, state = steps.init_state(model, tx, None)
  step = steps.make_train_step(graphdef, task, tx, (), lambda s: 1.0, label_smoothing=eps)
  new_state, metrics = jax.jit(step)(state, batch, jax.random.key(0))
  keep = batch['target_out'] != PAD
  plain = optax.softmax_cross_entropy_with_integer_labels(logits, batch['target_out'])
  np.testing.assert_allclose(metrics['loss'], (plain * keep).sum() / keep.sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics['smoothed_loss'], want_objective, rtol=1e-5)
  moved = jax.tree.map(lambda a, b: a - b, state.params, new_state.params)
  for got, want in zip(jax.tree.leaves(moved), jax.tree.leaves(nnx.state(want_grads, nnx.Param))):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_average_params_is_the_mean_of_the_checkpoints(tmp_path):
  rng = np.random.default_rng(0)
  saved = {}
  ckpts = Checkpoints(tmp_path, keep=5)
  for step in (10, 20, 30, 40):
    saved[step] = {'w': rng.normal(size=(3, 4)).astype(np.float32),
                   'b': rng.normal(size=(4,)).astype(np.float32)}
    ckpts.save(step, saved[step], {'count': np.int32(step)}, {})
  ckpts.close()
  assert checkpoints.saved_steps(tmp_path) == [10, 20, 30, 40]
  target = jax.tree.map(jnp.zeros_like, saved[10])
  mean = checkpoints.average_params(tmp_path, target, [20, 30, 40])
  for k in ('w', 'b'):
    np.testing.assert_allclose(mean[k], np.mean([saved[s][k] for s in (20, 30, 40)], 0),
                               rtol=1e-6)
  with pytest.raises(ValueError, match='no checkpoint steps'):
    checkpoints.average_params(tmp_path, target, [])


def _split_batch(task, split):
  return {k: np.stack([ex[k] for ex in task.splits[split]]) for k in task.splits[split][0]}


@pytest.mark.usefixtures('tiny_models')
def test_final_evaluation_runs_on_the_averaged_checkpoints(tmp_path):
  task = h.reverse_task(n_train=64, n_val=16, n_test=24)
  config = h.tiny_config(steps=6, checkpoint_every=2, keep_checkpoints=3, eval_every=0)
  with config.unlocked():
    config.eval.average_checkpoints = 3
  results = train_and_evaluate(config, tmp_path, task=task)
  assert results['final_evaluation']['averaged_steps'] == [2, 4, 6]
  model = build_model(config, task)
  model.eval()
  graphdef, params, rngs, other = steps.split_model(model)
  loaded = [checkpoints.load_params(tmp_path / wd.CHECKPOINTS, params, step=s)[0]
            for s in (2, 4, 6)]
  mean = jax.tree.map(lambda *x: np.mean(np.stack(x), 0), *loaded)
  full = _split_batch(task, 'test')

  def test_loss(p):
    logits = nnx.merge(graphdef, p, rngs, other)(full['source'], full['target_in'])
    return float(optax.softmax_cross_entropy_with_integer_labels(logits, full['target_out']).mean())

  np.testing.assert_allclose(results['test']['loss'], test_loss(mean), rtol=1e-5)
  assert abs(test_loss(loaded[-1]) - test_loss(mean)) > 1e-4  # the last step alone differs
  rows = [r for r in wd.read_jsonl(tmp_path / wd.METRICS) if r['split'] == 'test']
  np.testing.assert_allclose(rows[-1]['loss'], test_loss(mean), rtol=1e-5)


@pytest.mark.usefixtures('tiny_models')
def test_final_evaluation_at_the_step_chosen_on_validation(tmp_path):
  # select the *highest* validation loss (mode 'max'): an early step, so that the chosen step, its
  # averaging window and the test numbers all differ from the last step's
  task = h.reverse_task(n_train=64, n_val=16, n_test=24)
  config = h.tiny_config(steps=8, checkpoint_every=2, keep_checkpoints=4, eval_every=2)
  with config.unlocked():
    config.eval.update(average_checkpoints=2, select_metric='loss', select_mode='max')
  results = train_and_evaluate(config, tmp_path, task=task)
  rows = wd.read_jsonl(tmp_path / wd.METRICS)
  first = {}  # the periodic validations: the first validation row of each step after 0
  for r in rows:
    if r['split'] == 'validation' and r['step'] > 0:
      first.setdefault(r['step'], r['loss'])
  assert sorted(first) == [2, 4, 6, 8]  # the last step's greedy validation is written too
  chosen = max(first, key=lambda s: (first[s], -s))
  assert chosen < 8
  selected = results['final_evaluation']['selected']
  assert selected == {'metric': 'loss', 'mode': 'max', 'step': chosen,
                      'curve': [[s, first[s]] for s in (2, 4, 6, 8)]}
  window = [s for s in (2, 4, 6, 8) if s <= chosen][-2:]
  assert results['final_evaluation']['averaged_steps'] == window
  assert results['step'] == 8
  model = build_model(config, task)
  model.eval()
  graphdef, params, rngs, other = steps.split_model(model)
  loaded = [checkpoints.load_params(tmp_path / wd.CHECKPOINTS, params, step=s)[0] for s in window]
  mean = jax.tree.map(lambda *x: np.mean(np.stack(x), 0), *loaded)
  full = _split_batch(task, 'test')
  logits = nnx.merge(graphdef, mean, rngs, other)(full['source'], full['target_in'])
  loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, full['target_out']).mean())
  np.testing.assert_allclose(results['test']['loss'], loss, rtol=1e-5)
  assert [r['step'] for r in rows if r['split'] == 'test'] == [8]  # test read once


@pytest.mark.parametrize('override, match', [
    (dict(eval_every=3), 'positive multiple of train.checkpoint_every'),
    (dict(eval_every=0), 'positive multiple of train.checkpoint_every'),
    (dict(keep_checkpoints=3), 'train.keep_checkpoints must be >= 4'),
])
def test_selection_on_validation_needs_a_checkpoint_at_every_validation(tmp_path, override,
                                                                          match):
  config = h.tiny_config(steps=8, **{'checkpoint_every': 2, 'keep_checkpoints': 4,
                                     'eval_every': 2, **override})
  with config.unlocked():
    config.eval.update(select_metric='loss', select_mode='max')
  with pytest.raises(ValueError, match=match):
    train_and_evaluate(config, tmp_path / 'run', task=h.reverse_task())
  assert not (tmp_path / 'run').exists()


def test_select_step_takes_the_best_and_the_earliest_of_equals():
  curve = {400: 30.0, 800: 34.5, 1200: 34.5, 1600: float('nan')}
  assert select_step(curve, 'max') == 800
  assert select_step(curve, 'min') == 400
  assert select_step({4: float('nan'), 8: 1.0}, 'min') == 8


def test_more_averaged_checkpoints_than_kept_is_an_error(tmp_path):
  config = h.tiny_config(keep_checkpoints=2)
  with config.unlocked():
    config.eval.average_checkpoints = 3
  with pytest.raises(ValueError, match='train.keep_checkpoints >= 3'):
    train_and_evaluate(config, tmp_path, task=h.reverse_task())


class _EchoDecoding(h.TinySeq2Seq):
  """TinySeq2Seq whose generate writes its options into the tokens: [beam_size, 10 alpha, 0...]
  (alpha 0 when none is passed), so a test sees how the loop decoded each evaluation."""

  def generate(self, source, *, max_len: int, beam_size: int = 1, length_penalty=None):
    options = jnp.array([beam_size, round(10 * (length_penalty or 0))], jnp.int32)
    return jnp.zeros((source.shape[0], max_len), jnp.int32).at[:, :2].set(options)


def test_loop_decodes_greedily_until_the_final_evaluation(tmp_path):
  task = h.reverse_task(n_train=64, n_val=16, n_test=24)
  calls = []  # the predictions [N, T] of each generation_metrics_fn call, in order
  task.generation_metrics_fn = lambda pred, batch: calls.append(pred) or {}
  config = h.tiny_config('_echo_decoding', steps=6)  # validation at steps 0, 3 and 6, then test
  with config.unlocked():
    config.eval.update(beam_size=4, length_penalty=0.7)
  with MODELS.override('_echo_decoding', _EchoDecoding):
    results = train_and_evaluate(config, tmp_path, task=task)
  final = dict(results['final_evaluation'])
  assert final.pop('seconds') > 0
  assert final == {'averaged_steps': [6], 'beam_size': 4, 'length_penalty': 0.7}
  assert [len(p) for p in calls] == [16, 16, 16, 24]
  assert [np.unique(p[:, :2], axis=0).tolist() for p in calls] == [
      [[1, 0]], [[1, 0]], [[4, 7]], [[4, 7]]]


def test_final_generate_equals_model_beam_search():
  """The evaluator's final decoding is model.generate(beam_size=k, length_penalty=alpha) on the
  split; its periodic decoding is greedy."""
  task = h.reverse_task(n_train=8, n_val=8, n_test=32)
  model = build_model(_transformer_config(), task)
  model.eval()
  graphdef, params, rngs, other = steps.split_model(model)
  cfg = common.base_config().eval
  cfg.update(batch_size=32, beam_size=4, length_penalty=0.6, num_samples=0)  # one batch
  evaluator = evaluation.make_evaluator(graphdef, task, batching.make_mesh(), cfg, {})
  source = _split_batch(task, 'test')['source']
  want = np.asarray(model.generate(source, max_len=task.max_target_len, beam_size=4,
                                   length_penalty=0.6))
  greedy = np.asarray(model.generate(source, max_len=task.max_target_len, beam_size=1))
  capture = []  # the predictions of each generation_metrics_fn call
  task.generation_metrics_fn = lambda pred, batch: capture.append(pred) or {}
  evaluator('test', params, rngs, other, final=True)
  evaluator('test', params, rngs, other)
  np.testing.assert_array_equal(capture[0], want)
  np.testing.assert_array_equal(capture[1], greedy)
  assert np.any(want != greedy)  # beam search changed some outputs: the test tells them apart


def _transformer_config():
  c = common.base_config()
  c.task.name = 'unused'
  c.model_name = 'transformer'
  c.model = common.transformer_model(d_model=16, num_heads=2, num_layers=1, ffn_dim=32,
                                     dropout_rate=0.0, max_len=16)
  return c
