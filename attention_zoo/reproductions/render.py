"""REPRODUCTIONS.md and the README's card tables, drawn from the cards' derived reports alone.

`evidence` is card name -> its report, derived from the committed runs and the card's definition
(attention_zoo.reproductions.evidence.load); nothing here reads a run or computes a statistic, so
the committed text is a function of the committed runs and cards.py, and
attention_zoo.reproductions.check compares the committed text with this rendering: no number in
them is typed by hand.
"""

from __future__ import annotations

from typing import Any

from attention_zoo.analysis import report as sweep_report
from attention_zoo.reproductions.cards import CARDS


# A measures card's column saying what each run's number was read from, by measures section.
READ_HEADER = {'alignment': 'attention read (chosen on {select_split})',
               'se_selectivity': 'blocks measured'}


def _pm(s: dict[str, Any] | None, scale: float, digits: int) -> str:
  if not s:
    return '-'
  mean = s['mean'] * scale
  if s['n'] < 2:
    return f'{mean:.{digits}f}'
  lo, hi = (v * scale for v in s['ci95'])
  return f'{mean:.{digits}f} ± {s["std"] * scale:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]'


def _shown_digits(s: dict[str, Any] | None) -> int:
  """Decimals of a shown metric as stored: 4 for a fraction (token accuracy 0.9869), 2 for a
  0-100 score (chrF 56.77)."""
  return 4 if not s or abs(s['mean']) <= 1.0 else 2


def _delta(test: dict[str, Any] | None, scale: float, digits: int) -> str:
  if not test or test['n'] < 2:
    return '-'
  return f'{test["mean_diff"] * scale:+.{digits}f} (p = {test["p_value"]:.3f})'


def _minutes(seconds: float | None) -> str:
  return '-' if seconds is None else f'{seconds / 60:.1f} min'


