"""Length-bucketed train batches: the loss of a cut batch against the same examples padded, the
batch sizes, and resuming a bucketed run bit-identically. (The bucket plan itself, a pure
function of (seed, step), is tested in test_data_pipeline.py.)"""

import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from attention_zoo.data import pipeline
from attention_zoo.data.base import Task
from attention_zoo.models import get_model
from attention_zoo.specials import BOS, EOS, SPECIALS
from attention_zoo.train import batching, steps
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import load_params
from attention_zoo.train.loop import train_and_evaluate
from configs import common
from tests import fixtures as h


# ---- a seq2seq task of variable lengths -------------------------------------------------------
S_WIDTH = 12


def _reverse_task(n=200, seed=0) -> Task:
  rng = np.random.default_rng(seed)

  def split(count):
    out = []
    for _ in range(count):
      length = int(rng.integers(1, S_WIDTH + 1))
      x = rng.integers(len(SPECIALS), len(h.VOCAB), length)
      pad = lambda a, w: np.pad(a, (0, w - len(a))).astype(np.int32)
      out.append({'source': pad(x, S_WIDTH),
                  'target_in': pad(np.concatenate([[BOS], x[::-1]]), S_WIDTH + 1),
                  'target_out': pad(np.concatenate([x[::-1], [EOS]]), S_WIDTH + 1)})
    return out

  return Task(name='tiny_reverse_lengths', kind='seq2seq',
              splits={'train': split(n), 'validation': split(20), 'test': split(20)},
              model_dims={'src_vocab_size': len(h.VOCAB), 'tgt_vocab_size': len(h.VOCAB)},
              vocab=h.VOCAB, max_target_len=S_WIDTH + 1)


def _lm_task(n=64, width=12, seed=0) -> Task:
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(n):
    x = np.zeros(width + 1, np.int32)  # a text of 2..width+1 tokens, then PAD
    length = int(rng.integers(2, width + 2))
    x[:length] = rng.integers(len(SPECIALS), 11, length)
    rows.append({'inputs': x[:-1], 'targets': x[1:]})
  return Task(name='tiny_lm_lengths', kind='lm', splits={'train': rows},
              model_dims={'vocab_size': 11})


def _train_config(**train):
  c = common.base_config()
  c.train.update(dict(batch_size=16, batching='bucketed', bucket_lengths=(4, 8)), **train)
  return c.train


MODELS = {
    'transformer': dict(d_model=16, num_heads=2, num_layers=2, ffn_dim=32, dropout_rate=0.0,
                        max_len=32),
    'seq2seq_luong': dict(embed_dim=8, hidden=16, score='general', style='luong'),
    'seq2seq_bahdanau_bigru': dict(embed_dim=8, hidden=16, score='additive', style='bahdanau',
                                   cell='gru', bidirectional=True),
    'transformer_lm': dict(d_model=16, num_heads=2, num_layers=2, ffn_dim=32, dropout_rate=0.0,
                           max_len=32),
}


@pytest.mark.parametrize('name', sorted(MODELS))
def test_bucketed_batch_has_the_loss_of_the_same_examples_padded(name):
  task = _lm_task() if name == 'transformer_lm' else _reverse_task()
  source = task.splits['train']
  model_name = name.split('_')[0] if name.startswith('seq2seq') else name
  dims = task.model_dims
  model = get_model(model_name, rngs=nnx.Rngs(0), **dims, **MODELS[name])
  _, g_eval, state = steps.init_state(model, optax.sgd(0.1), None)
  eval_step = jax.jit(steps.make_eval_step(g_eval, task))
  batches = batching.train_batches(task, _train_config(), seed=0)
  checked = set()
  for step in range(batches.plan.per_epoch):
    bucket, rows = batches.plan(step)
    if bucket in checked:
      continue
    checked.add(bucket)
    cut = batches.batch(step)
    full = pipeline.read_rows(source, rows)
    width = batches.plan.bucket_lengths[bucket]
    for k in batching.SEQUENCE_KEYS[task.kind]:
      assert cut[k].shape[1] == min(width, full[k].shape[1])
    for k in cut:
      np.testing.assert_array_equal(cut[k], full[k][:, :cut[k].shape[1]])
      assert not full[k][:, cut[k].shape[1]:].any()  # only PAD was cut
    mask = np.ones(len(rows), np.float32)
    a = eval_step(state.params, state.rngs, state.other, cut, mask)
    b = eval_step(state.params, state.rngs, state.other, full, mask)
    assert float(a['weight']) == float(b['weight']) == np.count_nonzero(full[task.target_key])
    np.testing.assert_allclose(float(a['loss_sum']), float(b['loss_sum']), rtol=2e-5)
    np.testing.assert_allclose(float(a['correct']), float(b['correct']))
  assert checked == {0, 1, 2}  # bucket lengths 4, 8 and the full width


