"""A sweep as data: the runs of a config module's get_sweep(arg), their names and configs.

get_sweep(arg) returns one dict of config overrides per run ({'model.score': 'dot', 'seed': 0}).
The special key 'config_arg' replaces the config arg for that run, so that one sweep can compare
variants that differ in more than a few fields (e.g. a seq2seq RNN beside a Transformer):
{'config_arg': 'family=transformer,score=additive', 'seed': 0}.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import socket
from typing import Any

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


def config_spec(spec: str, run: Run) -> str:
  """The --config of `run`'s experiments.main: the sweep's config file with the run's arg."""
  path = spec.partition(':')[0]
  return f'{path}:{run.arg}' if run.arg else path


def write_plan(spec: str, sweep_dir: str | os.PathLike, *, strict: bool = False) -> list[Run]:
  """Writes sweep.json (the sweep's runs, which its report reads) and makes runs/ -> the runs.

  Several sweep processes may start together: sweep.json is rewritten only when it changes, each
  through its own temporary file. strict: raise ValueError when sweep.json lists other runs (an
  array task of a cluster job must run the run its index had at submission).
  """
  sweep_dir = pathlib.Path(sweep_dir)
  runs = expand(spec)
  (sweep_dir / wd.RUNS).mkdir(parents=True, exist_ok=True)
  plan = {'config': spec, 'arg': spec.partition(':')[2] or None,
          'runs': [dataclasses.asdict(r) for r in runs]}
  path = sweep_dir / wd.SWEEP
  old = wd.read_json(path) if path.exists() else None
  # (in the runs' own key order, which names their variants: sorted keys would rename a variant
  # with two overrides; an older sweep.json written sorted is rewritten so)
  text = json.dumps(plan, indent=2) + '\n'
  if old is not None and json.dumps(old, indent=2) + '\n' == text:
    return runs
  if strict and old is not None and old['runs'] != plan['runs']:
    raise ValueError(f'{path} lists other runs than {spec} gives now (was the config edited '
                     'after the sweep was planned?); run it from an unchanged config or '
                     'another --workdir')
  tmp = path.with_name(f'{path.name}.{socket.gethostname()}.{os.getpid()}.tmp')
  tmp.write_text(text)
  tmp.replace(path)
  return runs


def select(runs: list[Run], run_index: int | None) -> list[Run]:
  """All runs (None), or run `run_index` of the listing (a cluster array task's index)."""
  if run_index is None:
    return list(runs)
  if not 0 <= run_index < len(runs):
    raise ValueError(f'run_index {run_index} is out of range: the sweep has {len(runs)} runs '
                     f'(0..{len(runs) - 1})')
  return [runs[run_index]]
