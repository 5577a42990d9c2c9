"""Sweeps on tiny runs of the date task: interrupt and re-run, failures, order, CPU pinning."""

import concurrent.futures
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from attention_zoo import sweeps
from attention_zoo.sweeps import plan
from attention_zoo.train import workdir as wd
from tests import fixtures as h

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _sweep_config(path, tfds_dir, entries, **train):
  """Writes a config file whose get_sweep returns `entries` over the tiny demo seq2seq."""
  return h.sweep_config_file(path, tfds_dir, entries, **train)


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
  first, second = sweep_dir / wd.RUNS / 'seed=0', sweep_dir / wd.RUNS / 'seed=1'
  proc = subprocess.Popen([sys.executable, '-m', 'experiments.sweep', f'--config={config_file}',
                           f'--workdir={sweep_dir}', '--seed_map=processes'], cwd=REPO,
                          start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    while not (first / wd.RESULTS).exists():
      assert proc.poll() is None and time.time() < deadline, 'the first run did not finish'
      time.sleep(0.2)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the run it started: an interruption
    proc.wait()
  assert not (second / wd.RESULTS).exists()
  stamp = (first / wd.RESULTS).stat().st_mtime_ns
  compiled_by_seed0 = _cache_entries(cache)
  assert compiled_by_seed0
  status = sweeps.run_sweep(str(config_file), sweep_dir, root=REPO, log=lambda _: None)
  assert status == {'seed=0': 'skipped', 'seed=1': 'done'}
  # Seed 1 compiles to the same programs as seed 0 (the seed is an argument, not a constant).
  assert _cache_entries(cache) == compiled_by_seed0
  assert (first / wd.RESULTS).stat().st_mtime_ns == stamp  # not run again
  out = subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--config={config_file}',
                        f'--workdir={sweep_dir}', '--report_only'], cwd=REPO, check=True,
                       capture_output=True, text=True)
  assert '1 variants' in out.stdout
  report = json.loads((sweep_dir / wd.REPORT_JSON).read_text())
  assert report['variants'][0]['runs'] == ['seed=0', 'seed=1']
  assert report['failed'] == [] and report['missing'] == []
  assert json.loads((sweep_dir / wd.SWEEP).read_text())['runs'][1]['overrides'] == {'seed': 1}
  # The config changed since: the finished runs are not the new config's, and nothing is skipped.
  _sweep_config(config_file, tfds_dir, [{'seed': 0}, {'seed': 1}], steps=5, checkpoint_every=2)
  with pytest.raises(wd.ConfigMismatchError, match=r'seed=0 finished with another config.*'
                     r'train\.steps: 4 -> 5'):
    sweeps.run_sweep(str(config_file), sweep_dir, root=REPO, log=lambda _: None)
  assert (first / wd.RESULTS).stat().st_mtime_ns == stamp


def test_sweep_reports_a_failed_run_and_goes_on(tmp_path, tfds_dir, monkeypatch):
  config_file = _sweep_config(tmp_path / 'one_bad.py', tfds_dir,
                              [{'model.hidden': -3, 'seed': 0}, {'seed': 0}], steps=2)
  monkeypatch.chdir(tmp_path)  # the runs find experiments/ and configs/ through `root`
  status = sweeps.run_sweep(str(config_file), tmp_path / 's', root=REPO, log=lambda _: None)
  assert status == {'hidden=-3,seed=0': 'failed', 'seed=0': 'done'}
  assert (tmp_path / 's' / wd.RUNS / 'hidden=-3,seed=0' / wd.ERROR).read_text().strip()


def _runs(*names):
  return [sweeps.Run(n, {'model.score': n[0], 'seed': int(n[1])}) for n in names]


