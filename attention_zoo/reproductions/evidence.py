"""A card's evidence: every number of its report derived from the finished runs of its sweep.

`build` turns the runs of a card's sweep (their results.json, as attention_zoo.analysis.report
collects them) into the card's report: per row the mean over seeds and its interval, the paired
difference from the baseline, the selected seed of a selection protocol, wall time and
throughput, and the verdicts of the rows, of an ordering claim and of an aggregate claim (see
attention_zoo.reproductions.cards). `write` stores it as `<folder>/<card>/report.json` beside
the resolved config of every run; `load` reads it back for attention_zoo.reproductions.render.

report.json keeps a record of every run (`per_run`), so the seeds of one card can be collected
over several sittings (`build(..., previous=...)`).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import platform
import shutil
import tempfile
from typing import Any

import numpy as np

from attention_zoo.analysis import report as sweep_report
from attention_zoo.analysis import stats
from attention_zoo.reproductions.cards import SELECTIONS, Card, Row
from attention_zoo.train import workdir as wd


def run_wall_s(run_dir: pathlib.Path, results: dict[str, Any]) -> float:
  """The run's wall time: results.json's wall_s (for a run trained seed-parallel, its share of
  the group's process: wall_s / seed_group_size), else the time from config.json (written at the
  start) to results.json (written at the end), for runs older than wall_s."""
  if results.get('wall_s') is not None:
    return float(results['wall_s']) / results.get('seed_group_size', 1)
  return (run_dir / wd.RESULTS).stat().st_mtime - (run_dir / wd.CONFIG).stat().st_mtime


def _mean(values: list[float | None]) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def build(card: Card, sweep_dir: pathlib.Path, conditions: str = '',
          previous: dict[str, Any] | None = None) -> dict[str, Any]:
  """The card's report.json from the finished runs of its sweep.

  previous: the card's committed report, whose runs join those of `sweep_dir` (runs collected in
  an earlier sitting, each with the conditions of its sitting): a run finished in `sweep_dir`
  replaces its earlier record; a row with no finished run here keeps its committed row whole.
  """
  runs, failed, missing = sweep_report.collect(sweep_dir)
  known = {row.variant for row in card.rows}
  stray = sorted({r['variant'] for r in runs} - known)
  if stray:
    raise ValueError(f'card {card.name}: runs of variants the card does not list: {stray}; '
                     f'its rows: {sorted(known)}')
  kept = {(r['variant'], r.get('split', 'test')): r  # rows of one run may read several splits
          for r in (previous or {}).get('rows', []) if r['runs']}
  rows = []
  for row in card.rows:
    records = {r['name']: _record(card, row, r, sweep_dir, conditions) for r in runs
               if r['variant'] == row.variant}
    old = kept.get((row.variant, row.split))
    earlier = (old or {}).get('per_run', {})
    if records or earlier or not old:
      rows.append(_row(card, row, {**earlier, **records}))
    else:  # a committed row older than per-run records: kept whole
      mean = old['summary']['mean'] * card.scale if old['summary'] else None
      verdict, reason = row_verdict(row, mean, card.higher_is_better)
      rows.append({**old, 'label': row.label, 'paper': row.paper, 'reference': row.reference,
                   'target': row.target, 'verdict': verdict, 'reason': reason,
                   'by_seed': {int(k): v for k, v in old['by_seed'].items()},  # JSON: str keys
                   'conditions': old.get('conditions', previous.get('conditions', ''))})
    missing = [m for m in missing if m not in rows[-1]['runs']]
  signatures = {k: v for r in rows for final in r['final_evaluation'] if final
                for k, v in final.items() if k.endswith('_signature')}
  # rows that read one run's several splits (the joint bAbI card) count its time once
  walls = {tuple(r['runs']): r['wall_s'] * len(r['runs']) for r in rows
           if r['wall_s'] is not None}.values()
  sittings = {r['conditions'] for r in rows if r['runs']}
  by_variant = {r['variant']: r for r in rows}  # (the baseline and order name unique variants)
  if card.baseline:
    base = by_variant[card.baseline]['by_seed']
    for r in rows:
      r['vs_baseline'] = (stats.paired_test(_finite(r['by_seed']), _finite(base))
                          if r['variant'] != card.baseline else None)
  aggregate = aggregate_rows(card, rows) if card.aggregate else None
  if aggregate:
    verdict, reason = aggregate['verdict'], aggregate['reason']
  else:
    verdict, reason = (order_verdict(card, by_variant) if card.order else card_verdict(rows))
  intervals = sorted({r['summary']['interval'] for r in rows if r['summary']})
  return {
      'card': card.name, 'title': card.title, 'paper': card.paper, 'claim': card.claim,
      'config': card.config, 'command': card.command, 'metric': card.metric,
      'metric_label': card.metric_label, 'scale': card.scale, 'digits': card.digits,
      'shown': list(card.shown), 'rows': rows, 'verdict': verdict, 'reason': reason,
      'complement': card.complement, 'aggregate': aggregate,
      'selection': SELECTIONS[card.select][1] if card.select else None,
      'statistics': ('mean ± std over seeds [95% CI: ' + (', '.join(intervals) or 'none') +
                     ']; one seed: the value alone'),
      'signatures': signatures, 'wall_s': float(sum(walls)) if walls else None,
      'machine': f'{os.cpu_count()} CPUs ({platform.machine()})',
      'conditions': (sittings.pop() if len(sittings) == 1 else '; '.join(
          f'{r["label"]}: {r["conditions"] or "alone"}' for r in rows if r['runs'])),
      'failed': failed, 'missing': missing, 'deviations': list(card.deviations),
      'readme': card.readme, 'baseline': card.baseline,
      'baseline_label': by_variant[card.baseline]['label'] if card.baseline else None,
  }


def _record(card: Card, row: Row, run: dict[str, Any], sweep_dir: pathlib.Path,
            conditions: str) -> dict[str, Any]:
  """What the evidence keeps of one finished run of a row: enough to rebuild the row with runs
  of a later sitting."""
  results, test = run['results'], run['results'].get(row.split) or {}
  key = SELECTIONS[card.select][0](results) if card.select else None
  return {
      'seed': run['seed'], 'value': _value(card, test.get(card.metric)),
      'select_key': list(key) if key is not None else None,
      'shown': {m: test[m] for m in card.shown if m in test},
      'wall_s': run_wall_s(sweep_dir / wd.RUNS / run['name'], results),
      'tokens_per_s': results.get('tokens_per_s'), 'steps_per_s': results.get('steps_per_s'),
      'final_evaluation': results.get('final_evaluation'), 'conditions': conditions,
  }


def _row(card: Card, row: Row, per_run: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """One row of the report from its runs' records (see _record)."""
  names = sorted(per_run, key=lambda name: per_run[name]['seed'])
  group = [per_run[name] for name in names]
  by_seed = {r['seed']: r['value'] for r in group}
  values = [v for v in by_seed.values() if v is not None]
  summary = stats.summarize(values, stats.bounds(card.metric)) if values else None
  mean = summary['mean'] * card.scale if summary else None
  verdict, reason = row_verdict(row, mean, card.higher_is_better)
  selected = None
  if card.select and group:
    # (a key's infinities are null in JSON: an unknown value sorts last)
    best = min(group, key=lambda r: tuple(np.inf if v is None else v for v in r['select_key']))
    selected = {'seed': best['seed'], 'value': best['value'], 'of': len(group)}
  sittings = list(dict.fromkeys(r['conditions'] for r in group))
  return {
      'variant': row.variant, 'label': row.label, 'paper': row.paper,
      'reference': row.reference, 'target': row.target, 'split': row.split,
      'runs': names, 'seeds': [r['seed'] for r in group],
      'summary': summary, 'selected': selected,
      'shown': {m: stats.summarize([r['shown'][m] for r in group], stats.bounds(m))
                for m in card.shown if group and all(m in r['shown'] for r in group)},
      'verdict': verdict, 'reason': reason,
      'wall_s': _mean([r['wall_s'] for r in group]),
      'tokens_per_s': _mean([r['tokens_per_s'] for r in group]),
      'steps_per_s': _mean([r['steps_per_s'] for r in group]),
      'final_evaluation': [r['final_evaluation'] for r in group],
      'by_seed': by_seed,
      'conditions': sittings[0] if len(sittings) == 1 else '; '.join(
          f'seeds {", ".join(str(r["seed"]) for r in group if r["conditions"] == c)}: '
          f'{c or "alone"}' for c in sittings),
      'per_run': per_run,
  }


