"""One run over several processes (jax.distributed, gloo collectives on CPU), started as a user
would: `python -m experiments.main ... --coordinator_address --num_processes --process_id`.

2 processes x 2 CPU devices train as 1 process x 4 devices do (losses, parameters, evaluations);
a 2-process run stopped after a step and restarted ends where an uninterrupted one does; a
killed process makes the other stop with an error naming it. The runs are a tiny seq2seq model
on tests/fixtures.reverse_task (6 steps, batch 16, checkpoints every 2 steps, evaluations with
generation at steps 0, 3 and 6, eval batches padded). Each process's output goes to
<workdir>.<process>.log; the durations of the runs are printed (pytest -s shows them).
"""

from __future__ import annotations

import os
import pathlib
import re
import resource
import signal
import socket
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from attention_zoo import build
from attention_zoo.train import checkpoints, distributed, steps
from attention_zoo.train import workdir as wd
from tests import fixtures

ROOT = pathlib.Path(__file__).resolve().parents[1]

# experiments.main with the tiny model and task registered; STOP_AFTER_STEP=n simulates a kill
# right after step n (loop.train_and_evaluate's stop_after_step: no later checkpoint).
_WORKER = r'''
import functools, os
from absl import app
from attention_zoo.data import register_task
from attention_zoo.train import loop
from experiments import main
from tests import fixtures
fixtures.register_tiny_models_for_good()
register_task('_tiny_reverse')(fixtures.reverse_task)
if os.environ.get('STOP_AFTER_STEP'):
  loop.train_and_evaluate = functools.partial(loop.train_and_evaluate,
                                              stop_after_step=int(os.environ['STOP_AFTER_STEP']))
app.run(main.main)
'''
_CONFIG = r'''
from tests import fixtures
def get_config(arg=None):
  c = fixtures.tiny_config('_tiny_seq2seq', steps=6, log_every=1, eval_every=3, checkpoint_every=2)
  c.task.name = '_tiny_reverse'
  return c
'''
TIMINGS: dict[str, tuple[float, float]] = {}
HEARTBEAT_S = 10  # the kill test's --heartbeat_timeout_s


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(devices: int, cache: pathlib.Path, **extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('SLURM_', 'OMPI_', 'JAX_', 'TPU_'))}  # no cluster to detect
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             PYTHONPATH=str(ROOT), JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', **extra)
  return env


def _start(base: pathlib.Path, workdir: pathlib.Path, processes: int, devices: int, *flags: str,
           **env: str) -> list[subprocess.Popen]:
  """`processes` processes of experiments.main (the _WORKER), `devices` CPU devices each."""
  config = base / 'tiny_config.py'
  config.write_text(_CONFIG)
  port = _free_port()
  procs = []
  for i in range(processes):
    cmd = [sys.executable, '-u', '-c', _WORKER, f'--config={config}', f'--workdir={workdir}',
           *flags]
    if processes > 1:
      cmd += [f'--coordinator_address=localhost:{port}', f'--num_processes={processes}',
              f'--process_id={i}']
    log = open(f'{workdir}.{i}.log', 'w')  # pylint: disable=consider-using-with
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(devices, base / 'jax_cache', **env),
                                  stdout=log, stderr=subprocess.STDOUT))
    log.close()
  return procs


def _log(workdir: pathlib.Path, i: int, tail: int = 3000) -> str:
  return pathlib.Path(f'{workdir}.{i}.log').read_text()[-tail:]


def _cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the children waited for
  return usage.ru_utime + usage.ru_stime


