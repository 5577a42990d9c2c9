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
  checkpoints/<step>/    orbax items params, opt_state, other (e.g. BatchNorm stats), meta.
  results.json    {"step", "train", "validation", "test" (metric dicts; a missing split is absent),
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
  saved = read_json(path)
  diff = config_utils.differing_keys(saved, config_dict)
  if diff:
    fs, fn = config_utils.flatten(saved), config_utils.flatten(config_dict)
    detail = ', '.join(f'{k}: {fs.get(k, "<missing>")!r} -> {fn.get(k, "<missing>")!r}'
                       for k in diff)
    raise ConfigMismatchError(
        f'{workdir} holds a checkpoint of a different config; differing keys: {detail}. '
        'Use the same config to resume, another workdir, or fresh=True (--fresh) to start over.')


def write_json(path: pathlib.Path, data: Any) -> None:
  """Writes `data` as JSON atomically (a reader never sees half a file)."""
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + '\n')
  tmp.replace(path)


def read_json(path: str | pathlib.Path) -> Any:
  return json.loads(pathlib.Path(path).read_text())


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
  """The rows of a JSONL file ([] when it does not exist)."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
