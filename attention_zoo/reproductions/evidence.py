"""A card's evidence: the small files of each of its runs, committed, from which every number of
the card is derived (attention_zoo.reproductions.derive) each time the docs are drawn.

  <folder>/<card>/runs/<run>/
    config.json        the run's resolved config, as the run wrote it
    results.json       its final metrics, throughput and wall time, as the run wrote it
    validation.jsonl   its validation curve: the rows of metrics.jsonl with split 'validation'
    run.json           {'variant', 'seed', 'conditions', 'machine'}: which row it belongs to and
                       the sitting that ran it (what else ran on the machine: wall times depend
                       on it)
    measures_<split>.json  for a card with `measures`: the attention measures of the run's final
                       checkpoint on that split (attention_zoo.analysis.measure_run.write_split),
                       as `measure_runs` wrote them after training
    record.json        instead of results.json and validation.jsonl, for runs that predate this
                       layout: what the card's earlier report.json kept of the run (the card's
                       metric and shown metrics per split, timings where it kept them); such a
                       run has no validation curve
  <folder>/<card>/legacy.json   only where the earlier report kept no per-run timings: its
                       row-level means (wall time, tokens/s, steps/s) and selected seed per row

No checkpoint, no report: the report exists only in memory, derived again by `load`.
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

from attention_zoo.analysis import measure_run
from attention_zoo.analysis import report as sweep_report
from attention_zoo.reproductions import derive
from attention_zoo.reproductions.cards import CARDS, SELECTIONS, Card
from attention_zoo.train import workdir as wd

RUNS = 'runs'
RUN = 'run.json'
CURVE = 'validation.jsonl'
RECORD = 'record.json'
LEGACY = 'legacy.json'
VALIDATION = 'validation'  # the split of the curve


def file_times_s(run_dir: pathlib.Path) -> float:
  """The wall time of a run whose results.json has none (older runs): from config.json (written
  at the start) to results.json (written at the end)."""
  return (run_dir / wd.RESULTS).stat().st_mtime - (run_dir / wd.CONFIG).stat().st_mtime


def machine() -> str:
  return f'{os.cpu_count()} CPUs ({platform.machine()})'


def _value(card: Card, value: float | None) -> float | None:
  """A run's metric as the card reports it (unscaled): 1 - value for a complement card."""
  if value is None:
    return None
  return 1.0 - value if card.complement else value


def record_of_results(card: Card, results: dict[str, Any],
                      wall_s: float | None = None) -> dict[str, Any]:
  """What a card reads of one run's results.json: per split a row reads, the card's metric and
  its shown metrics; the selection key; timings (wall_s: the run's, for results.json without
  one); the final evaluation's settings."""
  splits = {}
  for split in dict.fromkeys(r.split for r in card.rows):
    final = results.get(split) or {}
    splits[split] = {'value': _value(card, final.get(card.metric)),
                     'shown': {m: final[m] for m in card.shown if m in final}}
  key = SELECTIONS[card.select][0](results) if card.select else None
  if results.get('wall_s') is not None:  # a seed-parallel run: its share of the group's time
    wall_s = float(results['wall_s']) / results.get('seed_group_size', 1)
  return {'splits': splits, 'select_key': list(key) if key is not None else None,
          'wall_s': wall_s,
          'tokens_per_s': results.get('tokens_per_s'), 'steps_per_s': results.get('steps_per_s'),
          'final_evaluation': results.get('final_evaluation')}


def measure_files(card: Card) -> list[str]:
  """The measures files a run of `card` commits (none for a card without `measures`)."""
  return [measure_run.split_file(s) for s in card.measures.splits] if card.measures else []