def _run(base: pathlib.Path, name: str, processes: int, devices: int, label: str = '',
         **env: str) -> pathlib.Path:
  """Runs to the end (every process exits 0) -> the workdir; its wall and CPU seconds (all its
  processes) in TIMINGS."""
  workdir = base / name
  t0, cpu0 = time.perf_counter(), _cpu_s()
  procs = _start(base, workdir, processes, devices, **env)
  try:
    codes = [p.wait(timeout=900) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  TIMINGS[f'{name}{label}: {processes} x {devices}, wall / CPU s'] = (
      round(time.perf_counter() - t0, 1), round(_cpu_s() - cpu0, 1))
  for i, code in enumerate(codes):
    assert code == 0, f'process {i} of {name} exited {code}:\n{_log(workdir, i)}'
  return workdir


def _losses(workdir: pathlib.Path) -> list[float]:
  rows = wd.read_jsonl(workdir / wd.METRICS)
  return [r['loss'] for r in rows if r['split'] == 'train']


def _params(workdir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
  """{leaf path: value} of checkpoint `step`'s params, restored in this (1-device) process."""
  config = ml_collections.ConfigDict(wd.read_json(workdir / wd.CONFIG))
  with fixtures.tiny_models_registered():
    model = build.build_model(config, fixtures.reverse_task())
  _, params, _, _ = steps.split_model(model)
  params, _ = checkpoints.load_params(workdir / wd.CHECKPOINTS, params, step=step)
  import jax  # pylint: disable=import-outside-toplevel
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """The same run as 1 process x 4 devices and as 2 processes x 2 devices."""
  base = tmp_path_factory.mktemp('distributed')
  yield base, _run(base, 'one', 1, 4), _run(base, 'two', 2, 2)
  print('\nmulti-process runs:', TIMINGS)


def test_two_processes_train_as_one_with_all_devices(runs):
  _, one, two = runs
  loss_one, loss_two = _losses(one), _losses(two)
  assert len(loss_one) == 6
  np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)
  p_one, p_two = _params(one, 6), _params(two, 6)
  assert sorted(p_one) == sorted(p_two)
  for path, value in p_one.items():
    np.testing.assert_allclose(p_two[path], value, atol=1e-6, err_msg=path)
  r_one, r_two = wd.read_json(one / wd.RESULTS), wd.read_json(two / wd.RESULTS)
  assert (r_one['devices']['num_processes'], r_two['devices']['num_processes']) == (1, 2)
  assert r_one['devices']['num_devices'] == r_two['devices']['num_devices'] == 4
  for split in ('validation', 'test'):  # 40 and 50 examples: eval batches of 32, the last padded
    for key, value in r_one[split].items():
      np.testing.assert_allclose(r_two[split][key], value, rtol=1e-5, err_msg=f'{split} {key}')
  # Process 0 alone writes: one row per (step, split), the same samples, one TensorBoard file.
  rows = [(r['step'], r['split']) for r in wd.read_jsonl(two / wd.METRICS)]
  assert rows == [(r['step'], r['split']) for r in wd.read_jsonl(one / wd.METRICS)]
  assert len(rows) == len(set(rows)) == 10
  assert wd.read_jsonl(two / wd.SAMPLES) == wd.read_jsonl(one / wd.SAMPLES)
  assert len(list(two.glob('events.out.tfevents*'))) == 1
  assert sorted(checkpoints.saved_steps(two / wd.CHECKPOINTS)) == [2, 4, 6]


def test_resumed_two_process_run_equals_uninterrupted(runs):
  base, _, two = runs
  stopped = _run(base, 'resumed', 2, 2, ' (stopped after step 5)', STOP_AFTER_STEP='5')
  assert checkpoints.saved_steps(stopped / wd.CHECKPOINTS) == [2, 4]  # no save of step 5
  assert not (stopped / wd.RESULTS).exists()
  _run(base, 'resumed', 2, 2, ' (restarted)')
  assert 'from step 4' in _log(stopped, 0, 10**7)  # the log of the second start
  np.testing.assert_allclose(_losses(stopped), _losses(two), rtol=1e-5)
  p_two, p_resumed = _params(two, 6), _params(stopped, 6)
  for path, value in p_two.items():
    np.testing.assert_allclose(p_resumed[path], value, atol=1e-6, err_msg=path)
  assert wd.read_json(stopped / wd.RESULTS)['test'] == pytest.approx(
      wd.read_json(two / wd.RESULTS)['test'], rel=1e-5)


def test_killed_process_stops_the_other(tmp_path):
  workdir = tmp_path / 'killed'
  procs = _start(tmp_path, workdir, 2, 2, f'--heartbeat_timeout_s={HEARTBEAT_S}',
                 '--config.train.steps=100000', '--config.train.eval_every=0',
                 '--config.train.checkpoint_every=100000')
  try:
    deadline = time.monotonic() + 600
    while not ((workdir / wd.METRICS).exists() and _losses(workdir)):  # until training runs
      assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
          _log(workdir, 0) + _log(workdir, 1)
      time.sleep(0.5)
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    code = procs[0].wait(timeout=90)
    elapsed = time.monotonic() - t0
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  print(f'\nprocess 0 exited {code} {elapsed:.1f} s after process 1 was killed')
  assert code != 0 and elapsed < 60
  log = _log(workdir, 0, 20_000)
  # jax's coordination service names the lost process: "... unhealthy (stopped sending
  # heartbeats):\n1\n".
  assert re.search(r'tasks are unhealthy \(stopped sending heartbeats\):\s*1\s', log), log


def test_settings_come_from_flags_then_environment(monkeypatch):
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'host0:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.delenv('JAX_PROCESS_ID', raising=False)
  s = distributed.from_environment(distributed.Settings(num_processes=2))
  assert (s.coordinator_address, s.num_processes, s.process_id) == ('host0:1234', 2, None)
  assert distributed.Settings(process_id=1, heartbeat_timeout_s=5).flags() == [
      '--process_id=1', '--heartbeat_timeout_s=5']
  assert distributed.Settings(heartbeat_timeout_s=5).flags() == []
  monkeypatch.setenv('JAX_PROCESS_ID', 'one')
  with pytest.raises(ValueError, match=r'\$JAX_PROCESS_ID=.one. is not an integer'):
    distributed.from_environment(distributed.Settings())


def test_multihost_outside_a_cluster_names_the_flags(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.main', '--config=configs/sequence_seq2seq.py:size=tiny',
       f'--workdir={tmp_path / "run"}', '--multihost'],
      cwd=ROOT, env=_env(1, tmp_path / 'jax_cache'), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert ('should be defined. Outside a cluster that jax detects (SLURM, Open MPI, Cloud TPU), '
          'give --coordinator_address (or $JAX_COORDINATOR_ADDRESS), --num_processes (or '
          '$JAX_NUM_PROCESSES), --process_id (or $JAX_PROCESS_ID)') in proc.stderr, proc.stderr
  assert not (tmp_path / 'run').exists()


class _Terminal:
  """A stderr that says it is a terminal, where a progress bar shows by default."""

  def __init__(self):
    self.text = []

  def isatty(self):
    return True

  def write(self, s):
    self.text.append(s)

  def flush(self):
    pass


def test_only_process_0_draws_the_progress_bar(monkeypatch):
  from attention_zoo.train import writers  # pylint: disable=import-outside-toplevel
  text = {}
  for show in (True, False):
    terminal = _Terminal()
    monkeypatch.setattr(sys, 'stderr', terminal)
    bar = writers.progress_bar(10, 0, show=show)
    bar.update(5)
    bar.close()
    text[show] = ''.join(terminal.text)
  assert '5/10' in text[True]
  assert not text[False]
