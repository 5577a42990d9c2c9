"""Sweeps (interrupt, re-run), load_run, and analyze on tiny real runs of the date task."""

import concurrent.futures
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from attention_zoo.analysis import load
from attention_zoo.train import build_model, sweep, train_and_evaluate
from attention_zoo.train.steps import split_model
from configs import dates_demo
from attention_zoo.analysis import run as analyze

REPO = pathlib.Path(__file__).resolve().parents[1]


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


def _sweep_config(path, tfds_dir, entries, **train):
  """Writes a config file whose get_sweep returns `entries` over the tiny demo seq2seq."""
  path.write_text(textwrap.dedent(f'''
      from configs import dates_demo
      def get_config(arg=None):
        c = dates_demo.get_config('family=seq2seq,score=dot,size=tiny')
        c.task.tfds_dir = {tfds_dir!r}
        c.train.update(eval_every=0, **{train!r})
        return c
      def get_sweep(arg=None):
        return {entries!r}
  '''))
  return path


def _cache_entries(cache_dir: pathlib.Path) -> set[str]:
  return {p.name for p in cache_dir.iterdir()} if cache_dir.exists() else set()


def test_sweep_interrupted_then_rerun_completes_only_the_rest(tmp_path, tfds_dir, monkeypatch):
  # Every run's programs go to a fresh persistent compilation cache, kept even when fast.
  cache = tmp_path / 'xla_cache'
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(cache))
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  config_file = _sweep_config(tmp_path / 'two_runs.py', tfds_dir, [{'seed': 0}, {'seed': 1}],
                              steps=4, checkpoint_every=2)
  sweep_dir = tmp_path / 'sweep'
  first, second = sweep_dir / 'runs' / 'seed=0', sweep_dir / 'runs' / 'seed=1'
  proc = subprocess.Popen([sys.executable, '-m', 'experiments.sweep', f'--config={config_file}',
                           f'--workdir={sweep_dir}'], cwd=REPO, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    while not (first / 'results.json').exists():
      assert proc.poll() is None and time.time() < deadline, 'the first run did not finish'
      time.sleep(0.2)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the run it started: an interruption
    proc.wait()
  assert not (second / 'results.json').exists()
  stamp = (first / 'results.json').stat().st_mtime_ns
  compiled_by_seed0 = _cache_entries(cache)
  assert compiled_by_seed0
  status = sweep.run_sweep(str(config_file), sweep_dir, log=lambda _: None)
  assert status == {'seed=0': 'skipped', 'seed=1': 'done'}
  # Seed 1 compiles to the same programs as seed 0 (the seed is an argument, not a constant).
  assert _cache_entries(cache) == compiled_by_seed0
  assert (first / 'results.json').stat().st_mtime_ns == stamp  # not run again
  out = subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--config={config_file}',
                        f'--workdir={sweep_dir}', '--report_only'], cwd=REPO, check=True,
                       capture_output=True, text=True)
  assert '1 variants' in out.stdout
  report = json.loads((sweep_dir / 'report.json').read_text())
  assert report['variants'][0]['runs'] == ['seed=0', 'seed=1']
  assert report['failed'] == [] and report['missing'] == []
  assert json.loads((sweep_dir / 'sweep.json').read_text())['runs'][1]['overrides'] == {'seed': 1}


def test_sweep_reports_a_failed_run_and_goes_on(tmp_path, tfds_dir):
  config_file = _sweep_config(tmp_path / 'one_bad.py', tfds_dir,
                              [{'model.hidden': -3, 'seed': 0}, {'seed': 0}], steps=2)
  status = sweep.run_sweep(str(config_file), tmp_path / 's', log=lambda _: None)
  assert status == {'hidden=-3,seed=0': 'failed', 'seed=0': 'done'}
  assert (tmp_path / 's' / 'runs' / 'hidden=-3,seed=0' / 'error.log').read_text().strip()


def _runs(*names):
  return [sweep.Run(n, {'model.score': n[0], 'seed': int(n[1])}) for n in names]


def test_scheduler_first_runs_first_then_longest_variant_first():
  a0, a1, a2, b0, b1, c0, c1 = _runs('a0', 'a1', 'a2', 'b0', 'b1', 'c0', 'c1')
  scheduler = sweep.Scheduler([a0, a1, a2, b0, b1, c0, c1])
  assert [scheduler.next() for _ in range(3)] == [a0, b0, c0]  # one compile per variant
  scheduler.finished(a0, 5.0)
  scheduler.finished(b0, 20.0)  # c0 still running: c1 waits (its program is not cached yet)
  assert scheduler.next() == b1  # b took longest
  assert [scheduler.next() for _ in range(3)] == [a1, a2, c1]
  assert scheduler.next() is None


