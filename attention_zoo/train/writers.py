"""What a run writes as it trains: metrics.jsonl, TensorBoard events, samples.jsonl, progress."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Mapping

import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from attention_zoo.train import workdir as wd


def _plain(value: Any) -> Any:
  """numpy / jax values -> Python float, int or list (JSON-ready)."""
  value = np.asarray(value)
  if value.ndim:
    return value.tolist()
  if np.issubdtype(value.dtype, np.integer):
    return int(value)
  return float(value)


class MetricWriter:
  """Appends {'step', 'split', **metrics} rows to metrics.jsonl and scalars to TensorBoard."""

  def __init__(self, workdir: str | pathlib.Path):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / wd.METRICS
    self.samples_path = self.workdir / wd.SAMPLES
    self._tb = SummaryWriter(str(self.workdir))

  def truncate_after(self, step: int, *, final: bool = False) -> None:
    """Drops rows logged after `step` (a resumed run redoes those steps); `final`: the evaluation
    rows of `step` too (a run killed in its final evaluation redoes it). Atomic: a kill in the
    middle keeps the old file."""
    for path in (self.path, self.samples_path):
      rows = [r for r in wd.read_jsonl(path)
              if r['step'] < step or r['step'] == step and not (final and r['split'] != 'train')]
      wd.write_text(path, ''.join(json.dumps(r) + '\n' for r in rows))

  def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    row = {'step': int(step), 'split': split, **{k: _plain(v) for k, v in metrics.items()}}
    with self.path.open('a') as f:
      f.write(json.dumps(row) + '\n')  # NaN is written as JSON NaN (Python's json reads it)
    for key, value in row.items():
      if key not in ('step', 'split') and isinstance(value, float) and math.isfinite(value):
        self._tb.add_scalar(f'{split}/{key}', value, step)
    return row

  def write_samples(self, step: int, split: str, samples: list[dict[str, str]]) -> None:
    with self.samples_path.open('a') as f:
      for s in samples:
        f.write(json.dumps({'step': int(step), 'split': split, **s}) + '\n')
    text = '\n\n'.join(f'`{s["source"]}` -> `{s["prediction"]}` (target `{s["target"]}`)'
                       for s in samples)
    self._tb.add_text(f'{split}/samples', text, step)

  def flush(self) -> None:
    self._tb.flush()

  def close(self) -> None:
    self._tb.close()


def progress_bar(total: int, initial: int, *, show: bool = True) -> tqdm.tqdm:
  """tqdm bar with steps, ETA and steps/s; silent when stderr is not a TTY (disable=None) and
  where `show` is False (every process of a multi-process run but process 0)."""
  return tqdm.tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True,
                   disable=None if show else True, smoothing=0.1)
