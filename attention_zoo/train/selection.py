"""The training step chosen on validation (eval.select_metric): early stopping after the fact.

The loop validates every train.eval_every steps (greedy decoding, the params of that step) and
keeps every checkpoint; the final evaluation then runs once, at the step whose validation value
is best, on the mean params of the eval.average_checkpoints checkpoints up to it. The test split
is read there and nowhere else, so no choice of length sees it. With an rsqrt or constant
schedule (one that does not depend on train.steps) the first N steps of the run are a run of N
steps, so one run chooses among all its validated lengths.

Used by the loop (train.loop._selection) and by the reproduction cards, which recompute each
run's chosen step from its committed validation curve (reproductions.derive).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

MODES = ('max', 'min')  # eval.select_mode: the best validation value is the highest / lowest


def validation_curve(rows: Iterable[dict[str, Any]], metric: str,
                     where: str = 'metrics.jsonl') -> dict[int, float]:
  """{step: `metric`} of the periodic validations among metrics.jsonl `rows`: the first
  validation row of each step after 0 (a final evaluation's rows, written after it at the last
  step, are not one). ValueError naming `where` and the step when a validation lacks `metric`."""
  curve: dict[int, float] = {}
  for row in rows:
    if row['split'] == 'validation' and row['step'] > 0 and row['step'] not in curve:
      if metric not in row:
        raise ValueError(f'eval.select_metric={metric!r}: the validation of step {row["step"]} '
                         f'({where}) has no such metric; it has {sorted(row)}')
      curve[row['step']] = float(row[metric])
  return curve


def select_step(curve: dict[int, float], mode: str) -> int:
  """The step whose value is best (mode 'max': the highest, 'min': the lowest), the earliest of
  equals; a non-finite value is chosen only when every value is."""
  if mode not in MODES:
    raise ValueError(f'eval.select_mode={mode!r}: must be one of {MODES}')
  if not curve:
    raise ValueError('select_step: no validation to choose from')
  sign = 1.0 if mode == 'max' else -1.0

  def key(step: int) -> tuple[bool, float, int]:
    value = curve[step]
    return (math.isfinite(value), sign * value if math.isfinite(value) else 0.0, -step)

  return max(curve, key=key)