def table(report: dict[str, Any]) -> str:
  """The card's table: one row per variant."""
  scale, digits = report['scale'], report['digits']
  metric = report['metric_label']
  extra = report['shown']
  vs = report.get('baseline_label') or report.get('versus_label')  # the Δ column's other row
  papers = any(r['paper'] is not None for r in report['rows'])
  targets = any(r['target'] is not None for r in report['rows'])
  picks = any(r.get('selected') for r in report['rows'])
  against = report.get('against')
  read = any(r.get('measured') for r in report['rows'])
  head = (['', *(['paper'] if papers else []), *(['target (source)'] if targets else []),
           f'ours: {metric}',
           *(['ours: the selected seed'] if picks else []), *[f'{m}' for m in extra],
           *([f'Δ vs {vs} (p)'] if vs else []),
           *([f'Δ vs {against} (p)'] if against else []),
           *([READ_HEADER[report['measures']['section']].format(**report['measures'])]
             if read else []),
           'n (seeds)', 'verdict',
           'wall time / run', 'tokens/s'])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in report['rows']:
    paper = '-' if r['paper'] is None else f'{r["paper"]:g}'
    if r['reference']:
      paper += f' ({r["reference"]})'
    pick = r.get('selected')
    target = '-' if r['target'] is None else f'{r["target"]:g} ({r["target_source"]})'
    cells = [r['label'], *([paper] if papers else []), *([target] if targets else []),
             _pm(r['summary'], scale, digits),
             *([f'{pick["value"] * scale:.{digits}f} (seed {pick["seed"]} of {pick["of"]})'
                if pick else '-'] if picks else []),
             *[_pm(r['shown'].get(m), 1.0, _shown_digits(r['shown'].get(m))) for m in extra],
             *([_delta(r.get('paired'), scale, digits)] if vs else []),
             *([_delta(r.get('vs_against'), scale, digits)] if against else []),
             *([', '.join(f'{k} ({n} of {len(r["runs"])})' for k, n in r['measured'].items())
                or '-'] if read else []),
             sweep_report.seeds_cell(r['seeds']), f'{r["verdict"]}: {r["reason"]}',
             _minutes(r['wall_s']),
             '-' if r['tokens_per_s'] is None else f'{r["tokens_per_s"]:,.0f}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  if report.get('aggregate'):
    lines += ['', aggregate_line(report)]
  return '\n'.join(lines) + '\n'


def aggregate_line(report: dict[str, Any]) -> str:
  """The mean over the card's rows (and its failures), by each statistic, beside the paper's."""
  agg, digits = report['aggregate'], report['digits']

  def text(s: dict[str, Any] | None) -> str:
    if not s:
      return '-'
    failed = '' if s.get('failed') is None else f', {s["failed"]} failed'
    return f'{s["mean"]:.{digits}f}{failed}'

  over = f'> {agg["fail_above"]:g}' if report.get('complement') else f'< {agg["fail_above"]:g}'
  parts = [f'paper {text(agg["paper"])}', f'ours, mean over seeds {text(agg["seeds"])}']
  if report.get('selection'):
    parts.append(f'ours, the selected seeds {text(agg["selected"])}')
  fails = f' (failed: {over})' if agg['fail_above'] is not None else ''
  return (f'**Mean over the {agg["n_rows"]} rows{fails}:** ' + '; '.join(parts) +
          f'. Target {agg["target"]:g} ({agg["source"]}).')


def measures_text(report: dict[str, Any]) -> str:
  """How a measures card's numbers are measured ('' for other cards)."""
  m = report.get('measures')
  if not m:
    return ''
  text = (f'; the measures of each run\'s final checkpoint on the first {m["examples"]:,} '
          f'examples of each of {", ".join(m["splits"])} (measures_<split>.json)')
  text += {'alignment': f'; a model with several source-target attention arrays is read at the '
                        f'one (layer, head; a memory network\'s hop) whose {report["metric"]} is '
                        f'highest on {m["select_split"]}, per run',
           'se_selectivity': '; the card\'s number is the deepest SE block\'s'}[m['section']]
  if report.get('against'):
    text += (f'; Δ vs {report["against"]}: the paired t-test over seeds of each run\'s '
             f'{report["metric"]} against its {report["against"]}')
  return text


def power_lines(report: dict[str, Any]) -> list[str]:
  """The power of each comparison a verdict rests on (derive.power_entries), one item each; []
  when the card has none."""
  entries, digits = report.get('power') or [], report['digits']
  if not entries:
    return []
  e0 = entries[0]
  out = [f'**Power** (two-sided t-tests at α = {e0["alpha"]:g}, {e0["power"]:.0%} power asked; '
         'estimated from the committed per-seed differences, whose spread over so few seeds is '
         'itself uncertain):', '']
  for e in entries:
    seeds = ', '.join(map(str, e['seeds']))
    needed = e['seeds_needed']
    if needed is None:
      need = 'no number of seeds up to 100,000 would detect it: cannot be decided at this size'
    elif e['decidable']:
      need = f'{needed:,} seeds would detect it'
    else:
      need = (f'{needed:,} seeds would detect it, more than the {report["seed_budget"]} this '
              'project runs for one comparison: cannot be decided at this size')
    pilot = e.get('pilot')
    asked = (f' The pilot (seeds {", ".join(map(str, pilot["seeds"]))}) read '
             f'{pilot["mean_diff"]:+.{digits}f}, sd {pilot["std"]:.{digits}f}, and asked for '
             f'{pilot["seeds_needed"]:,} seeds.' if pilot and pilot['seeds_needed'] else '')
    out.append(f'- {e["label"]} ({e["test"]} over seeds {seeds}): {e["mean_diff"]:+.{digits}f}, '
               f'sd {e["std"]:.{digits}f}, p = {e["p_value"]:.3f}, power now '
               f'{e["power_now"]:.2f}: {need}; {e["n"]} seeds detect '
               f'±{e["detectable"]:.{digits}f} or more.{asked}')
  return out


def plateau_lines(report: dict[str, Any]) -> list[str]:
  """The plateau rule on each row the card names (derive.plateau): the last two validation
  evaluations per seed, their means, and whether the row still rises; [] when it names none."""
  digits, out = report['digits'], []
  for e in report.get('plateaus') or []:
    if not e['seeds']:
      out.append(f'- {e["label"]}: no run has a validation curve of {e["metric"]} '
                 f'({e["missing"]} without): the rule cannot be read.')
      continue
    per_seed = '; '.join(
        f'seed {s["seed"]} ' + ' → '.join(f'{v:.{digits}f} (step {step:,})'
                                          for step, v in s['last_two']) for s in e['seeds'])
    state = ('still rising: a longer run is what validation asks for' if e['rising'] else
             'not rising: at its plateau')
    out.append(f'- {e["label"]}, validation {e["metric"]} at the last two evaluations: '
               f'{per_seed}; mean {e["mean_before"]:.{digits}f} → {e["mean_last"]:.{digits}f}, '
               f'{state}' + (f' ({e["missing"]} run(s) without a curve left out)'
                             if e['missing'] else '') + '.')
  if out:
    out = ['**Training length, on validation** (the plateau rule: the mean over seeds does not '
           'rise between the last two evaluations):', ''] + out
  return out


def length_lines(report: dict[str, Any]) -> list[str]:
  """Each row whose runs chose their length on validation (derive.chosen_length): per seed the
  validation curve, the step of its best value and the checkpoints averaged there; []: none."""
  digits, out = report['digits'], []
  for e in report.get('lengths') or []:
    for s in e['seeds']:
      curve = ', '.join(f'**{step:,}: {v:.{digits}f}**' if step == s['step'] else
                        f'{step:,}: {v:.{digits}f}' for step, v in s['curve'])
      steps = s['averaged_steps']
      window = f'{steps[0]:,}–{steps[-1]:,}' if len(steps) > 1 else f'{steps[0]:,}'
      where = ('the last validated step: at the end of the run\'s budget validation had not '
               'stopped improving' if s['step'] == s['last'] else
               f'before the last validated step ({s["last"]:,})')
      out.append(f'- {e["label"]}, seed {s["seed"]}, validation {e["metric"]} (step: value): '
                 f'{curve}. The {"highest" if e["mode"] == "max" else "lowest"} is at step '
                 f'{s["step"]:,}, {where}; the final evaluation averages the checkpoints of '
                 f'steps {window} and reads the test split there, once.')
  if out:
    out = ['**Training length, on validation** (the step of the best periodic validation, '
           'greedy decoding, among every validation of the run; attention_zoo/train/'
           'selection.py):', ''] + out
  return out


def evidence_line(report: dict[str, Any]) -> str:
  """What the card's numbers are derived from, and what its runs lack."""
  ev, name = report['evidence'], report['card']
  rerun = f'`python -m experiments.reproduce --card={name}` reruns them'
  old = ev['runs'] - ev['results']  # runs kept as the earlier report's records
  runs = f'{ev["runs"]} run' + ('' if ev['runs'] == 1 else 's')
  text = f'**Evidence:** {runs} in `reproductions/{name}/runs/`, each with its config'
  if not old:
    text += ', results.json and validation curve.'
  elif old == ev['runs']:
    text += (' and the final metrics an earlier report kept of it (record.json); none has a '
             f'validation curve: they predate per-run files ({rerun}).')
  else:
    text += (f'; {ev["results"]} with results.json and validation curve, {old} with only the '
             f'final metrics an earlier report kept (record.json), no curve: they predate '
             f'per-run files ({rerun}).')
  if ev['row_level']:
    what = {'wall_s': 'wall time', 'tokens_per_s': 'tokens/s', 'steps_per_s': 'steps/s',
            'selected_seed': 'training error (which picks the selected seed)'}
    text += (' Per-run ' + ', '.join(v for k, v in what.items() if k in ev['row_level']) +
             ': not committed; '
             'the table shows the earlier report\'s row-level numbers (legacy.json), which '
             'cannot be recomputed from the runs.')
  return text


def section(report: dict[str, Any]) -> str:
  """A card's section of REPRODUCTIONS.md."""
  out = [f'## {report["title"]} (`{report["card"]}`)', '',
         f'**Paper:** {report["paper"]}', '', f'**Claim:** {report["claim"]}', '',
         f'**Verdict:** {report["verdict"]}: {report["reason"]}', '',
         *(power + [''] if (power := power_lines(report)) else []),
         *(plateau + [''] if (plateau := plateau_lines(report)) else []),
         *(length + [''] if (length := length_lines(report)) else []),
         f'**Command:** `{report["command"]}` (config `{report["config"]}`; total run time '
         f'{_minutes(report["wall_s"])} on {report["machine"]}'
         + (f'; {report["conditions"]}' if report.get('conditions') else '') + ')', '',
         f'**Statistics:** {report["statistics"]}'
         + (f'; selected seed: {report["selection"]}' if report.get('selection') else '')
         + measures_text(report), '',
         evidence_line(report), '', table(report)]
  for key, value in sorted(report.get('signatures', {}).items()):
    out.append(f'sacrebleu {key}: `{value}`  ')
  if report['sources']:
    out += ['', 'Sources of the targets:', '']
    out += [f'- {d}' for d in report['sources']]
  if report['deviations']:
    out += ['', 'Deviations from the paper kept:', '']
    out += [f'- {d}' for d in report['deviations']]
  if report['choices']:
    out += ['', 'How its choices were made:', '']
    out += [f'- {c}' for c in report['choices']]
  return '\n'.join(out).rstrip() + '\n'


def render(evidence: dict[str, dict[str, Any]]) -> str:
  """REPRODUCTIONS.md."""
  missing = [name for name in CARDS.names() if name not in evidence]
  out = ['# Reproductions', '',
         '<!-- Generated by `python -m experiments.reproduce --docs` from reproductions/*/runs/ '
         'and attention_zoo/reproductions/cards.py; do not edit by hand. -->', '',
         'Each card runs a sweep with `python -m experiments.reproduce --card=NAME` and commits, '
         'per run, the small files a reader needs to recompute it (`reproductions/NAME/runs/RUN/`: '
         'the resolved config, results.json and the validation curve); every number below is '
         'derived from those files and the card\'s definition in '
         '`attention_zoo/reproductions/cards.py` each time this file is drawn, and a test '
         'recomputes it. Verdicts: *reproduced* (the target is met by the mean over seeds), '
         '*not reproduced* (it is not; the reason gives both numbers), *reported* (no target). '
         'Every target names its source (a paper\'s table, a public repository); one with none '
         'cited is marked *reported*. A card that reads attention measures of its runs\' '
         'checkpoints (committed per run as measures_<split>.json) judges each row against a '
         'per-run number, such as the chance level, with a paired t-test: *reproduced* when '
         'above it at p < 0.05, *not measured* when the model has no such attention. Where a '
         'verdict rests on noise, the card states its power: the seeds needed to decide it.', '']
  if missing:
    out += ['Cards without evidence yet: ' + ', '.join(f'`{m}`' for m in missing) + '.', '']
  out += [section(evidence[name]) for name in sorted(evidence)]
  return '\n'.join(out).rstrip() + '\n'


def readme_blocks(evidence: dict[str, dict[str, Any]]) -> dict[str, str]:
  """marker name -> the generated text between `<!-- card:NAME -->` and `<!-- /card:NAME -->`:
  the card's table, then its power where a verdict rests on noise."""
  def block(report: dict[str, Any]) -> str:
    power = power_lines(report)
    return table(report) + ('\n' + '\n'.join(power) + '\n' if power else '')
  return {name: block(report) for name, report in evidence.items() if report.get('readme')}


def splice(text: str, blocks: dict[str, str]) -> str:
  """`text` with each `<!-- card:NAME -->...<!-- /card:NAME -->` block replaced by blocks[NAME]."""
  for name, body in blocks.items():
    start, end = f'<!-- card:{name} -->', f'<!-- /card:{name} -->'
    if start not in text or end not in text:
      continue
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    text = f'{head}{start}\n{body}{end}{tail}'
  return text
