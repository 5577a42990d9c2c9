"""load_run and analyze_run on tiny trained runs of the date task."""

import json
import logging
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from attention_zoo.analysis import analyze_run, load
from attention_zoo.build import build_model
from attention_zoo.specials import EOS
from attention_zoo.train import checkpoints
from attention_zoo.train import workdir as wd
from attention_zoo.train.loop import train_and_evaluate
from attention_zoo.train.steps import split_model
from configs import dates_demo


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _tiny(arg, tfds_dir):
  c = dates_demo.get_config(f'{arg},size=tiny')
  c.task.tfds_dir = tfds_dir
  return c


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tfds_dir):
  """Two tiny trained runs: seq2seq + additive attention, and a Transformer."""
  out = {}
  for name, arg in (('seq2seq', 'family=seq2seq,score=additive'),
                    ('transformer', 'family=transformer,score=scaled_dot')):
    workdir = tmp_path_factory.mktemp(name)
    train_and_evaluate(_tiny(arg, tfds_dir), workdir)
    out[name] = workdir
  return out


def test_load_run_restores_final_params_and_reproduces_validation(runs):
  workdir = runs['seq2seq']
  config, model, task = load.load_run(workdir)
  loaded = jax.tree.leaves(nnx.state(model, nnx.Param))
  init = split_model(build_model(config, task))[1]
  # the final checkpoint's params, read back with orbax directly
  for a, b in zip(loaded, jax.tree.leaves(_restore_params(workdir, init)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not all(np.array_equal(a, b) for a, b in zip(loaded, jax.tree.leaves(init)))  # trained
  # the loaded model reproduces the logged validation loss (computed here independently)
  logged = json.loads((workdir / wd.RESULTS).read_text())['validation']
  total, count = 0.0, 0.0
  for batch in task.batches('validation', 64, seed=0, shuffle=False, num_epochs=1,
                            drop_remainder=False):
    logits = model(*task.model_inputs(batch))
    target = np.asarray(batch['target_out'])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, target)
    total += float(np.sum(np.asarray(ce) * (target != 0)))
    count += float(np.sum(target != 0))
  assert total / count == pytest.approx(logged['loss'], rel=1e-4)


def _restore_params(workdir, abstract):
  with ocp.CheckpointManager(pathlib.Path(workdir) / wd.CHECKPOINTS) as m:
    return m.restore(m.latest_step(), args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract)))['params']


def test_analyze_writes_alignment_of_target_by_source(runs):
  workdir = runs['seq2seq']
  records = analyze_run(workdir, examples=2)
  config, _, task = load.load_run(workdir)
  batch = next(iter(task.batches('validation', 2, seed=0, shuffle=False, num_epochs=1)))
  maps = [r for r in records if r['path'] == 'attention_weights']
  assert [r['example'] for r in maps] == [0, 1]
  for r in maps:
    src_len = int(np.sum(np.asarray(batch['source'][r['example']]) != 0))
    target = list(np.asarray(batch['target_out'][r['example']]))
    tgt_len = target.index(EOS) + 1  # through EOS
    assert r['shape'] == [[tgt_len, src_len]]
    assert pathlib.Path(r['file']).stat().st_size > 2000
  out = workdir / wd.ANALYSIS
  assert (out / 'learning_curves.png').exists() and (out / 'summary.txt').exists()


def test_analyze_transformer_every_layer_and_head(runs):
  workdir = runs['transformer']
  records = analyze_run(workdir, examples=1)
  config, _, task = load.load_run(workdir)
  batch = next(iter(task.batches('validation', 1, seed=0, shuffle=False, num_epochs=1)))
  src_len = int(np.sum(np.asarray(batch['source'][0]) != 0))
  tgt_len = list(np.asarray(batch['target_out'][0])).index(EOS) + 1
  layers = config.model.num_layers
  by_path = {r['path']: r for r in records}
  for i in range(layers):
    cross = by_path[f'decoder/layers/{i}/cross_attn/attention_weights']
    assert cross['shape'] == [[tgt_len, src_len]] * config.model.num_heads
    enc = by_path[f'encoder/layers/{i}/self_attn/attention_weights']
    assert enc['shape'] == [[src_len, src_len]] * config.model.num_heads
    assert f'decoder/layers/{i}/self_attn/attention_weights' in by_path


def test_analysis_imports_no_training_loop():
  code = 'import sys, attention_zoo.analysis; print(" ".join(sys.modules))'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  modules = out.stdout.split()
  assert 'attention_zoo.build' in modules and 'attention_zoo.train.checkpoints' in modules
  assert 'attention_zoo.train.loop' not in modules and 'attention_zoo.train.optim' not in modules


def _damage(step_dir: pathlib.Path) -> None:
  """Cuts the params' metadata JSON in half (orbax: a bare JSONDecodeError on reading)."""
  path = step_dir / 'params' / '_METADATA'
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def test_analyze_falls_back_to_the_newest_intact_checkpoint_or_names_the_corrupt(
    runs, tmp_path, caplog):
  workdir = tmp_path / 'run'
  shutil.copytree(runs['seq2seq'], workdir, ignore=shutil.ignore_patterns(wd.ANALYSIS))
  ckpt = workdir / wd.CHECKPOINTS
  *older, newest = wd.checkpoint_steps(workdir)
  assert older, 'the run keeps two checkpoints'
  _damage(ckpt / str(newest))
  with caplog.at_level(logging.WARNING):
    _, model, _ = load.load_run(workdir)
  assert f'checkpoint step {newest} ({ckpt / str(newest)}) does not read back' in caplog.text
  assert f'loaded checkpoint step {older[-1]}' in caplog.text
  _, expected, _ = load.load_run(workdir, step=older[-1])
  for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)),
                  jax.tree.leaves(nnx.state(expected, nnx.Param)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert analyze_run(workdir, examples=1)  # the analysis runs on that one
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=f'checkpoint step {newest} .* does not read back'):
    load.load_run(workdir, step=newest)  # asked for by number: named, no fallback
  for step in older:
    _damage(ckpt / str(step))
  out = subprocess.run([sys.executable, '-m', 'experiments.analyze', f'--workdir={workdir}'],
                       cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True,
                       text=True, timeout=300)
  assert out.returncode != 0
  assert f'analyze: no checkpoint in {ckpt} reads back' in out.stderr
  for step in older + [newest]:
    assert f'step {step} ({ckpt / str(step)}): JSONDecodeError' in out.stderr
  assert 'Traceback' not in out.stderr
  assert wd.checkpoint_steps(workdir) == older + [newest]  # nothing moved aside
