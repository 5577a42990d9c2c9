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
  """A workdir holds results of a run whose config differs from the new one (or of a run whose
  config it cannot tell)."""


def run_files(workdir: pathlib.Path) -> list[pathlib.Path]:
  """What a run left in `workdir` that a new run would delete or overwrite: results.json,
  metrics.jsonl, samples.jsonl, TensorBoard events and every entry of checkpoints/ (steps, steps
  set aside as corrupt, orbax's unfinished saves). config.json alone is not a result."""
  if not workdir.is_dir():
    return []
  found = [workdir / name for name in (RESULTS, METRICS, SAMPLES) if (workdir / name).exists()]
  found += sorted(workdir.glob('events.out.tfevents*'))
  if (workdir / CHECKPOINTS).is_dir():
    found += sorted((workdir / CHECKPOINTS).iterdir())
  return found


def check(workdir: pathlib.Path, config_dict: dict[str, Any], *, fresh: bool) -> None:
  """The resume rule, read-only: ConfigMismatchError, naming the differing keys and the files at
  stake, when `workdir` holds results (run_files) of another config, or results and no
  config.json, checkpoints or not; nothing to refuse with `fresh` (it overwrites) or when the
  results are of `config_dict` itself (the run resumes from its checkpoint, or redoes from
  step 0 a run killed before its first checkpoint)."""
  found = [] if fresh else run_files(workdir)
  if not found:
    return
  names = ', '.join(str(p.relative_to(workdir)) for p in found[:8])
  names += f' and {len(found) - 8} more' if len(found) > 8 else ''
  path = workdir / CONFIG
  if not path.exists():
    raise ConfigMismatchError(f'{workdir} holds results of a run ({names}) but no {CONFIG}: '
                              'whose config they are is unknown. Use another workdir, or '
                              'fresh=True (--fresh) to delete them and start over.')
  detail = config_changes(read_json(path), config_dict)
  if detail:
    raise ConfigMismatchError(
        f'{workdir} holds results of a different config ({names}); differing keys: {detail}. '
        'Use the same config to resume, another workdir, or fresh=True (--fresh) to delete them '
        'and start over.')


def prepare(workdir: pathlib.Path, config_dict: dict[str, Any], *, fresh: bool,
            is_main: bool) -> None:
  """Makes `workdir` ready for a run of `config_dict`: checked (`check`: ConfigMismatchError when
  it holds results of another config, and not `fresh`); created; cleared if `fresh`, or of the
  leftovers of a run of this config that never checkpointed nor finished (it redoes from step 0);
  config.json written. Only the main process (`is_main`) writes or deletes.
  """
  check(workdir, config_dict, fresh=fresh)
  workdir.mkdir(parents=True, exist_ok=True)
  if not is_main:
    return
  if fresh:
    clear(workdir, 'fresh=True (--fresh)')
  elif not has_checkpoint(workdir) and not (workdir / RESULTS).exists():
    clear(workdir, 'leftovers of a run that neither checkpointed nor finished: the run starts '
          'from step 0')
  write_json(workdir / CONFIG, config_dict)


def clear(workdir: pathlib.Path, why: str) -> None:
  """Removes what a previous run wrote (config.json and run_files), saying what and `why`."""
  doomed = run_files(workdir) + [p for p in (workdir / CONFIG,) if p.exists()]
  if doomed:
    logging.warning('%s: deleting %s (%s)', workdir,
                    ', '.join(str(p.relative_to(workdir)) for p in doomed), why)
  shutil.rmtree(workdir / CHECKPOINTS, ignore_errors=True)
  for name in (CONFIG, RESULTS, METRICS, SAMPLES):
    (workdir / name).unlink(missing_ok=True)
  for events in workdir.glob('events.out.tfevents*'):
    events.unlink()


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  """The steps of the committed checkpoints in workdir/checkpoints/, ascending (read-only: orbax
  commits a step by renaming its temporary folder to <step>)."""
  ckpt = workdir / CHECKPOINTS
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def has_checkpoint(workdir: pathlib.Path) -> bool:
  return bool(checkpoint_steps(workdir))


def finished(workdir: pathlib.Path, steps: int) -> bool:
  """Has the run in `workdir` finished `steps` steps: results.json there, and its newest
  checkpoint (or, with none left, results.json's step) at `steps` or beyond?"""
  path = workdir / RESULTS
  if not path.exists():
    return False
  saved = checkpoint_steps(workdir)
  return (saved[-1] if saved else read_json(path).get('step', 0)) >= steps


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
