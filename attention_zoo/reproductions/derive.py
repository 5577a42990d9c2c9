"""A card's report, derived from the records of its runs and the card's definition alone.

`report(card, records, legacy)` computes every number the docs show: per row the mean over seeds
and its interval (attention_zoo.analysis.stats), the paired difference from the baseline, the
seed a selection protocol picks, wall time and throughput, and the verdicts of the rows, of an
ordering claim and of an aggregate claim (see attention_zoo.reproductions.cards). A record is
what attention_zoo.reproductions.evidence reads from one run's committed files:

  {'name', 'variant', 'seed', 'conditions', 'machine',
   'splits': {split: {'value': the card's metric (1 - metric on a complement card),
                      'shown': {metric: value}}},
   'select_key', 'wall_s', 'tokens_per_s', 'steps_per_s', 'final_evaluation',
   'curve': the validation rows of metrics.jsonl, or None for a run that predates them}

`legacy` holds, for cards whose earlier report kept no per-run timings, the row-level numbers of
that report (wall time, tokens/s, steps/s means, the selected seed): they fill a row only where
no run of it has its own.

A card whose verdict rests on noise states its power (`power`, stats.power_analysis): for each
step of an ordering claim (paired over shared seeds), and for each row with a target whose
one-sample t-test against it is not significant (p >= 0.05: "mean >= target" could go either
way), the seeds needed for 80% power at α = 0.05 to detect the observed mean difference, and the
smallest difference the committed seeds detect. A difference that needs more than SEED_BUDGET
seeds cannot be decided at this size. A row whose training length rests on the plateau rule
(card.plateau) shows its validation curve's last two evaluations per seed (`plateau`). A row
whose runs chose their final step on validation (eval.select_metric: attention_zoo.train.selection)
shows, per seed, that curve and the step chosen (`length`), each recomputed from the committed
curve: a run whose results.json names another step is refused (EvidenceError).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from attention_zoo.analysis import stats
from attention_zoo.reproductions.cards import SELECTIONS, Card, Row
from attention_zoo.train import selection

TIMINGS = ('wall_s', 'tokens_per_s', 'steps_per_s')  # per-run numbers a row shows as means
# The most seeds per row this project would run to decide one comparison (10 times a 3-seed
# pilot, on 2-core CPUs): a difference that needs more cannot be decided at this size.
SEED_BUDGET = 30


def _mean(values: list[float | None]) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _finite(by_seed: dict[int, float | None]) -> dict[int, float]:
  return {s: v for s, v in by_seed.items() if v is not None}


def row(card: Card, row_: Row, records: list[dict[str, Any]],
        legacy: dict[str, Any] | None = None) -> dict[str, Any]:
  """One row of the report from the records of its runs (and its legacy row-level numbers)."""
  group = sorted(records, key=lambda r: r['seed'])
  splits = [r['splits'].get(row_.split, {'value': None, 'shown': {}}) for r in group]
  by_seed = {r['seed']: s['value'] for r, s in zip(group, splits)}
  values = [v for v in by_seed.values() if v is not None]
  summary = stats.summarize(values, stats.bounds(card.metric)) if values else None
  mean = summary['mean'] * card.scale if summary else None
  verdict, reason = row_verdict(row_, mean, card.higher_is_better)
  vs_against, against = None, {}
  if card.against:
    against = _finite({r['seed']: s['shown'].get(card.against) for r, s in zip(group, splits)})
    vs_against = stats.paired_test(_finite(by_seed), against)
    verdict, reason = against_verdict(card, vs_against, mean)
  notes = sorted({r['note'] for r in group if r.get('note')})
  if group and not values and notes:
    verdict, reason = 'not measured', '; '.join(notes)
  legacy, from_legacy = legacy or {}, []
  timings = {}
  for key in TIMINGS:
    timings[key] = _mean([r[key] for r in group])
    if timings[key] is None and legacy.get(key) is not None:
      timings[key] = legacy[key]
      from_legacy.append(key)
  selected = None
  if card.select and group:
    if all(r['select_key'] is not None for r in group):
      # (a key's infinities are null in JSON: an unknown value sorts last)
      best = min(group, key=lambda r: tuple(np.inf if v is None else v for v in r['select_key']))
      seed = best['seed']
    else:
      seed = legacy.get('selected_seed')
      from_legacy.append('selected_seed')
    if seed is not None:
      selected = {'seed': seed, 'value': by_seed[seed], 'of': len(group)}
  sittings = list(dict.fromkeys(r['conditions'] for r in group))
  return {
      'variant': row_.variant, 'label': row_.label, 'paper': row_.paper,
      'reference': row_.reference, 'target': row_.target,
      'target_source': row_.target_source or 'reported', 'split': row_.split,
      'runs': [r['name'] for r in group], 'seeds': [r['seed'] for r in group],
      'summary': summary, 'selected': selected,
      'shown': {m: stats.summarize([s['shown'][m] for s in splits], stats.bounds(m))
                for m in card.shown if group and all(m in s['shown'] for s in splits)},
      'verdict': verdict, 'reason': reason, **timings, 'vs_against': vs_against,
      'against_by_seed': against,
      'measured': _counts([r.get('measured') for r in group]),
      'final_evaluation': [r['final_evaluation'] for r in group],
      'by_seed': by_seed,
      'curves': sum(r['curve'] is not None for r in group),
      'plateau': (plateau(card, row_.label, group) if row_.variant in card.plateau else None),
      'length': chosen_length(card, row_.label, group),
      'from_legacy': from_legacy,
      'conditions': sittings[0] if len(sittings) == 1 else '; '.join(
          f'seeds {", ".join(str(r["seed"]) for r in group if r["conditions"] == c)}: '
          f'{c or "alone"}' for c in sittings),
  }


def report(card: Card, records: dict[str, dict[str, Any]],
           legacy: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
  """The card's report from the records of its runs (run name -> record) and its definition.

  legacy: variant -> the earlier report's row-level numbers (see the module docstring).
  """
  check_variants(card, [r['variant'] for r in records.values()])
  legacy = legacy or {}
  rows = [row(card, r, [rec for rec in records.values() if rec['variant'] == r.variant],
              legacy.get(r.variant)) for r in card.rows]
  signatures = {k: v for r in rows for final in r['final_evaluation'] if final
                for k, v in final.items() if k.endswith('_signature')}
  # rows that read one run's several splits (the joint bAbI card) count its time once
  walls = {tuple(r['runs']): r['wall_s'] * len(r['runs']) for r in rows
           if r['wall_s'] is not None}.values()
  sittings = {r['conditions'] for r in rows if r['runs']}
  by_variant = {r['variant']: r for r in rows}  # (the baseline and order name unique variants)
  # Each row's paired test over seeds: against its `versus` row, else the card's baseline.
  for row_, r in zip(card.rows, rows):
    against = row_.versus or card.baseline
    r['paired'] = None
    if not against or against == row_.variant:
      continue
    if against not in by_variant:
      raise ValueError(f'card {card.name}: row {row_.label!r} is set against {against!r}, '
                       f'which is no row of it; its rows: {sorted(by_variant)}')
    other = by_variant[against]
    r['paired'] = stats.paired_test(_finite(r['by_seed']), _finite(other['by_seed']))
    if row_.versus and r['summary']:
      r['verdict'], r['reason'] = versus_verdict(card, r['paired'], other['label'])
  aggregate = aggregate_rows(card, rows) if card.aggregate else None
  if aggregate:
    verdict, reason = aggregate['verdict'], aggregate['reason']
  else:
    what = (f'row above {card.against} (paired t, p < 0.05)' if card.against else
            'row worse than the row it is set against (paired t, p < 0.05)'
            if any(r.versus for r in card.rows) else 'target met')
    verdict, reason = (order_verdict(card, by_variant) if card.order else
                       card_verdict(rows, what))
  power = power_entries(card, rows, by_variant)
  intervals = sorted({r['summary']['interval'] for r in rows if r['summary']})
  machines = sorted({rec['machine'] for rec in records.values()})
  return {
      'card': card.name, 'title': card.title, 'paper': card.paper, 'claim': card.claim,
      'config': card.config, 'command': card.command, 'metric': card.metric,
      'metric_label': card.metric_label, 'scale': card.scale, 'digits': card.digits,
      'shown': list(card.shown), 'rows': rows, 'verdict': verdict, 'reason': reason,
      'power': power, 'seed_budget': SEED_BUDGET,
      'plateaus': [r['plateau'] for r in rows if r['plateau']],
      'lengths': [r['length'] for r in rows if r['length']],
      'against': card.against,
      'measures': dataclasses.asdict(card.measures) if card.measures else None,
      'complement': card.complement, 'aggregate': aggregate,
      'selection': SELECTIONS[card.select][1] if card.select else None,
      'statistics': ('mean ± std over seeds [95% CI: ' + (', '.join(intervals) or 'none') +
                     ']; one seed: the value alone'),
      'signatures': signatures, 'wall_s': float(sum(walls)) if walls else None,
      'machine': '; '.join(machines),
      'conditions': (sittings.pop() if len(sittings) == 1 else '; '.join(
          f'{" / ".join(labels)}: {c or "alone"}' for c, labels in _by_conditions(rows).items())),
      'deviations': list(card.deviations), 'sources': list(card.sources),
      'choices': list(card.choices),
      'readme': card.readme, 'baseline': card.baseline or None,
      'baseline_label': by_variant[card.baseline]['label'] if card.baseline else None,
      'versus_label': card.versus_label or None,
      'evidence': {'runs': len(records),
                   'results': sum(rec['results'] for rec in records.values()),
                   'curves': sum(rec['curve'] is not None for rec in records.values()),
                   'row_level': sorted({k for r in rows for k in r['from_legacy']})},
  }


def _by_conditions(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
  """{a sitting's conditions: the labels of the rows run in it}, in first-seen order."""
  out: dict[str, list[str]] = {}
  for r in rows:
    if r['runs']:
      out.setdefault(r['conditions'], []).append(r['label'])
  return out


def _counts(names: list[str | None]) -> dict[str, int]:
  """{name: how many runs} of the runs' measured attention arrays, in first-seen order."""
  out: dict[str, int] = {}
  for name in names:
    if name is not None:
      out[name] = out.get(name, 0) + 1
  return out


def against_verdict(card: Card, test: dict[str, Any], mean: float | None) -> tuple[str, str]:
  """(verdict, reason) of a row tested against card.against (paired over seeds): reproduced
  when its mean is above it (below, on a complement card) with p < 0.05."""
  if mean is None or test['n'] < 2:
    return 'not run', 'fewer than 2 seeds with both numbers'
  diff = test['mean_diff'] * card.scale
  sign = 1.0 if card.higher_is_better else -1.0
  text = f'{diff:+.{card.digits}f} vs {card.against} (p = {test["p_value"]:.3f})'
  if sign * diff > 0 and test['p_value'] < stats.ALPHA:
    return 'reproduced', text
  return 'not reproduced', text


def check_variants(card: Card, variants: list[str]) -> None:
  """ValueError naming the variants of runs that are no row of the card, and its rows."""
  known = {r.variant for r in card.rows}
  stray = sorted(set(variants) - known)
  if stray:
    raise ValueError(f'card {card.name}: runs of variants the card does not list: {stray}; '
                     f'its rows: {sorted(known)}')


def versus_verdict(card: Card, test: dict[str, Any], other: str) -> tuple[str, str]:
  """(verdict, reason) of a row that must be worse than `other` (Row.versus), from their paired
  t-test (this row minus `other`, unscaled)."""
  if test['n'] < 2:
    return 'not run', f'fewer than 2 seeds shared with {other}'
  diff, p = test['mean_diff'] * card.scale, test['p_value']
  worse = diff < 0 if card.higher_is_better else diff > 0
  text = f'{diff:+.{card.digits}f} vs {other} (paired t, p = {p:.3f})'
  return ('reproduced' if worse and p < 0.05 else 'not reproduced'), text


def row_verdict(row_: Row, mean: float | None, higher_is_better: bool = True,
                digits: int = 2) -> tuple[str, str]:
  """(verdict, reason) of one row from its mean over seeds (already scaled)."""
  if mean is None or math.isnan(mean):
    return 'not run', 'no finished run in the evidence'
  bar = row_.target
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

  out: dict[str, Any] = {'target': agg.target, 'source': agg.source or 'reported',
                         'fail_above': agg.fail_above, 'n_rows': len(rows)}
  papers = [r['paper'] for r in rows]
  out['paper'] = ({'mean': float(np.mean(papers)), 'failed': agg.paper_failed}
                  if None not in papers else None)
  done = [r for r in rows if r['summary']]
  out['seeds'] = stat([r['summary']['mean'] * scale for r in done]) if done else None
  picked = [r for r in done if r['selected']]
  out['selected'] = (stat([r['selected']['value'] * scale for r in picked])
                     if card.select and picked else None)
  judged, how = ((out['selected'], 'the selection protocol') if card.select else
                 (out['seeds'], 'the mean over seeds'))
  unrun = [r['label'] for r in rows if not r['summary'] or (card.select and not r['selected'])]
  if unrun:
    out['verdict'], out['reason'] = 'not run', f'no finished run: {", ".join(unrun)}'
    return out
  failed = '' if judged['failed'] is None else f'; {judged["failed"]} of {len(rows)} failed'
  out['verdict'], reason = row_verdict(Row('', 'mean', target=agg.target),
                                       judged['mean'], card.higher_is_better, card.digits)
  out['reason'] = f'mean over {len(rows)} rows {reason} ({how}){failed}'
  return out


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


def plateau(card: Card, label: str, records: list[dict[str, Any]]) -> dict[str, Any]:
  """The plateau rule (cards module docstring) on one row: per seed, its metric
  (card.plateau_metric or card.metric, scaled) on validation at the last two evaluations of its
  curve, their means over seeds, and `rising`: the mean at the last is above the one before (the
  row wants a longer run). Seeds without a curve are left out and counted."""
  metric, seeds, missing = card.plateau_metric or card.metric, [], 0
  for rec in sorted(records, key=lambda r: r['seed']):
    points = [[p['step'], p[metric] * card.scale] for p in rec['curve'] or () if metric in p]
    if len(points) < 2:
      missing += 1
    else:
      seeds.append({'seed': rec['seed'], 'last_two': points[-2:]})
  out = {'label': label, 'metric': metric, 'seeds': seeds, 'missing': missing, 'rising': None}
  if seeds:
    out['mean_before'], out['mean_last'] = (
        float(np.mean([s['last_two'][i][1] for s in seeds])) for i in (0, 1))
    out['rising'] = out['mean_last'] > out['mean_before']
  return out


class EvidenceError(ValueError):
  """Committed files of a run that contradict each other."""


def chosen_length(card: Card, label: str, records: list[dict[str, Any]]) -> dict[str, Any] | None:
  """The training length each run of a row chose on validation (results.json's
  final_evaluation.selected), recomputed from its committed validation curve (selection.
  validation_curve and select_step): per seed the curve (scaled as the card's metric when it is
  the card's), the step chosen and the checkpoints averaged there. None when no run chose.
  EvidenceError naming the run when its results name another step or curve than the recomputed."""
  seeds, how = [], None
  for rec in sorted(records, key=lambda r: r['seed']):
    chosen = (rec.get('final_evaluation') or {}).get('selected')
    if not chosen:
      continue
    how = {'metric': chosen['metric'], 'mode': chosen['mode']}
    curve = selection.validation_curve(rec['curve'] or (), chosen['metric'], rec['name'])
    step = selection.select_step(curve, chosen['mode']) if curve else None
    if step != chosen['step'] or [[s, v] for s, v in sorted(curve.items())] != chosen['curve']:
      raise EvidenceError(f'run {rec["name"]}: results.json chose step {chosen["step"]} on '
                          f'validation {chosen["metric"]}, its validation curve gives step '
                          f'{step} ({sorted(curve.items())})')
    scale = card.scale if chosen['metric'] == card.metric else 1.0
    seeds.append({'seed': rec['seed'], 'step': step,
                  'curve': [[s, v * scale] for s, v in sorted(curve.items())],
                  'averaged_steps': rec['final_evaluation']['averaged_steps'],
                  'last': max(curve)})
  return {'label': label, **how, 'seeds': seeds} if seeds else None


def _power(label: str, test: str, seeds: list[int], diffs: list[float],
           p_value: float) -> dict[str, Any] | None:
  found = stats.power_analysis(diffs)
  if found is None:
    return None
  needed = found['seeds_needed']
  return {'label': label, 'test': test, 'seeds': seeds, 'p_value': p_value, **found,
          'decidable': needed is not None and needed <= SEED_BUDGET}


def power_entries(card: Card, rows: list[dict[str, Any]],
                  by_variant: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
  """The power of each comparison a verdict of the card rests on (module docstring), in the
  tables' scale: every step of the ordering claim, every row with a target that its seeds do
  not tell apart from the target (one-sample t, p >= 0.05), and every row that its seeds do not
  tell apart from card.against (paired t, p >= 0.05)."""
  out = []
  for worse, better in zip(card.order, card.order[1:]):
    lo, hi = _finite(by_variant[worse]['by_seed']), _finite(by_variant[better]['by_seed'])
    seeds = sorted(set(lo) & set(hi))
    if len(seeds) < 2:  # a step not run yet has no power to state
      continue
    diffs = [(hi[s] - lo[s]) * card.scale for s in seeds]
    entry = _power(f'{by_variant[better]["label"]} - {by_variant[worse]["label"]}',
                   'paired t', seeds, diffs, stats.paired_test(hi, lo)['p_value'])
    if entry and card.pilot and len(seeds) > card.pilot:  # what the pilot's seeds asked for
      first = seeds[:card.pilot]
      entry['pilot'] = _power('', 'paired t', first, diffs[:card.pilot], stats.paired_test(
          {s: hi[s] for s in first}, {s: lo[s] for s in first})['p_value'])
    out.append(entry)
  for r in rows:
    values = _finite(r['by_seed'])
    test = r.get('vs_against')
    if test and test['n'] >= 2 and not test['p_value'] < stats.ALPHA:
      against = r['against_by_seed']
      out.append(_power(f'{r["label"]} - {card.against}', 'paired t', test['seeds'],
                        [(values[s] - against[s]) * card.scale for s in test['seeds']],
                        test['p_value']))
    if r['target'] is None or len(values) < 2:
      continue
    bar = {s: r['target'] / card.scale for s in values}
    test = stats.paired_test(values, bar)  # against a constant: the one-sample t-test
    if not test['p_value'] < stats.ALPHA:
      out.append(_power(f'{r["label"]} - target {r["target"]:g}', 'one-sample t', sorted(values),
                        [v * card.scale - r['target'] for v in values.values()],
                        test['p_value']))
  return [e for e in out if e is not None]


def card_verdict(rows: list[dict[str, Any]], what: str = 'target met') -> tuple[str, str]:
  """The card's verdict from its rows' verdicts (`what` a reproduced row shows, for the reason).
  """
  judged = [r for r in rows if r['verdict'] in ('reproduced', 'not reproduced')]
  unrun = [r['label'] for r in rows if r['verdict'] == 'not run']
  tail = f'; not run yet: {", ".join(unrun)}' if unrun else ''
  if not judged:
    if unrun:
      return 'not run', 'no row with a target has run yet' + tail
    return 'reported', 'no row has a target'
  ok = [r['label'] for r in judged if r['verdict'] == 'reproduced']
  if len(ok) == len(judged):
    return 'reproduced', f'every {what} ({len(ok)} of {len(judged)})' + tail
  short = '; '.join(f'{r["label"]} {r["reason"]}' for r in judged if r['verdict'] != 'reproduced')
  return ('partly reproduced' if ok else 'not reproduced'), short + tail