def _value(card: Card, value: float | None) -> float | None:
  """A run's metric as the card reports it (unscaled): 1 - value for a complement card."""
  if value is None:
    return None
  return 1.0 - value if card.complement else value


def row_verdict(row: Row, mean: float | None, higher_is_better: bool = True,
                digits: int = 2) -> tuple[str, str]:
  """(verdict, reason) of one row from its mean over seeds (already scaled)."""
  if mean is None or math.isnan(mean):
    return 'not run', 'no finished run in the evidence'
  bar = row.target
  if bar is None:
    return 'reported', 'no target for this row'
  met = mean >= bar if higher_is_better else mean <= bar
  sign = ('≥' if higher_is_better else '≤') if met else ('<' if higher_is_better else '>')
  while not met and digits < 6 and round(mean, digits) == round(bar, digits):
    digits += 1  # "12.4 > target 12.4" says nothing: show the digit that decides
  return ('reproduced' if met else 'not reproduced'), f'{mean:.{digits}f} {sign} target {bar:g}'


def aggregate_rows(card: Card, rows: list[dict[str, Any]]) -> dict[str, Any]:
  """The card's claim on the mean over its rows: the mean and the failures (rows worse than
  fail_above) over seeds and, with a selection protocol, of the selected seeds; judged on the
  protocol's mean where the card has one (the paper's own), else on the mean over seeds."""
  agg, scale = card.aggregate, card.scale
  # (rounded: an error of exactly 5% computes as 1 - 0.95 = 0.05000000000000004)
  worse = (lambda v: round(v, 9) < agg.fail_above) if card.higher_is_better else (
      lambda v: round(v, 9) > agg.fail_above)

  def stat(values: list[float]) -> dict[str, Any]:
    return {'mean': float(np.mean(values)),
            'failed': None if agg.fail_above is None else sum(map(worse, values))}

  out: dict[str, Any] = {'target': agg.target, 'fail_above': agg.fail_above, 'n_rows': len(rows)}
  papers = [r['paper'] for r in rows]
  out['paper'] = ({'mean': float(np.mean(papers)), 'failed': agg.paper_failed}
                  if None not in papers else None)
  done = [r for r in rows if r['summary']]
  out['seeds'] = stat([r['summary']['mean'] * scale for r in done]) if done else None
  out['selected'] = (stat([r['selected']['value'] * scale for r in done])
                     if card.select and done else None)
  judged, how = ((out['selected'], 'the selection protocol') if card.select else
                 (out['seeds'], 'the mean over seeds'))
  unrun = [r['label'] for r in rows if not r['summary']]
  if unrun:
    out['verdict'], out['reason'] = 'not run', f'no finished run: {", ".join(unrun)}'
    return out
  failed = '' if judged['failed'] is None else f'; {judged["failed"]} of {len(rows)} failed'
  out['verdict'], reason = row_verdict(Row('', 'mean', target=agg.target),
                                             judged['mean'], card.higher_is_better, card.digits)
  out['reason'] = f'mean over {len(rows)} rows {reason} ({how}){failed}'
  return out