def record_of_measures(card: Card, found: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """What a measures card reads of one run's measures (split -> measures_<split>.json), through
  the reader of card.measures.section: {'splits': {split: {'value', 'shown'}} per split a row
  reads, 'measured': which part of the model was read, 'note': why nothing was (or None)}."""
  if card.measures.section not in READERS:
    raise ValueError(f'card {card.name}: no reader of measures section '
                     f'{card.measures.section!r}; readers: {sorted(READERS)}')
  splits = list(dict.fromkeys(r.split for r in card.rows))
  return READERS[card.measures.section](card, found, splits)


def _head(entry: dict[str, Any], key: str, head: int) -> float | None:
  value = entry.get(key)
  return value[head] if isinstance(value, list) else value


def _unmeasured(splits: list[str], note: str) -> dict[str, Any]:
  return {'splits': {s: {'value': None, 'shown': {}} for s in splits}, 'measured': None,
          'note': note}


def read_alignment(card: Card, found: dict[str, dict[str, Any]],
                   splits: list[str]) -> dict[str, Any]:
  """The card's alignment measure at the source-target attention array and head whose measure
  is highest on card.measures.select_split (the first of equals); with per_head, every head of
  that array too ('<per_head><h>_<metric>'); a model without such attention: the note."""
  select = found[card.measures.select_split]['alignment']
  if not select.get('by_attention'):
    return _unmeasured(splits, select['note'])

  def on_select(candidate: tuple[str, int]) -> float:
    value = _head(select['by_attention'][candidate[0]], card.metric, candidate[1])
    return -math.inf if value is None else value

  candidates = [(path, h) for path, entry in select['by_attention'].items()
                for h in range(len(entry[card.metric]))]
  path, head = max(candidates, key=on_select)  # (max keeps the first of equals)
  out = {}
  for split in splits:
    entry = found[split]['alignment']['by_attention'][path]
    shown = {m: _head(entry, m, head) for m in card.shown}
    if card.measures.per_head:  # every head of the chosen array: 'hop1_argmax_in_gold', ...
      shown |= {f'{card.measures.per_head}{h + 1}_{card.metric}': v
                for h, v in enumerate(entry[card.metric])}
    out[split] = {'value': _value(card, _head(entry, card.metric, head)),
                  'shown': {m: v for m, v in shown.items() if m in card.shown and v is not None}}
  heads = len(select['by_attention'][path][card.metric])
  name = card.measures.per_head or 'head'  # (numbered from 1, as the shown columns are)
  return {'splits': out, 'measured': path + (f' {name} {head + 1}' if heads > 1 else ''),
          'note': None}


def _depth(path: str) -> tuple[Any, ...]:
  """A module path's sort key by depth: its numbers as numbers ('stages/10' after 'stages/2')."""
  return tuple(int(p) if p.isdigit() else p for p in path.split('/'))


def read_se_selectivity(card: Card, found: dict[str, dict[str, Any]],
                        splits: list[str]) -> dict[str, Any]:
  """The SE class selectivity of the deepest block as the value, each block (by depth) shown as
  'block<i>_se_selectivity'; a model without SE blocks: unmeasured."""
  out = {}
  for split in splits:
    section = found[split].get('se_selectivity')
    if not section:
      return _unmeasured(splits, 'the model has no squeeze-and-excitation block')
    blocks = [section['blocks'][p] for p in sorted(section['blocks'], key=_depth)]
    shown = {f'block{i}_se_selectivity': v for i, v in enumerate(blocks, start=1)}
    out[split] = {'value': _value(card, blocks[-1]),
                  'shown': {m: v for m, v in shown.items() if m in card.shown and v is not None}}
  return {'splits': out, 'measured': f'{len(blocks)} SE blocks', 'note': None}


READERS = {'alignment': read_alignment, 'se_selectivity': read_se_selectivity}


def measure_runs(card: Card, sweep_dir: pathlib.Path) -> list[pathlib.Path]:
  """Writes, for each finished run of the sweep that lacks them, the measures files the card
  needs (measure_run.write_split of each of card.measures.splits) -> the files written."""
  if not card.measures:
    return []
  written = []
  runs, _, _ = sweep_report.collect(sweep_dir)
  for run in runs:
    run_dir = sweep_dir / wd.RUNS / run['name']
    for split in card.measures.splits:
      if not (run_dir / wd.ANALYSIS / measure_run.split_file(split)).exists():
        written.append(measure_run.write_split(run_dir, split, card.measures.examples))
  return written


def read_run(card: Card, run_dir: pathlib.Path) -> dict[str, Any]:
  """The record of one committed run (see attention_zoo.reproductions.derive)."""
  run = wd.read_json(run_dir / RUN)
  if (run_dir / wd.RESULTS).exists():
    results = wd.read_json(run_dir / wd.RESULTS)
    record = record_of_results(card, results, run.pop('wall_s_from_file_times', None))
    if card.measures:
      missing = [f for f in measure_files(card) if not (run_dir / f).exists()]
      if missing:
        raise FileNotFoundError(f'{run_dir}: card {card.name} reads its measures, and '
                                f'{", ".join(missing)} is missing (experiments.reproduce '
                                'measures each finished run)')
      record |= record_of_measures(card, {s: wd.read_json(run_dir / measure_run.split_file(s))
                                          for s in card.measures.splits})
    curve, has_results = wd.read_jsonl(run_dir / CURVE), True
  elif (run_dir / RECORD).exists():
    record = {k: v for k, v in wd.read_json(run_dir / RECORD).items() if k != 'note'}
    curve, has_results = None, False
  else:
    raise FileNotFoundError(f'{run_dir}: neither {wd.RESULTS} nor {RECORD}')
  return {'name': run_dir.name, **run, **record, 'curve': curve, 'results': has_results}


def read_card(card: Card, card_dir: pathlib.Path) -> dict[str, Any]:
  """The card's report derived from its committed runs under card_dir."""
  records = {p.name: read_run(card, p) for p in sorted((card_dir / RUNS).iterdir())
             if p.is_dir()}
  legacy = wd.read_json(card_dir / LEGACY)['rows'] if (card_dir / LEGACY).exists() else None
  return derive.report(card, records, legacy)


def load(folder: pathlib.Path) -> dict[str, dict[str, Any]]:
  """card name -> its report, derived from the runs under `folder`/<card>/ (the repository's
  reproductions/), for every card with evidence. A folder of no card is an error naming it."""
  out = {}
  for card_dir in sorted(p for p in folder.iterdir() if p.is_dir()
                         and not p.name.startswith('.')):
    if card_dir.name not in CARDS:
      raise ValueError(f'{card_dir}: evidence of no card; cards: {", ".join(CARDS.names())}')
    out[card_dir.name] = read_card(CARDS.get(card_dir.name), card_dir)
  return out


def store_run(run: dict[str, Any], run_dir: pathlib.Path, dest: pathlib.Path,
              conditions: str, measured: tuple[str, ...] = ()) -> None:
  """dest/ <- the committed files of one finished run of a sweep (see the module docstring);
  measured: the names of its measures files (in <run>/analysis/) to commit too."""
  dest.mkdir(parents=True)
  shutil.copyfile(run_dir / wd.CONFIG, dest / wd.CONFIG)
  shutil.copyfile(run_dir / wd.RESULTS, dest / wd.RESULTS)
  for name in measured:
    shutil.copyfile(run_dir / wd.ANALYSIS / name, dest / name)
  wd.write_text(dest / CURVE, ''.join(validation_lines(run_dir / wd.METRICS)))
  about = {'variant': run['variant'], 'seed': run['seed'], 'conditions': conditions,
           'machine': machine()}
  if run['results'].get('wall_s') is None:  # older runs: the time between their files
    about['wall_s_from_file_times'] = file_times_s(run_dir)
  wd.write_json(dest / RUN, about)


def validation_lines(metrics: pathlib.Path) -> list[str]:
  """The lines of a metrics.jsonl whose row has split 'validation', verbatim (a last line cut
  short by a killed process is left out, as wd.read_jsonl does)."""
  out = []
  for line in metrics.read_text().splitlines(keepends=True) if metrics.exists() else []:
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if row.get('split') == VALIDATION:
      out.append(line if line.endswith('\n') else line + '\n')
  return out


def write(card: Card, sweep_dir: pathlib.Path, folder: pathlib.Path, conditions: str = '',
          keep_rows: bool = False) -> dict[str, Any]:
  """folder/<card>/ from the finished runs of the sweep, swapped in whole; returns the derived
  report.

  keep_rows: the runs committed under folder/<card>/ stay, a run finished here replacing the
  committed run of its name (the seeds of a row collected over several sittings)."""
  runs, _, _ = sweep_report.collect(sweep_dir)
  derive.check_variants(card, [r['variant'] for r in runs])  # before anything is written
  target = folder / card.name
  folder.mkdir(exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{card.name}.', dir=folder))
  try:
    staged = tmp / card.name
    if keep_rows and target.exists():
      shutil.copytree(target, staged)
    (staged / RUNS).mkdir(parents=True, exist_ok=True)
    for run in runs:
      dest = staged / RUNS / run['name']
      shutil.rmtree(dest, ignore_errors=True)
      store_run(run, sweep_dir / wd.RUNS / run['name'], dest, conditions,
                tuple(measure_files(card)))
    report = read_card(card, staged)  # before the swap: evidence that does not derive stays out
    old = target.with_name(f'.{card.name}.old')
    if target.exists():
      target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return report
