"""The files of a run's workdir and of a sweep's folder, and the rule for resuming in a workdir.

A run's workdir (keys are stable: the sweep and report tooling reads them):
  config.json     the resolved config.
  metrics.jsonl   one JSON row per log / evaluation: {"step", "split", ...metrics}
                  split "train": loss, accuracy, grad_norm, lr, the task's metrics_fn keys
                    (means over the steps since the previous row), steps_per_s;
                  split "validation" / "test": loss, accuracy, task metrics, and for seq2seq
                    gen_<key> of task.generation_metrics_fn (e.g. gen_exact_match).
  samples.jsonl   decoded samples per evaluation:
                  {"step", "split", "source", "target", "prediction"}.
  events.out.tfevents.*  TensorBoard scalars "<split>/<metric>", text "<split>/samples".
  checkpoints/<step>/    orbax items params, opt_state, other (e.g. BatchNorm stats), meta (step,
                         leaf fingerprints); <step>.corrupt/: a damaged step set aside when the
                         run resumed from an older one (see checkpoints.py).
  results.json    {"step", "train", "validation", "test" (metric dicts; a missing split is absent;
                   any other split of the task, e.g. bAbI joint training's "test_task1".."20"),
                   "num_params", "compile_s", "train_s", "steps_per_s", "examples_per_s",
                   "tokens_per_s" (non-PAD input tokens/s; null for non-token inputs),
                   "peak_device_memory_bytes" (null on CPU), "peak_host_memory_bytes",
                   "devices": {...}, "versions": {"python", "jax", "flax", ...}}
                  Timings cover the steps of the latest run only (a resumed run times its own).
  analysis[_step<N>]/    what analyze_run draws (attention maps, learning curves, summary.txt).

A sweep's folder (attention_zoo.sweeps):
  sweep.json      {"config": "configs/x.py:arg", "arg", "runs": [{"name", "overrides", "arg"}]}
  runs/<name>/    one run's workdir; error.log there: the last lines of a failed run's output.
  report.json, report.md, plots/   the comparison over seeds (attention_zoo.analysis.report).
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

from absl import logging

from attention_zoo.train import config_utils

CONFIG = 'config.json'
RESULTS = 'results.json'
METRICS = 'metrics.jsonl'
SAMPLES = 'samples.jsonl'
CHECKPOINTS = 'checkpoints'
ANALYSIS = 'analysis'
SWEEP = 'sweep.json'
RUNS = 'runs'
ERROR = 'error.log'
REPORT_JSON = 'report.json'
REPORT_MD = 'report.md'
PLOTS = 'plots'


class ConfigMismatchError(ValueError):
  """A workdir holds a checkpoint of a run whose config differs from the new one."""


def prepare(workdir: pathlib.Path, config_dict: dict[str, Any], *, fresh: bool,
            is_main: bool) -> None:
  """Makes `workdir` ready for a run of `config_dict`: created; cleared if `fresh` or if it holds
  no checkpoint (leftovers of a run that never checkpointed); config.json written.

  Raises ConfigMismatchError when it holds a checkpoint of another config (and not `fresh`).
  Only the main process (`is_main`) writes or deletes.
  """
  workdir.mkdir(parents=True, exist_ok=True)
  if fresh and is_main:
    clear(workdir)
  if has_checkpoint(workdir):
    check_resume(workdir, config_dict)
  elif is_main:
    clear(workdir)
  if is_main:
    write_json(workdir / CONFIG, config_dict)


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
  detail = config_changes(read_json(path), config_dict)
  if detail:
    raise ConfigMismatchError(
        f'{workdir} holds a checkpoint of a different config; differing keys: {detail}. '
        'Use the same config to resume, another workdir, or fresh=True (--fresh) to start over.')


def config_changes(saved: dict[str, Any], config_dict: dict[str, Any]) -> str:
  """'key: old -> new, ...' over the keys where `config_dict` differs from `saved` ('' if none)."""
  fs, fn = config_utils.flatten(saved), config_utils.flatten(config_dict)
  return ', '.join(f'{k}: {fs.get(k, "<missing>")!r} -> {fn.get(k, "<missing>")!r}'
                   for k in config_utils.differing_keys(saved, config_dict))


def write_json(path: pathlib.Path, data: Any) -> None:
  """Writes `data` as JSON atomically (a reader never sees half a file)."""
  write_text(path, json.dumps(data, indent=2, sort_keys=True) + '\n')


def write_text(path: pathlib.Path, text: str) -> None:
  """Writes `text` atomically: to <path>.tmp, then renamed over `path` (a process killed midway
  leaves the old file whole)."""
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(text)
  tmp.replace(path)


def read_json(path: str | pathlib.Path) -> Any:
  return json.loads(pathlib.Path(path).read_text())


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
  """The rows of a JSONL file ([] when it does not exist). A last line cut short (no line break,
  not JSON: a process killed while appending it) is dropped with a warning; any other line that
  is not JSON raises ValueError naming file:line."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  text = path.read_text()
  lines = text.split('\n')  # the last item: '' when the file ends with a line break
  rows = []
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if lineno == len(lines):  # no line break after it: cut short
        logging.warning('%s:%d: dropped a last line cut short (%s)', path, lineno, e)
        continue
      raise ValueError(f'{path}:{lineno}: not a JSON row ({e})') from None
  return rows


def logged(workdir: pathlib.Path, step: int, split: str) -> dict[str, Any]:
  """The metrics of the row (step, split) of metrics.jsonl ({} when there is none)."""
  rows = [r for r in read_jsonl(workdir / METRICS) if (r['step'], r['split']) == (step, split)]
  return {k: v for k, v in rows[-1].items() if k not in ('step', 'split')} if rows else {}