def test_a_train_step_on_a_cut_batch_equals_the_padded_one():
  # No dropout: the step's gradient is the padded batch's (SGD with lr 1: new - old = -gradient;
  # Adam's first step, -lr·sign(g) in effect, would blow float noise of zero gradients up).
  task = _reverse_task()
  model = get_model('transformer', rngs=nnx.Rngs(0), **task.model_dims,
                    **dict(MODELS['transformer'], num_layers=1))
  tx = optax.sgd(1.0)
  g_train, _, state = steps.init_state(model, tx, None)
  batches = batching.train_batches(task, _train_config(), seed=0)
  first = next(s for s in range(batches.plan.per_epoch) if batches.plan(s)[0] == 0)
  cut = batches.batch(first)
  full = pipeline.read_rows(task.splits['train'], batches.plan(first)[1])
  assert cut['source'].shape[1] == 4 < full['source'].shape[1]
  step = jax.jit(steps.make_train_step(g_train, task, tx, (), lambda s: 1.0))
  key = jax.random.key(0)
  new_cut, m_cut = step(state, cut, key)  # (no donation: the state is used twice)
  new_full, m_full = step(state, full, key)
  np.testing.assert_allclose(float(m_cut['loss']), float(m_full['loss']), rtol=2e-5)
  np.testing.assert_allclose(float(m_cut['grad_norm']), float(m_full['grad_norm']), rtol=1e-4)
  assert float(m_full['grad_norm']) > 0.1
  for x, y, old in zip(jax.tree.leaves(new_cut.params), jax.tree.leaves(new_full.params),
                       jax.tree.leaves(state.params), strict=True):
    np.testing.assert_allclose(np.asarray(x - old), np.asarray(y - old), rtol=1e-3, atol=1e-6)


def test_bucketed_batches_cut_padding_and_equal_tokens_sizes():
  task = _reverse_task(n=400)
  padded = batching.train_batches(task, _train_config(batching='padded'), seed=0)
  fixed = batching.train_batches(task, _train_config(bucket_lengths=()), seed=0)
  tokens = batching.train_batches(task, _train_config(bucket_lengths=(), batch_tokens=128),
                                  seed=0)
  # multiples of 8 below the width (13: targets of up to 12 tokens + BOS), then the width
  assert fixed.plan.bucket_lengths == (8, 13)
  assert tokens.plan.batch_sizes == (16, 9)  # 128 // 8, 128 // 13
  width = lambda b: b['source'].shape[1] + b['target_in'].shape[1]
  positions = lambda it: sum(len(b['source']) * width(b) for b in (it.batch(s) for s in range(30)))
  real = lambda it: sum(np.count_nonzero(it.batch(s)['source']) for s in range(30))
  assert positions(fixed) < 0.85 * positions(padded)
  assert real(fixed) / positions(fixed) > real(padded) / positions(padded)
  for s in range(10):
    b = tokens.batch(s)
    assert len(b['source']) * b['target_in'].shape[1] <= 128


def test_bucketing_a_classification_task_is_refused_naming_the_field():
  with pytest.raises(ValueError, match=r'task kind for train.batching=bucketed.*lm, seq2seq'):
    batching.train_batches(h.blobs_task(), _train_config(), seed=0)
  with pytest.raises(ValueError, match=r"unknown train.batching 'bucket'.*bucketed, padded"):
    batching.train_batches(_reverse_task(), _train_config(batching='bucket'), seed=0)
  with pytest.raises(ValueError, match=r'bucket_lengths must be positive and increasing'):
    batching.train_batches(_reverse_task(), _train_config(bucket_lengths=(8, 4)), seed=0)


@pytest.mark.usefixtures('tiny_models')
def test_killed_and_resumed_bucketed_run_equals_uninterrupted(tmp_path):
  config = h.tiny_config('_tiny_seq2seq', steps=8, checkpoint_every=3, eval_every=0,
                         batching='bucketed', bucket_lengths=(6,))
  with config.unlocked():
    config.eval.generate = False  # (compiling the tiny greedy decoder is most of a run's time)
  task = _reverse_task()
  assert len(batching.train_batches(task, config.train, config.seed).shape_batches()) == 2
  full, cut = tmp_path / 'full', tmp_path / 'cut'
  uninterrupted = train_and_evaluate(config, full, task=task)
  assert train_and_evaluate(config, cut, task=task, stop_after_step=5) == {}
  resumed = train_and_evaluate(config, cut, task=task)  # from step 3, redoes 4 and 5
  assert resumed['step'] == 8 and resumed['test'] == uninterrupted['test']
  abstract = nnx.state(nnx.eval_shape(lambda: h.TinySeq2Seq(len(h.VOCAB), len(h.VOCAB),
                                                            rngs=nnx.Rngs(0))), nnx.Param)
  for a, b in zip(jax.tree.leaves(load_params(full / wd.CHECKPOINTS, abstract)[0]),
                  jax.tree.leaves(load_params(cut / wd.CHECKPOINTS, abstract)[0]), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rows_full, rows_cut = wd.read_jsonl(full / wd.METRICS), wd.read_jsonl(cut / wd.METRICS)
  assert [r['loss'] for r in rows_cut] == [r['loss'] for r in rows_full]
  assert uninterrupted['examples_per_s'] > 0 and uninterrupted['tokens_per_s'] > 0


def test_config_fields_default_to_padded_batches():
  c = common.base_config()
  assert (c.train.batching, tuple(c.train.bucket_lengths), c.train.batch_tokens) == \
      ('padded', (), 0)
  assert isinstance(c, ml_collections.ConfigDict)