def test_scheduler_first_runs_first_then_longest_variant_first():
  a0, a1, a2, b0, b1, c0, c1 = _runs('a0', 'a1', 'a2', 'b0', 'b1', 'c0', 'c1')
  scheduler = sweeps.Scheduler([a0, a1, a2, b0, b1, c0, c1])
  assert [scheduler.next() for _ in range(3)] == [a0, b0, c0]  # one compile per variant
  scheduler.finished(a0, 5.0)
  scheduler.finished(b0, 20.0)  # c0 still running: c1 waits (its program is not cached yet)
  assert scheduler.next() == b1  # b took longest
  assert [scheduler.next() for _ in range(3)] == [a1, a2, c1]
  assert scheduler.next() is None


def test_cpu_lanes_split_the_cpus(monkeypatch):
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3, 4}, raising=False)
  assert sweeps.cpu_lanes(2) == [{0, 1}, {2, 3}]
  assert sweeps.cpu_lanes(5) == [{0}, {1}, {2}, {3}, {4}]
  assert sweeps.cpu_lanes(1) is None and sweeps.cpu_lanes(6) is None


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity'), reason='Linux CPU affinity')
def test_launch_runs_the_child_on_its_cpus_single_threaded():
  cpu = min(os.sched_getaffinity(0))
  code = ('import os, json; '
          'print(json.dumps([sorted(os.sched_getaffinity(0)), os.environ["XLA_FLAGS"]]))')
  with concurrent.futures.ThreadPoolExecutor(1) as pool:  # launch pins the calling thread
    proc = pool.submit(sweeps.launch, [sys.executable, '-c', code], {cpu}).result()
  cpus, flags = json.loads(proc.stdout)
  assert cpus == [cpu] and sweeps.SINGLE_THREAD_XLA in flags
  assert sweeps.run_env(None)['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] == os.environ.get(
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
    sweeps.run_sweep(str(config_file), tmp_path / 's', root=REPO)
  assert not (tmp_path / 's').exists()


def test_demo_config_and_sweep_expand():
  demo = str(REPO / 'configs' / 'dates_demo.py')
  runs = sweeps.expand(demo)
  assert len(runs) == 24 and len({r.name for r in runs}) == 24
  for run in runs:
    config = sweeps.run_config(demo, run)
    assert config.task.name == 'dates'
    assert config.model_name == ('transformer' if 'transformer' in run.arg else 'seq2seq')
  variants = {r.arg for r in runs}
  assert 'family=seq2seq,score=none,reverse=true' in variants
  assert sweeps.run_config(demo, runs[3]).task.reverse_source


def test_sweep_json_keeps_the_override_order_that_names_a_variant(tmp_path):
  # a variant with two overrides is named in their order ('noise=x,empty_slots=y'), by the sweep
  # and by what reads sweep.json back (the report, a card's evidence) alike
  spec = tmp_path / 'cfg.py'
  spec.write_text(textwrap.dedent('''
      import ml_collections
      def get_config(arg=None):
        return ml_collections.ConfigDict({'seed': 0, 'model': {'noise': 'a', 'empty_slots': 'b'}})
      def get_sweep(arg=None):
        return [{'model.noise': 'x', 'model.empty_slots': 'y', 'seed': 0}]
  '''))
  runs = plan.write_plan(str(spec), tmp_path / 's')
  assert runs[0].variant == 'noise=x,empty_slots=y'
  path = tmp_path / 's' / wd.SWEEP
  saved = wd.read_json(path)['runs'][0]
  assert plan.variant_name(saved['arg'], saved['overrides']) == 'noise=x,empty_slots=y'
  wd.write_json(path, wd.read_json(path))  # as an older sweep wrote it: keys sorted
  assert list(wd.read_json(path)['runs'][0]['overrides']) == ['model.empty_slots', 'model.noise',
                                                              'seed']
  plan.write_plan(str(spec), tmp_path / 's')  # rewritten in the runs' order
  saved = wd.read_json(path)['runs'][0]
  assert plan.variant_name(saved['arg'], saved['overrides']) == 'noise=x,empty_slots=y'
