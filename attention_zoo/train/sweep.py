"""Sweeps: a config module's get_sweep(arg) expanded into runs, each run in its own process.

  DIR/sweep.json        {"config": "configs/x.py:arg", "arg", "runs": [{"name", "overrides", "arg"}]}
  DIR/runs/<name>/      one workdir per run (see attention_zoo.train.loop)
  DIR/runs/<name>/error.log   the last lines of a failed run's output

Re-running a sweep skips runs whose results.json exists and resumes the others from their
checkpoints (experiments.main resumes when the config is unchanged).

Order: the first run of every variant starts first, in listing order (its compile fills JAX's
persistent compilation cache, which the variant's other seeds then hit); the rest start longest
variant first, by the wall time of their finished seeds, so that no worker idles at the end.
With N > 1 runs at a time, each worker has its own share of the CPUs (one each on a 2-core
machine, with XLA single-threaded): two runs on two pinned cores trained 15-40% faster than two
runs sharing both cores.

get_sweep(arg) returns one dict of config overrides per run ({'model.score': 'dot', 'seed': 0}).
The special key 'config_arg' replaces the config arg for that run, so that one sweep can compare
variants that differ in more than a few fields (e.g. a seq2seq RNN beside a Transformer):
{'config_arg': 'family=transformer,score=additive', 'seed': 0}.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd

SWEEP = 'sweep.json'
ERROR = 'error.log'


CONFIG_ARG = 'config_arg'
SINGLE_THREAD_XLA = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
DEFAULT_CACHE = pathlib.Path.home() / '.cache' / 'attention_zoo' / 'jax'  # = the Makefile's


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: dict[str, Any]
  arg: str | None = None  # the config arg of this run (the sweep's own arg unless overridden)

  @property
  def variant(self) -> str:
    return variant_name(self.arg, self.overrides)


def variant_name(arg: str | None, overrides: dict[str, Any], sweep_arg: str | None = None) -> str:
  """What a run compares, as the report names it: its config arg (unless it is the sweep's own)
  and its overrides other than the seed, e.g. 'family=seq2seq,score=dot' ('default' if none)."""
  parts = [arg] if arg and arg != sweep_arg else []
  parts += [f'{k.split(".")[-1]}={v}' for k, v in overrides.items() if k != 'seed']
  return ','.join(parts) or 'default'


def load_config_module(spec: str):
  """'configs/x.py[:arg]' -> (module, arg). A missing file is a clear error."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file {path!r} (from {spec!r}) does not exist')
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  for fn in ('get_config', 'get_sweep'):
    if not hasattr(module, fn):
      raise ValueError(f'config file {path} has no {fn}(arg)')
  return module, (arg or None)


def run_name(overrides: dict[str, Any]) -> str:
  """{'model.attention': 'dot', 'seed': 1} -> 'attention=dot,seed=1' (last key part; safe chars)."""
  parts = [f'{key.split(".")[-1]}={value}' for key, value in overrides.items()]
  return re.sub(r'[^A-Za-z0-9_.,=+-]', '_', ','.join(parts)) or 'default'


def _arg_items(arg: str | None) -> dict[str, str]:
  return dict(item.split('=', 1) for item in filter(None, (arg or '').split(',')) if '=' in item)


def expand(spec: str) -> list[Run]:
  """The runs of a sweep; each run's config is built and checked up front (typos fail here)."""
  module, arg = load_config_module(spec)
  runs = []
  for entry in module.get_sweep(arg):
    overrides = {k: v for k, v in entry.items() if k != CONFIG_ARG}
    run_arg = entry.get(CONFIG_ARG, arg)
    config_utils.apply_overrides(module.get_config(run_arg), overrides)  # raises on a typo
    name = run_name({**(_arg_items(run_arg) if CONFIG_ARG in entry else {}), **overrides})
    runs.append(Run(name, overrides, run_arg))
  names = [r.name for r in runs]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f'sweep of {spec} names two runs the same: {dupes}')
  return runs


def _flag_value(value: Any) -> str:
  return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def run_config(spec: str, run: Run):
  """The locked config of one run (its config arg, then its overrides)."""
  module, _ = load_config_module(spec)
  return config_utils.apply_overrides(module.get_config(run.arg), run.overrides)


def command(spec: str, run: Run, run_dir: pathlib.Path) -> list[str]:
  """The experiments.main command line of one run."""
  path = spec.partition(':')[0]
  config = f'{path}:{run.arg}' if run.arg else path
  return ([sys.executable, '-m', 'experiments.main', f'--config={config}', f'--workdir={run_dir}']
          + [f'--config.{k}={_flag_value(v)}' for k, v in run.overrides.items()])


