"""Sweeps beyond one process: claims, a SLURM array script, and sweep processes sharing a folder.

The runs are the tiny seq2seq of the date demo (the sweeps of tests/test_sweep.py), made smaller;
the claim tests need no JAX.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from attention_zoo import sweeps
from attention_zoo.sweeps import claims, launchers
from attention_zoo.train import workdir as wd
from tests import fixtures as h

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _sweep_config(path, tfds_dir, entries, **train):
  """A config file: the tiny demo seq2seq with hidden 16; get_sweep gives `entries`."""
  return h.sweep_config_file(path, tfds_dir, entries, batch_size=16, **train,
                             task=dict(num_train=256, num_validation=32, num_test=32),
                             model=dict(embed_dim=8, hidden=16))


def _seeds(n):
  return [{'seed': s} for s in range(n)]


def _alone(values):
  """Runs that differ in a host-side field (how often train rows are logged), so that each is
  its own process even where seeds of one variant would train together (experiments.main
  --seeds)."""
  return [{'train.log_every': v} for v in values]


def _sweep(*flags):
  return [sys.executable, '-m', 'experiments.sweep', *flags]


def _train_steps(run_dir: pathlib.Path) -> list[int]:
  return [r['step'] for r in wd.read_jsonl(run_dir / wd.METRICS) if r['split'] == 'train']


def _steps_trained_last(run_dir: pathlib.Path) -> int:
  """Steps trained by the process that finished the run (results.json times its own steps)."""
  results = wd.read_json(run_dir / wd.RESULTS)
  return round(results['steps_per_s'] * results['train_s'])


# --- claims (no JAX) ---

def test_one_claim_of_many_at_once_then_released(tmp_path):
  got = []
  barrier = threading.Barrier(8)

  def claim():
    barrier.wait()
    got.append(claims.try_claim(tmp_path / 'run'))

  threads = [threading.Thread(target=claim) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  held = [c for c in got if c is not None]
  assert len(held) == 1  # O_EXCL: one creator wins; the owner (this pid) is alive: no takeover
  content = json.loads((tmp_path / 'run' / claims.CLAIM).read_text())
  assert content['pid'] == os.getpid() and content['host'] == socket.gethostname()
  assert content['token'] == held[0].content['token']
  held[0].release()
  assert not (tmp_path / 'run' / claims.CLAIM).exists()
  assert [h['took_over'] for h in claims.history(tmp_path / 'run')] == [None]


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


def test_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
  run_dir = tmp_path / 'run'
  (run_dir / 'checkpoints' / '30').mkdir(parents=True)
  dead = {'host': socket.gethostname(), 'pid': _dead_pid(), 'token': 'dead', 'time': 0}
  (run_dir / claims.CLAIM).write_text(json.dumps(dead))
  with claims.try_claim(run_dir, timeout_s=3600) as claim:  # fresh heartbeat, dead pid
    assert claim.took_over == dead and claim.held()
  assert claims.history(run_dir) == [{**claim.content, 'checkpoint_step': 30, 'took_over': dead}]


def test_claim_of_another_host_is_taken_over_after_the_timeout(tmp_path):
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  other = {'host': 'node-elsewhere', 'pid': 1, 'token': 'other', 'time': 0}
  path = run_dir / claims.CLAIM
  path.write_text(json.dumps(other))
  assert claims.try_claim(run_dir, timeout_s=60) is None  # heartbeat just now
  os.utime(path, (time.time() - 59, time.time() - 59))
  assert claims.try_claim(run_dir, timeout_s=60) is None
  os.utime(path, (time.time() - 61, time.time() - 61))
  claim = claims.try_claim(run_dir, timeout_s=60)
  assert claim is not None and claim.took_over == other
  assert claims.try_claim(run_dir, timeout_s=60) is None  # now ours, and alive
  claim.release()
  assert not path.exists()


def test_an_empty_claim_waits_for_the_timeout(tmp_path):
  path = tmp_path / claims.CLAIM  # its creator died between creating and writing it
  path.write_text('')
  assert claims.acquire(path, timeout_s=60) is None
  os.utime(path, (time.time() - 61, time.time() - 61))
  with claims.acquire(path, timeout_s=60) as claim:
    assert claim.took_over == {}


def test_heartbeat_refreshes_the_claim_and_sees_a_takeover(tmp_path):
  claim = claims.try_claim(tmp_path / 'run', timeout_s=0.4)  # a beat every 0.1 s
  path = tmp_path / 'run' / claims.CLAIM
  old = time.time() - 100
  os.utime(path, (old, old))
  deadline = time.time() + 20
  while path.stat().st_mtime < old + 50:  # the owner's heartbeat touched it
    assert time.time() < deadline, 'no heartbeat'
    time.sleep(0.05)
  path.write_text(json.dumps({**claim.content, 'token': 'someone else'}))  # a takeover
  assert claim.lost.wait(20)
  claim.release()
  assert path.exists()  # the taker's claim stays


def test_a_run_dies_with_its_sweep_process(tmp_path):
  """processes.launch: the child of a sweep process killed with -9 is killed too (so it cannot
  race the process that takes its run over)."""
  pid_file = tmp_path / 'child.pid'
  child_code = (f'import os, time; open({str(pid_file)!r}, "w").write(str(os.getpid())); '
                'time.sleep(600)')
  code = textwrap.dedent(f'''
      import sys, threading
      from attention_zoo.sweeps import processes
      cmd = [sys.executable, '-c', {child_code!r}]
      threading.Thread(target=processes.launch, args=(cmd, None)).start()
  ''')
  parent = subprocess.Popen([sys.executable, '-c', code], cwd=REPO)
  deadline = time.time() + 60
  while not (pid_file.exists() and pid_file.read_text()):
    assert time.time() < deadline and parent.poll() is None
    time.sleep(0.05)
  child = int(pid_file.read_text())
  os.kill(parent.pid, signal.SIGKILL)
  parent.wait()
  while claims._pid_alive(child) and _state(child) != 'Z':
    assert time.time() < deadline, 'the run outlived its sweep process'
    time.sleep(0.05)


def _state(pid: int) -> str:
  try:
    return pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
  except (FileNotFoundError, ProcessLookupError):
    return 'gone'


# --- SLURM ---

def test_slurm_array_script_runs_run_i_as_task_i(tmp_path, tfds_dir):
  config = _sweep_config(tmp_path / 'three.py', tfds_dir, _seeds(3), steps=2,
                         checkpoint_every=2)
  sweep_dir = tmp_path / 'sweep'
  # From another folder, with relative paths: the script holds absolute ones.
  subprocess.run(_sweep(f'--config={config.name}', '--workdir=sweep', '--launcher=slurm',
                        '--partition=gpu', '--time=00:30:00', '--cpus_per_task=2', '--gpus=1'),
                 cwd=tmp_path, check=True, capture_output=True, text=True,
                 env=dict(os.environ, PYTHONPATH=str(REPO)))
  script = sweep_dir / launchers.SBATCH
  subprocess.run(['bash', '-n', str(script)], check=True)
  text = script.read_text()
  directives = [line.split(None, 1)[1] for line in text.splitlines()
                if line.startswith('#SBATCH')]
  assert {'--array=0-2', '--partition=gpu', '--time=00:30:00', '--cpus-per-task=2',
          '--gpus=1'} <= set(directives)
  assert not (sweep_dir / wd.RUNS / 'seed=0').exists()  # written, not run
  names = [r['name'] for r in wd.read_json(sweep_dir / wd.SWEEP)['runs']]
  assert names == ['seed=0', 'seed=1', 'seed=2']

  def task(index, *flags):  # the script as SLURM runs array task `index`
    return subprocess.run(['bash', str(script), *flags], cwd=tmp_path, capture_output=True,
                          text=True, check=True,
                          env=dict(os.environ, SLURM_ARRAY_TASK_ID=str(index))).stdout

  for i, name in enumerate(names):
    assert task(i, '--dry_run').split() == [str(i), name, 'to', 'run']
  task(1)  # trains run 1 alone
  assert [(sweep_dir / wd.RUNS / n / wd.RESULTS).exists() for n in names] == [False, True, False]
  assert task(1, '--dry_run').split() == ['1', 'seed=1', 'finished']
  out = subprocess.run(_sweep(f'--config={config}', f'--workdir={sweep_dir}', '--report_only'),
                       cwd=REPO, capture_output=True, text=True, check=True).stdout
  assert '1 variants' in out
  report = json.loads((sweep_dir / wd.REPORT_JSON).read_text())
  assert report['variants'][0]['runs'] == ['seed=1']
  assert report['missing'] == ['seed=0', 'seed=2']


def test_slurm_submit_calls_sbatch(tmp_path, tfds_dir, monkeypatch):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'sbatch').write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\necho 4242\n')
  (bin_dir / 'sbatch').chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  config = _sweep_config(tmp_path / 'two.py', tfds_dir, _seeds(2), steps=2)
  logged = []
  status = sweeps.LAUNCHERS['slurm'].launch(
      str(config), tmp_path / 'sweep', sweeps.Options(root=REPO, submit=True, log=logged.append))
  assert status == {}
  script = tmp_path / 'sweep' / launchers.SBATCH
  assert (tmp_path / 'args').read_text().split() == ['--parsable', str(script)]
  assert any('job 4242' in line for line in logged)
  assert '#SBATCH --array=0-1' in script.read_text()
  with pytest.raises(ValueError, match='unknown launcher'):
    launchers.get('pbs')


def _slurm_port() -> tuple[int, int]:
  """(job id, port): a free port in the range jax's SLURM detection derives from the job id
  (65535 - 2^12 + 1 + job id mod 2^12)."""
  base = 65535 - 2**12 + 1
  for port in range(base + 97, 65536):
    with socket.socket() as s:
      try:
        s.bind(('localhost', port))
      except OSError:
        continue
    return port - base, port
  raise RuntimeError('no free port for the fake SLURM job')


def test_slurm_array_task_runs_its_run_as_two_processes(tmp_path, tfds_dir):
  """--processes_per_run=2: array task 0 is two SLURM tasks (`srun`, faked here with the
  variables that SLURM sets and jax's cluster detection reads), which train run 0 together as
  one 2-process run: the same per-step losses (rtol 1e-5) as one process with both devices."""
  config = _sweep_config(tmp_path / 'one.py', tfds_dir, _alone([1]), steps=4, checkpoint_every=2)
  job_id, _ = _slurm_port()
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'srun').write_text(textwrap.dedent(f'''\
      #!/bin/bash
      # srun --ntasks=2 on one node: task i with SLURM's variables
      pids=()
      for i in 0 1; do
        SLURM_JOB_ID={job_id} SLURM_STEP_NODELIST=localhost SLURM_NTASKS=2 SLURM_PROCID=$i \\
          SLURM_LOCALID=$i SLURM_STEP_NUM_NODES=1 "$@" > {tmp_path}/task.$i.log 2>&1 &
        pids+=($!)
      done
      rc=0
      for p in "${{pids[@]}}"; do wait $p || rc=1; done
      exit $rc
  '''))
  (bin_dir / 'srun').chmod(0o755)
  sweep_dir = tmp_path / 'two'
  subprocess.run(_sweep(f'--config={config}', f'--workdir={sweep_dir}', '--launcher=slurm',
                        '--processes_per_run=2'), cwd=REPO, check=True, capture_output=True)
  script = sweep_dir / launchers.SBATCH
  subprocess.run(['bash', '-n', str(script)], check=True)
  text = script.read_text()
  assert '#SBATCH --ntasks=2' in text.splitlines()
  command = text.splitlines()[-1].split()
  assert command[0] == 'srun' and '--multihost' in command
  proc = subprocess.run(['bash', str(script)], cwd=tmp_path, capture_output=True, text=True,
                        env=dict(os.environ, SLURM_ARRAY_TASK_ID='0',
                                 PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}'),
                        timeout=600)
  logs = [(tmp_path / f'task.{i}.log').read_text() for i in (0, 1)]
  assert proc.returncode == 0, logs
  one_dir = tmp_path / 'one'
  subprocess.run(_sweep(f'--config={config}', f'--workdir={one_dir}', '--run_index=0'), cwd=REPO,
                 check=True, capture_output=True, timeout=600,
                 env=dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2'))
  two_run, one_run = (d / wd.RUNS / 'log_every=1' for d in (sweep_dir, one_dir))
  r_two, r_one = (wd.read_json(r / wd.RESULTS) for r in (two_run, one_run))
  assert (r_two['devices']['num_processes'], r_one['devices']['num_processes']) == (2, 1)
  assert r_two['devices']['num_devices'] == r_one['devices']['num_devices'] == 2
  losses = [[r['loss'] for r in wd.read_jsonl(d / wd.METRICS) if r['split'] == 'train']
            for d in (two_run, one_run)]
  assert len(losses[0]) == 4
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
  assert len(claims.history(two_run)) == 1  # process 0 alone claimed it


def test_a_multi_process_sweep_runs_one_run(tmp_path, tfds_dir):
  config = _sweep_config(tmp_path / 'two.py', tfds_dir, _seeds(2), steps=2)
  proc = subprocess.run(_sweep(f'--config={config}', f'--workdir={tmp_path / "sweep"}',
                               '--num_processes=2', '--process_id=0'),
                        cwd=REPO, capture_output=True, text=True)
  assert proc.returncode != 0 and 'give --run_index' in proc.stderr


# --- sweep processes sharing one folder ---

def _start(config, sweep_dir, *flags):
  return subprocess.Popen(_sweep(f'--config={config}', f'--workdir={sweep_dir}',
                                 '--seed_map=processes', *flags),  # claims per run
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)


def _kill_groups(procs):
  """What a failed test leaves running: each sweep process and its runs."""
  for proc in procs:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()


def _statuses(output: str) -> dict[str, str]:
  """{run: status} from a sweep's '[k/N] name: status' lines."""
  out = {}
  for line in output.splitlines():
    if line.startswith('[') and '] ' in line and ': ' in line:
      name, _, status = line.split('] ', 1)[1].partition(': ')
      out[name] = status.split()[0]
  return out


def test_two_sweep_processes_run_every_run_once(tmp_path, tfds_dir):
  config = _sweep_config(tmp_path / 'three.py', tfds_dir, _alone([1, 2, 3]), steps=4,
                         checkpoint_every=2)
  sweep_dir = tmp_path / 'sweep'
  procs = [_start(config, sweep_dir), _start(config, sweep_dir)]
  try:
    outputs = [p.communicate(timeout=600)[0] for p in procs]
  finally:
    _kill_groups(procs)
  assert [p.returncode for p in procs] == [0, 0], outputs
  statuses = [_statuses(o) for o in outputs]
  for name in ['log_every=1', 'log_every=2', 'log_every=3']:
    ran = [s.get(name) for s in statuses]
    assert sorted(ran) == ['done', 'elsewhere'], (name, outputs)  # one ran it, the other saw it
    run_dir = sweep_dir / wd.RUNS / name
    assert len(claims.history(run_dir)) == 1  # claimed once
    logged = _train_steps(run_dir)
    assert logged == sorted(set(logged)) and logged[-1] == 4  # no step logged twice
    assert _steps_trained_last(run_dir) == 4  # trained from scratch, once
    assert not (run_dir / claims.CLAIM).exists()  # released
  assert json.loads((sweep_dir / wd.REPORT_JSON).read_text())['missing'] == []


def _kill_mid_run(victim, sweep_dir: pathlib.Path, steps: int) -> pathlib.Path:
  """SIGKILLs the sweep process `victim` (alone: its run dies with it) once a run it holds has
  a checkpoint before the last step -> that run's folder."""
  deadline = time.time() + 600
  while True:
    assert time.time() < deadline and victim.poll() is None, 'the victim never checkpointed'
    for run_dir in (sweep_dir / wd.RUNS).glob('*'):
      found = claims.read(run_dir / claims.CLAIM)
      if found and found[0] and found[0]['pid'] == victim.pid and (
          0 < claims._checkpoint_step(run_dir) < steps):
        os.kill(victim.pid, signal.SIGKILL)
        return run_dir
    time.sleep(0.02)


def test_killed_sweep_process_leaves_the_other_to_finish_and_resume(tmp_path, tfds_dir):
  steps = 400
  config = _sweep_config(tmp_path / 'two.py', tfds_dir, _alone([50, 100]), steps=steps,
                         checkpoint_every=50)
  sweep_dir = tmp_path / 'sweep'
  victim = _start(config, sweep_dir, '--claim_timeout=5')
  other = _start(config, sweep_dir, '--claim_timeout=5')
  try:
    killed_run = _kill_mid_run(victim, sweep_dir, steps)
    first_seen = claims._checkpoint_step(killed_run)
    victim.wait()
    output = other.communicate(timeout=600)[0]
  finally:
    _kill_groups([victim, other])
  assert other.returncode == 0, output
  for name in ('log_every=50', 'log_every=100'):
    assert (sweep_dir / wd.RUNS / name / wd.RESULTS).exists(), output
  first, second = claims.history(killed_run)
  assert first['pid'] == victim.pid and second['pid'] == other.pid
  assert second['took_over']['pid'] == victim.pid
  resumed_from = second['checkpoint_step']
  print(f'killed {killed_run.name} at checkpoint step {first_seen}; resumed from {resumed_from}')
  assert 0 < resumed_from < steps
  assert _steps_trained_last(killed_run) == steps - resumed_from  # resumed, not restarted
  logged = _train_steps(killed_run)
  assert logged == sorted(set(logged)) and logged[-1] == steps  # no step logged twice
  assert f'took over the claim of {socket.gethostname()}:{victim.pid}' in output
