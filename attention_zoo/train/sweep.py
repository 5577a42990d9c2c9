"""Sweeps: a config module's get_sweep(arg) expanded into runs, each run in its own process.

  DIR/sweep.json        {"config": "configs/x.py:arg", "arg", "runs": [{"name", "overrides", "arg"}]}
  DIR/runs/<name>/      one workdir per run (see attention_zoo.train.loop)
  DIR/runs/<name>/error.log   the last lines of a failed run's output

Re-running a sweep skips runs whose results.json exists and resumes the others from their
checkpoints (experiments.main resumes when the config is unchanged).

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
import subprocess
import sys
from typing import Any, Callable

from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd

SWEEP = 'sweep.json'
ERROR = 'error.log'


CONFIG_ARG = 'config_arg'


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: dict[str, Any]
  arg: str | None = None  # the config arg of this run (the sweep's own arg unless overridden)


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


def run_sweep(spec: str, sweep_dir: str | os.PathLike, *, parallel: int = 1,
              log: Callable[[str], None] = print) -> dict[str, str]:
  """Runs every unfinished run of the sweep, `parallel` at a time -> {name: 'done'|'skipped'|'failed'}.

  A failed run is reported (its output tail in runs/<name>/error.log) and does not stop the others.
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

  def one(run: Run) -> str:
    run_dir = sweep_dir / 'runs' / run.name
    if (run_dir / wd.RESULTS).exists():
      return 'skipped'
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR).unlink(missing_ok=True)
    proc = subprocess.run(command(spec, run, run_dir), capture_output=True, text=True)
    if proc.returncode != 0:
      tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-60:])
      (run_dir / ERROR).write_text(tail + '\n')
      return 'failed'
    return 'done'

  status = {}
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    futures = {pool.submit(one, run): run for run in runs}
    for future in concurrent.futures.as_completed(futures):
      run = futures[future]
      status[run.name] = future.result()
      extra = f' (see {sweep_dir / "runs" / run.name / ERROR})' if status[run.name] == 'failed' else ''
      log(f'[{len(status)}/{len(runs)}] {run.name}: {status[run.name]}{extra}')
  return status