def test_cpu_lanes_split_the_cpus(monkeypatch):
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3, 4}, raising=False)
  assert sweep.cpu_lanes(2) == [{0, 1}, {2, 3}]
  assert sweep.cpu_lanes(5) == [{0}, {1}, {2}, {3}, {4}]
  assert sweep.cpu_lanes(1) is None and sweep.cpu_lanes(6) is None


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='Linux CPU affinity')
def test_launch_runs_the_child_on_its_cpus_single_threaded():
  cpu = min(os.sched_getaffinity(0))
  code = ('import os, json; '
          'print(json.dumps([sorted(os.sched_getaffinity(0)), os.environ["XLA_FLAGS"]]))')
  with concurrent.futures.ThreadPoolExecutor(1) as pool:  # launch pins the calling thread
    proc = pool.submit(sweep.launch, [sys.executable, '-c', code], {cpu}).result()
  cpus, flags = json.loads(proc.stdout)
  assert cpus == [cpu] and sweep.SINGLE_THREAD_XLA in flags
  assert sweep.run_env(None)['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] == os.environ.get(
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  assert len(os.sched_getaffinity(0)) >= 1 and cpu in os.sched_getaffinity(0)  # test thread free


def test_sweep_rejects_a_typo_before_running(tmp_path):
  config_file = tmp_path / 'typo.py'
  config_file.write_text(textwrap.dedent('''
      from configs import dates_demo
      def get_config(arg=None):
        return dates_demo.get_config('size=tiny')
      def get_sweep(arg=None):
        return [{'model.hiden': 3}]
  '''))
  with pytest.raises(AttributeError, match='hiden'):
    sweep.run_sweep(str(config_file), tmp_path / 's')
  assert not (tmp_path / 's').exists()


def test_demo_config_and_sweep_expand():
  runs = sweep.expand('configs/dates_demo.py')
  assert len(runs) == 24 and len({r.name for r in runs}) == 24
  for run in runs:
    config = sweep.run_config('configs/dates_demo.py', run)
    assert config.task.name == 'dates'
    assert config.model_name == ('transformer' if 'transformer' in run.arg else 'seq2seq')
  variants = {r.arg for r in runs}
  assert 'family=seq2seq,score=none,reverse=true' in variants
  assert sweep.run_config('configs/dates_demo.py', runs[3]).task.reverse_source


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
  logged = json.loads((workdir / 'results.json').read_text())['validation']
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
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(pathlib.Path(workdir) / 'checkpoints') as m:
    return m.restore(m.latest_step(), args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract)))['params']


def test_analyze_writes_alignment_of_target_by_source(runs):
  workdir = runs['seq2seq']
  records = analyze.analyze(str(workdir), examples=2)
  config, _, task = load.load_run(workdir)
  batch = next(iter(task.batches('validation', 2, seed=0, shuffle=False, num_epochs=1)))
  maps = [r for r in records if r['path'] == 'attention_weights']
  assert [r['example'] for r in maps] == [0, 1]
  for r in maps:
    src_len = int(np.sum(np.asarray(batch['source'][r['example']]) != 0))
    target = list(np.asarray(batch['target_out'][r['example']]))
    tgt_len = target.index(2) + 1  # through EOS
    assert r['shape'] == [[tgt_len, src_len]]
    assert pathlib.Path(r['file']).stat().st_size > 2000
  out = workdir / 'analysis'
  assert (out / 'learning_curves.png').exists() and (out / 'summary.txt').exists()


def test_analyze_transformer_every_layer_and_head(runs):
  workdir = runs['transformer']
  records = analyze.analyze(str(workdir), examples=1)
  config, _, task = load.load_run(workdir)
  batch = next(iter(task.batches('validation', 1, seed=0, shuffle=False, num_epochs=1)))
  src_len = int(np.sum(np.asarray(batch['source'][0]) != 0))
  tgt_len = list(np.asarray(batch['target_out'][0])).index(2) + 1
  layers = config.model.num_layers
  by_path = {r['path']: r for r in records}
  for i in range(layers):
    cross = by_path[f'decoder/layers/{i}/cross_attn/attention_weights']
    assert cross['shape'] == [[tgt_len, src_len]] * config.model.num_heads
    enc = by_path[f'encoder/layers/{i}/self_attn/attention_weights']
    assert enc['shape'] == [[src_len, src_len]] * config.model.num_heads
    assert f'decoder/layers/{i}/self_attn/attention_weights' in by_path