def _finite(by_seed: dict[int, float | None]) -> dict[int, float]:
  return {s: v for s, v in by_seed.items() if v is not None}


def order_verdict(card: Card, by_variant: dict[str, dict[str, Any]]) -> tuple[str, str]:
  """The verdict of an ordering claim: each step worse -> better holds in the means and is
  significant (paired t-test over shared seeds, p < 0.05). Better is lower on a complement card
  (its values are errors)."""
  steps = []
  for worse, better in zip(card.order, card.order[1:]):
    lo, hi = by_variant[worse], by_variant[better]
    if not (lo['summary'] and hi['summary']):
      return 'not run', f'{lo["label"] if not lo["summary"] else hi["label"]} has no finished run'
    test = stats.paired_test(_finite(hi['by_seed']), _finite(lo['by_seed']))
    diff = test['mean_diff'] * card.scale
    steps.append((lo['label'], hi['label'], diff, test['p_value']))
  text = '; '.join(f'{b} - {a} = {d:+.{card.digits}f} (p = {p:.3f})' for a, b, d, p in steps)
  sign = 1.0 if card.higher_is_better else -1.0
  bad = [(a, b) for a, b, d, p in steps if not (sign * d > 0 and p < 0.05)]
  if not bad:
    return 'ordering reproduced', text
  return 'not reproduced', ('not significantly ordered: ' +
                            ', '.join(f'{a} < {b}' for a, b in bad) + '; ' + text)


