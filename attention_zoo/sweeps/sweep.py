"""The runs of a sweep and run_sweep, which trains the unfinished ones in child processes.

get_sweep(arg) returns one dict of config overrides per run ({'model.score': 'dot', 'seed': 0}).
The special key 'config_arg' replaces the config arg for that run, so that one sweep can compare
variants that differ in more than a few fields (e.g. a seq2seq RNN beside a Transformer):
{'config_arg': 'family=transformer,score=additive', 'seed': 0}.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import threading
import time
from typing import Any, Callable

from attention_zoo.sweeps import processes
from attention_zoo.sweeps.schedule import Scheduler
from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd

CONFIG_ARG = 'config_arg'


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
  """{'model.score': 'dot', 'seed': 1} -> 'score=dot,seed=1' (last key part; safe chars)."""
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


def run_config(spec: str, run: Run):
  """The locked config of one run (its config arg, then its overrides)."""
  module, _ = load_config_module(spec)
  return config_utils.apply_overrides(module.get_config(run.arg), run.overrides)


def write_plan(spec: str, sweep_dir: str | os.PathLike) -> list[Run]:
  """Writes sweep.json (the sweep's runs, which its report reads) and makes runs/ -> the runs."""
  sweep_dir = pathlib.Path(sweep_dir)
  runs = expand(spec)
  (sweep_dir / wd.RUNS).mkdir(parents=True, exist_ok=True)
  wd.write_json(sweep_dir / wd.SWEEP, {'config': spec, 'arg': spec.partition(':')[2] or None,
                                       'runs': [dataclasses.asdict(r) for r in runs]})
  return runs


def run_sweep(spec: str, sweep_dir: str | os.PathLike, *, parallel: int = 1, pin: bool = True,
              root: str | os.PathLike | None = None,
              log: Callable[[str], None] = print) -> dict[str, str]:
  """Runs every unfinished run of the sweep, `parallel` at a time -> {name: status}.

  status: 'done', 'skipped' (results.json was there) or 'failed'.

  A failed run is reported (its output tail in runs/<name>/error.log) and does not stop the others.
  pin: give each of the `parallel` workers its own CPUs (see processes.cpu_lanes).
  root: the folder that holds experiments/ and configs/ (the runs are `python -m
    experiments.main`); None: the current directory.
  """
  sweep_dir = pathlib.Path(sweep_dir)
  runs = write_plan(spec, sweep_dir)

  # Build each distinct dataset once, here, so that parallel runs never write one cache together.
  from attention_zoo import data  # pylint: disable=import-outside-toplevel
  todo = [r for r in runs if not (sweep_dir / wd.RUNS / r.name / wd.RESULTS).exists()]
  tasks = {json.dumps(run_config(spec, r).task.to_dict(), sort_keys=True) for r in todo}
  for task in sorted(tasks):
    data.get_task(json.loads(task))

  path = spec.partition(':')[0]

  def one(run: Run, cpus: set[int] | None) -> str:
    run_dir = sweep_dir / wd.RUNS / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / wd.ERROR).unlink(missing_ok=True)
    config = f'{path}:{run.arg}' if run.arg else path
    proc = processes.launch(processes.command(config, run.overrides, run_dir), cpus, root)
    if proc.returncode != 0:
      tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-60:])
      (run_dir / wd.ERROR).write_text(tail + '\n')
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
        extra = f' (see {sweep_dir / wd.RUNS / run.name / wd.ERROR})' if result == 'failed' else ''
        log(f'[{len(status)}/{len(runs)}] {run.name}: {result}{extra}')

  lanes = (processes.cpu_lanes(parallel) if pin else None) or [None] * max(1, parallel)
  with concurrent.futures.ThreadPoolExecutor(len(lanes)) as pool:
    for future in [pool.submit(worker, cpus) for cpus in lanes]:
      future.result()  # re-raises what stopped a worker
  return {r.name: status[r.name] for r in runs}
