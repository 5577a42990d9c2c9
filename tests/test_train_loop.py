"""The training loop end to end on tiny in-test tasks and models."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from attention_zoo.build import build_model
from attention_zoo.train import batching, evaluation, steps, writers
from attention_zoo.train import workdir as wd
from attention_zoo.train.loop import train_and_evaluate
from tests import fixtures as h

pytestmark = pytest.mark.usefixtures('tiny_models')


def test_seq2seq_run_writes_every_workdir_file(tmp_path):
  config = h.tiny_config(checkpoint_every=2, keep_checkpoints=2)
  results = train_and_evaluate(config, tmp_path, task=h.reverse_task())
  names = {p.name for p in tmp_path.iterdir()}
  assert {wd.CONFIG, wd.METRICS, wd.SAMPLES, wd.RESULTS, wd.CHECKPOINTS} <= names
  assert any(n.startswith('events.out.tfevents') for n in names)
  assert sorted(int(p.name) for p in (tmp_path / wd.CHECKPOINTS).iterdir()) == [4, 6]  # keep 2
  saved = json.loads((tmp_path / wd.RESULTS).read_text())
  assert saved['step'] == 6 and saved['num_params'] == results['num_params'] > 0
  for key in ('compile_s', 'steps_per_s', 'examples_per_s', 'tokens_per_s'):
    assert saved[key] > 0, key
  assert 0.0 <= saved['test']['gen_exact_match'] <= 1.0
  assert set(saved['versions']) >= {'python', 'jax', 'flax'}
  rows = wd.read_jsonl(tmp_path / wd.METRICS)
  assert [(r['step'], r['split']) for r in rows] == [
      (0, 'validation'), (2, 'train'), (3, 'train'), (3, 'validation'), (4, 'train'),
      (6, 'train'), (6, 'validation'), (6, 'test')]  # step 0: the untrained model
  assert all(np.isfinite(r['loss']) for r in rows)
  samples = wd.read_jsonl(tmp_path / wd.SAMPLES)
  assert len(samples) == 4 * 3 and len(samples[0]['source']) == 5


def test_finished_run_is_not_redone(tmp_path):
  task = h.reverse_task()
  first = train_and_evaluate(h.tiny_config(steps=3), tmp_path, task=task)
  mtime = (tmp_path / wd.RESULTS).stat().st_mtime_ns
  again = train_and_evaluate(h.tiny_config(steps=3), tmp_path, task=task)
  assert again == json.loads(json.dumps(first))  # results.json as written, not recomputed
  assert (tmp_path / wd.RESULTS).stat().st_mtime_ns == mtime


def test_progress_bar_is_quiet_without_a_tty(capsys):
  bar = writers.progress_bar(10, 2)
  bar.update(3)
  bar.close()
  assert bar.disable and capsys.readouterr().err == ''  # pytest's captured stderr is no TTY


def test_evaluation_is_exact_with_a_short_last_batch_and_compiles_once():
  config = h.tiny_config()
  task = h.reverse_task(n_val=40, n_test=50)
  model = build_model(config, task)
  model.eval()
  graphdef, params, rngs, other = steps.split_model(model)
  cfg = config.eval.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.batch_size = 16  # validation 16 + 16 + 8, test 16 + 16 + 16 + 2
  generate = steps.make_generate(graphdef, task.max_target_len)
  evaluator = evaluation.Evaluator(task, steps.make_eval_step(graphdef, task), generate,
                                   batching.make_mesh(), cfg)
  for split in ('validation', 'test'):
    metrics, _ = evaluator(split, params, rngs, other)
    # The whole split as one batch, by hand.
    full = {k: np.stack([ex[k] for ex in task.splits[split]]) for k in task.splits[split][0]}
    logits = nnx.merge(graphdef, params, rngs, other)(full['source'], full['target_in'])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, full['target_out'])
    pred = np.asarray(generate(params, rngs, other, jnp.asarray(full['source'])))
    np.testing.assert_allclose(metrics['loss'], float(ce.mean()), rtol=1e-5)
    np.testing.assert_allclose(metrics['accuracy'], float(
        (jnp.argmax(logits, -1) == full['target_out']).mean()), rtol=1e-6)
    np.testing.assert_allclose(metrics['seq_accuracy'],
                               float(task.metrics_fn(logits, full)['seq_accuracy']), rtol=1e-6)
    assert metrics['gen_exact_match'] == np.mean(np.all(pred == full['target_out'], 1))
  assert evaluator.eval_step._cache_size() == 1  # pylint: disable=protected-access
  assert evaluator.generate._cache_size() == 1  # pylint: disable=protected-access