class Scheduler:
  """Which run starts next (thread-safe): each variant's first run, then the longest variants.

  A variant whose first run is still going waits behind everything else: starting its other
  seeds then would compile the same program again instead of reading it from the cache.
  """

  def __init__(self, runs: list[Run]):
    self._pending = list(runs)
    self._started: collections.Counter[str] = collections.Counter()
    self._seconds: dict[str, list[float]] = collections.defaultdict(list)
    self._lock = threading.Lock()

  def _priority(self, index: int, run: Run) -> tuple:
    v = run.variant
    if not self._started[v]:
      return (0, index)
    if not self._seconds[v]:
      return (2, index)
    return (1, -sum(self._seconds[v]) / len(self._seconds[v]), index)

  def next(self) -> Run | None:
    with self._lock:
      if not self._pending:
        return None
      best = min(range(len(self._pending)), key=lambda i: self._priority(i, self._pending[i]))
      run = self._pending.pop(best)
      self._started[run.variant] += 1
      return run

  def finished(self, run: Run, seconds: float):
    with self._lock:
      self._seconds[run.variant].append(seconds)


def cpu_lanes(parallel: int) -> list[set[int]] | None:
  """The CPUs of each of `parallel` workers (disjoint, equal shares), or None: no pinning."""
  if parallel < 2 or not hasattr(os, 'sched_getaffinity'):
    return None
  cpus = sorted(os.sched_getaffinity(0))
  share = len(cpus) // parallel
  if share < 1:
    return None
  return [set(cpus[i * share:(i + 1) * share]) for i in range(parallel)]


def run_env(cpus: set[int] | None) -> dict[str, str]:
  """The environment of a run: a persistent compilation cache shared by the sweep's runs, which
  keeps every program (even the eager ops of a model's initialization: 4-5 s of compiles per
  process on one core, under 1 s from the cache); XLA single-threaded on a one-CPU lane."""
  env = dict(os.environ)
  env.setdefault('JAX_COMPILATION_CACHE_DIR', str(DEFAULT_CACHE))
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  if cpus is not None and len(cpus) == 1:
    env['XLA_FLAGS'] = ' '.join(filter(None, [env.get('XLA_FLAGS'), SINGLE_THREAD_XLA]))
  return env


def share_run_cache() -> None:
  """This process reads and writes the compilation cache of the runs (analysis after a sweep
  then finds the programs of model initialization and evaluation already compiled)."""
  import jax  # pylint: disable=import-outside-toplevel
  env = run_env(None)
  jax.config.update('jax_compilation_cache_dir', env['JAX_COMPILATION_CACHE_DIR'])
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    float(env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))


def launch(cmd: list[str], cpus: set[int] | None) -> subprocess.CompletedProcess:
  """Runs `cmd` on `cpus` (a child inherits the affinity of the thread that starts it)."""
  if cpus is not None:
    os.sched_setaffinity(0, cpus)  # this worker thread, hence its children
  return subprocess.run(cmd, capture_output=True, text=True, env=run_env(cpus))


def run_sweep(spec: str, sweep_dir: str | os.PathLike, *, parallel: int = 1, pin: bool = True,
              log: Callable[[str], None] = print) -> dict[str, str]:
  """Runs every unfinished run of the sweep, `parallel` at a time -> {name: status}.

  status: 'done', 'skipped' (results.json was there) or 'failed'.

  A failed run is reported (its output tail in runs/<name>/error.log) and does not stop the others.
  pin: give each of the `parallel` workers its own CPUs (see cpu_lanes).
  """
  sweep_dir = pathlib.Path(sweep_dir)
  runs = expand(spec)
  (sweep_dir / 'runs').mkdir(parents=True, exist_ok=True)
  wd.write_json(sweep_dir / SWEEP, {'config': spec, 'arg': spec.partition(':')[2] or None,
                                    'runs': [dataclasses.asdict(r) for r in runs]})

  # Build each distinct dataset once, here, so that parallel runs never write one cache together.
  from attention_zoo import data  # pylint: disable=import-outside-toplevel
  todo = [r for r in runs if not (sweep_dir / 'runs' / r.name / wd.RESULTS).exists()]
  tasks = {json.dumps(run_config(spec, r).task.to_dict(), sort_keys=True) for r in todo}
  for task in sorted(tasks):
    data.get_task(json.loads(task))

  def one(run: Run, cpus: set[int] | None) -> str:
    run_dir = sweep_dir / 'runs' / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR).unlink(missing_ok=True)
    proc = launch(command(spec, run, run_dir), cpus)
    if proc.returncode != 0:
      tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-60:])
      (run_dir / ERROR).write_text(tail + '\n')
      return 'failed'
    return 'done'

  status = {r.name: 'skipped' for r in runs if r not in todo}
  for name in status:
    log(f'[{len(status)}/{len(runs)}] {name}: skipped')
  scheduler = Scheduler(todo)
  lock = threading.Lock()

  def worker(cpus: set[int] | None):
    while (run := scheduler.next()) is not None:
      start = time.perf_counter()
      result = one(run, cpus)
      scheduler.finished(run, time.perf_counter() - start)
      with lock:
        status[run.name] = result
        extra = f' (see {sweep_dir / "runs" / run.name / ERROR})' if result == 'failed' else ''
        log(f'[{len(status)}/{len(runs)}] {run.name}: {result}{extra}')

  lanes = (cpu_lanes(parallel) if pin else None) or [None] * max(1, parallel)
  with concurrent.futures.ThreadPoolExecutor(len(lanes)) as pool:
    for future in [pool.submit(worker, cpus) for cpus in lanes]:
      future.result()  # re-raises what stopped a worker
  return {r.name: status[r.name] for r in runs}
