"""Sweeps: a config module's get_sweep(arg) expanded into runs, each run in its own process.

  DIR/sweep.json        {"config": "configs/x.py:arg", "runs": [{"name", "overrides"}, ...]}
  DIR/runs/<name>/      one workdir per run (see attention_zoo.train.loop)
  DIR/runs/<name>/error.log   the last lines of a failed run's output

Re-running a sweep skips runs whose results.json exists and resumes the others from their
checkpoints (experiments.main resumes when the config is unchanged).
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


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: dict[str, Any]


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


def expand(spec: str) -> list[Run]:
  """The runs of a sweep; each override set is checked against the locked config up front."""
  module, arg = load_config_module(spec)
  config = module.get_config(arg)
  runs = []
  for overrides in module.get_sweep(arg):
    config_utils.apply_overrides(config, overrides)  # raises on a typo'd key, before any run
    runs.append(Run(run_name(overrides), dict(overrides)))
  names = [r.name for r in runs]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f'sweep of {spec} names two runs the same: {dupes}')
  return runs


def _flag_value(value: Any) -> str:
  return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def command(spec: str, run: Run, run_dir: pathlib.Path) -> list[str]:
  """The experiments.main command line of one run."""
  return ([sys.executable, '-m', 'experiments.main', f'--config={spec}', f'--workdir={run_dir}']
          + [f'--config.{k}={_flag_value(v)}' for k, v in run.overrides.items()])


def run_sweep(spec: str, sweep_dir: str | os.PathLike, *, parallel: int = 1,
              log: Callable[[str], None] = print) -> dict[str, str]:
  """Runs every unfinished run of the sweep, `parallel` at a time -> {name: 'done'|'skipped'|'failed'}.

  A failed run is reported (its output tail in runs/<name>/error.log) and does not stop the others.
  """
  sweep_dir = pathlib.Path(sweep_dir)
  runs = expand(spec)
  (sweep_dir / 'runs').mkdir(parents=True, exist_ok=True)
  wd.write_json(sweep_dir / SWEEP, {'config': spec, 'runs': [dataclasses.asdict(r) for r in runs]})

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