def card_verdict(rows: list[dict[str, Any]]) -> tuple[str, str]:
  """The card's verdict from its rows' verdicts."""
  judged = [r for r in rows if r['verdict'] in ('reproduced', 'not reproduced')]
  unrun = [r['label'] for r in rows if r['verdict'] == 'not run']
  tail = f'; not run yet: {", ".join(unrun)}' if unrun else ''
  if not judged:
    return ('reported' if not unrun else 'not run'), 'no row has a target' + tail
  ok = [r['label'] for r in judged if r['verdict'] == 'reproduced']
  if len(ok) == len(judged):
    return 'reproduced', f'every target met ({len(ok)} of {len(judged)})' + tail
  short = '; '.join(f'{r["label"]} {r["reason"]}' for r in judged if r['verdict'] != 'reproduced')
  return ('partly reproduced' if ok else 'not reproduced'), short + tail


def strict_json(x: Any) -> Any:
  """`x` with every NaN / Inf float as None (null), so that any JSON parser reads the evidence."""
  if isinstance(x, float):
    return x if np.isfinite(x) else None
  if isinstance(x, dict):
    return {k: strict_json(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [strict_json(v) for v in x]
  return x


def load(folder: pathlib.Path) -> dict[str, dict[str, Any]]:
  """card name -> its report.json under `folder` (the repository's reproductions/), for every
  card with evidence."""
  return {p.parent.name: json.loads(p.read_text())
          for p in sorted(folder.glob('*/report.json'))}


def write(card: Card, sweep_dir: pathlib.Path, folder: pathlib.Path, conditions: str = '',
          keep_rows: bool = False) -> dict[str, Any]:
  """folder/<card>/ (report.json and configs/<run>.json) from the sweep's finished runs, swapped
  in whole.

  keep_rows: rows without a finished run keep their evidence under `folder` (see build)."""
  target = folder / card.name
  previous = load(folder).get(card.name) if keep_rows else None
  evidence = strict_json(build(card, sweep_dir, conditions, previous))
  folder.mkdir(exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{card.name}.', dir=folder))
  try:
    (tmp / 'configs').mkdir()
    for row in evidence['rows']:
      for name in row['runs']:
        run_config = sweep_dir / wd.RUNS / name / wd.CONFIG
        if not (run_config.exists() and (run_config.parent / wd.RESULTS).exists()):
          run_config = target / 'configs' / f'{name}.json'  # a row kept from `previous`
        shutil.copyfile(run_config, tmp / 'configs' / f'{name}.json')
    wd.write_json(tmp / 'report.json', evidence)
    old = target.with_name(f'.{card.name}.old')
    if target.exists():
      target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return evidence
