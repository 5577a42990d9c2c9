"""The files of one run's workdir (see DESIGN.md) and the rule for resuming in it."""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

from attention_zoo.train import config_utils

CONFIG = 'config.json'
RESULTS = 'results.json'
METRICS = 'metrics.jsonl'
SAMPLES = 'samples.jsonl'
CHECKPOINTS = 'checkpoints'


class ConfigMismatchError(ValueError):
  """A workdir holds a checkpoint of a run whose config differs from the new one."""


def clear(workdir: pathlib.Path) -> None:
  """Removes what a previous run wrote (explicit fresh start)."""
  shutil.rmtree(workdir / CHECKPOINTS, ignore_errors=True)
  for name in (CONFIG, RESULTS, METRICS, SAMPLES):
    (workdir / name).unlink(missing_ok=True)
  for events in workdir.glob('events.out.tfevents*'):
    events.unlink()


def has_checkpoint(workdir: pathlib.Path) -> bool:
  ckpt = workdir / CHECKPOINTS
  return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())


def check_resume(workdir: pathlib.Path, config_dict: dict[str, Any]) -> None:
  """Raises ConfigMismatchError, naming the differing keys, unless config.json == `config_dict`."""
  path = workdir / CONFIG
  if not path.exists():
    raise ConfigMismatchError(f'{workdir} has checkpoints but no {CONFIG}; pass fresh=True '
                              '(--fresh) to start over')
  saved = json.loads(path.read_text())
  diff = config_utils.differing_keys(saved, config_dict)
  if diff:
    fs, fn = config_utils.flatten(saved), config_utils.flatten(config_dict)
    detail = ', '.join(f'{k}: {fs.get(k, "<missing>")!r} -> {fn.get(k, "<missing>")!r}'
                       for k in diff)
    raise ConfigMismatchError(
        f'{workdir} holds a checkpoint of a different config; differing keys: {detail}. '
        'Use the same config to resume, another workdir, or fresh=True (--fresh) to start over.')


def write_json(path: pathlib.Path, data: Any) -> None:
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + '\n')
  tmp.replace(path)
