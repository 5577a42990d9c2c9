"""The comparison report of a sweep: each variant over seeds, paired tests against a baseline.

  report.json  {"primary": metric, "metrics": [every final metric], "baseline": variant,
               "alpha": 0.05,
               "variants": [{"variant", "runs", "seeds", "metrics": {name: {"n", "mean", "std",
                 "ci95": [lo, hi], "interval", "values"}}, "num_params", "steps_per_s",
                 "compile_s"}],
               "comparisons": [{"variant", "baseline", "metrics": {name: {"seeds", "n",
                 "mean_diff", "p_value", "test"}}}],          (every variant but the baseline)
               "best": {metric: variant or null}, "failed": [...], "missing": [...]}
  report.md    the variants' table (seeds listed; the significant winner of a metric in bold),
               one line per shown metric naming its winner or saying that no variant is
               distinguishable, and the paired differences against the baseline
  plots/       learning_curves.png (the train metric logged every train.log_every steps as lines,
               its validation values as markers, mean over seeds; a second panel with the
               validation primary metric when train rows do not log it), final_<metric>.png (bar
               chart of the final primary metric with its 95% intervals)

Statistics (attention_zoo.analysis.stats): "values" are the seeds' final metrics, in the order of
"seeds"; std has ddof=1; ci95 is the Student-t interval of the mean, clipped to the metric's range
for bounded metrics ("interval" says which); one seed gives NaN. A comparison is the two-sided
paired t-test of variant - baseline on the seeds both ran. "best"[m] is the variant better on m
than EVERY other variant at p < alpha (paired t-test each; an intersection-union test, so the
claim holds at level alpha without a multiple-comparison correction), else null. A run's final
metrics are its results.json "test" split (else "validation"); variants are the overrides other
than the seed, in the order the sweep lists them; the baseline is the first unless named.
"""

from __future__ import annotations

import collections
import json
import math
import pathlib
from typing import Any

import numpy as np

from attention_zoo.analysis.stats import bounds, paired_test, summarize
from attention_zoo.sweeps.plan import variant_name
from attention_zoo.train import workdir as wd

# Metrics where lower is better; every other metric is higher-is-better.
LOWER_IS_BETTER = ('loss', 'perplexity', 'bits_per_char', 'bpc', 'error')
# The metric plotted and ranked first, by preference (BLEU first: only translation tasks have it).
PRIMARY = ('gen_bleu', 'bleu', 'gen_exact_match', 'exact_match', 'accuracy', 'gen_token_accuracy',
           'token_accuracy', 'loss')
# The metrics shown in report.md when present (report.json has them all), in this order.
SHOWN = ('gen_bleu', 'bleu', 'gen_chrf', 'gen_exact_match', 'gen_token_accuracy', 'accuracy',
         'perplexity', 'bits_per_char', 'loss')
ALPHA = 0.05  # significance level of the paired tests


def lower_is_better(metric: str) -> bool:
  return any(metric.endswith(s) for s in LOWER_IS_BETTER)


def _final_metrics(results: dict[str, Any]) -> dict[str, float]:
  split = 'test' if results.get('test') else 'validation'
  return {k: float(v) for k, v in (results.get(split) or {}).items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


def collect(sweep_dir: pathlib.Path) -> tuple[list[dict], list[str], list[str]]:
  """Runs of the sweep with results, in listing order -> (runs, failed names, missing names)."""
  sweep = wd.read_json(sweep_dir / wd.SWEEP)
  runs, failed, missing = [], [], []
  for entry in sweep['runs']:
    run_dir = sweep_dir / wd.RUNS / entry['name']
    if (run_dir / wd.RESULTS).exists():
      overrides = entry['overrides']
      runs.append({'name': entry['name'],
                   'variant': variant_name(entry.get('arg'), overrides, sweep.get('arg')),
                   'seed': overrides.get('seed', 0),
                   'results': wd.read_json(run_dir / wd.RESULTS),
                   'metrics': wd.read_jsonl(run_dir / wd.METRICS)})
    elif (run_dir / wd.ERROR).exists():
      failed.append(entry['name'])
    else:
      missing.append(entry['name'])
  return runs, failed, missing


def _per_seed(variant: dict[str, Any], metric: str) -> dict[int, float]:
  """{seed: final value of `metric`} of one variant of the report."""
  return dict(zip(variant['seeds'], variant['metrics'][metric]['values'], strict=True))


def winner(variants: list[dict[str, Any]], metric: str, alpha: float = ALPHA) -> str | None:
  """The variant better on `metric` than every other variant at p < alpha (paired t-test on
  their shared seeds), or None. At most one variant can be: two that each beat the other would
  need differences of both signs on the same seeds."""
  sign = -1.0 if lower_is_better(metric) else 1.0
  scores = {v['variant']: _per_seed(v, metric) for v in variants if metric in v['metrics']}
  for name, a in scores.items():
    tests = [paired_test(a, b) for other, b in scores.items() if other != name]
    if tests and all(t['p_value'] < alpha and sign * t['mean_diff'] > 0 for t in tests):
      return name
  return None


def build(sweep_dir: str | pathlib.Path, baseline: str | None = None) -> dict[str, Any]:
  """The report as data (what report.json holds); `baseline`: the variant the others are
  compared with (default: the first listed). ValueError names the variants if it is unknown."""
  sweep_dir = pathlib.Path(sweep_dir)
  runs, failed, missing = collect(sweep_dir)
  by_variant: dict[str, list[dict]] = collections.defaultdict(list)  # listing order
  for run in runs:
    by_variant[run['variant']].append(run)
  if baseline is None:
    baseline = next(iter(by_variant), None)
  elif baseline not in by_variant:
    raise ValueError(f'unknown baseline variant {baseline!r}; variants with results: '
                     f'{", ".join(by_variant) or "none"}')
  variants = []
  for variant, group in by_variant.items():
    finals = [_final_metrics(r['results']) for r in group]
    names = sorted(set.intersection(*(set(f) for f in finals)))
    mean_of = lambda key: float(np.mean([r['results'].get(key) or 0.0 for r in group]))
    variants.append({
        'variant': variant, 'runs': [r['name'] for r in group],
        'seeds': [r['seed'] for r in group],
        'metrics': {m: summarize([f[m] for f in finals], bounds(m)) for m in names},
        'num_params': group[0]['results'].get('num_params'),
        'steps_per_s': mean_of('steps_per_s'), 'compile_s': mean_of('compile_s'),
    })
  metrics = sorted(set().union(*(v['metrics'] for v in variants))) if variants else []
  base = next((v for v in variants if v['variant'] == baseline), None)
  comparisons = [
      {'variant': v['variant'], 'baseline': baseline,
       'metrics': {m: paired_test(_per_seed(v, m), _per_seed(base, m))
                   for m in metrics if m in v['metrics'] and m in base['metrics']}}
      for v in variants if v is not base]
  primary = next((p for p in PRIMARY if p in metrics), metrics[0] if metrics else None)
  return {'primary': primary, 'metrics': metrics, 'baseline': baseline, 'alpha': ALPHA,
          'variants': variants, 'comparisons': comparisons,
          'best': {m: winner(variants, m) for m in metrics}, 'failed': failed,
          'missing': missing}


def _cell(s: dict[str, Any], bold: bool) -> str:
  if len(s['values']) > 1:
    text = f'{s["mean"]:.4f} ± {s["std"]:.4f} [{s["ci95"][0]:.4f}, {s["ci95"][1]:.4f}]'
  else:
    text = f'{s["mean"]:.4f}'  # one seed: no spread
  return f'**{text}**' if bold else text


def _diff_cell(t: dict[str, Any] | None) -> str:
  if t is None or not t['n']:
    return '-'
  p = 'p n/a' if math.isnan(t['p_value']) else f'p = {t["p_value"]:.3g}'
  return f'{t["mean_diff"]:+.4f} ({p})'


def seeds_cell(seeds: list[int]) -> str:
  """'3 (0, 1, 2)': how many seeds, and which (a bare '0' would read as none)."""
  return f'{len(seeds)} ({", ".join(map(str, seeds))})' if seeds else '-'


def markdown(report: dict[str, Any], title: str) -> str:
  metrics = [m for m in SHOWN if m in report['metrics']] or report['metrics']
  alpha = report['alpha']
  intervals = {}
  for v in report['variants']:
    for m in metrics:
      if m in v['metrics']:
        intervals.setdefault(m, v['metrics'][m]['interval'])
  lines = [f'# {title}', '',
           'Final test metrics per variant over seeds: mean ± std [95% CI of the mean] '
           '(report.json has every metric). Intervals: ' +
           '; '.join(f'{m}: {label}' for m, label in intervals.items()) + '. Bold: the variant '
           f'better than every other variant at p < {alpha} (two-sided paired t-test on the '
           'seeds both ran).', '',
           '| variant | n (seeds) | ' + ' | '.join(metrics) + ' | params | steps/s | compile s |',
           '|' + '---|' * (len(metrics) + 5)]
  for v in report['variants']:
    cells = [_cell(v['metrics'][m], report['best'][m] == v['variant']) if m in v['metrics']
             else '-' for m in metrics]
    lines.append(f'| {v["variant"]} | {seeds_cell(v["seeds"])} | ' + ' | '.join(cells) +
                 f' | {v["num_params"]:,} | {v["steps_per_s"]:.1f} | {v["compile_s"]:.1f} |')
  lines.append('')
  for m in metrics:
    best = report['best'][m]
    lines.append(f'- {m}: no variant is distinguishable at p < {alpha} on {m}' if best is None
                 else f'- {m}: {best} is better than every other variant at p < {alpha}')
  if report['comparisons']:
    lines += ['', f'## Paired differences against the baseline, {report["baseline"]}', '',
              f'variant - {report["baseline"]} on the seeds both ran: mean difference (p-value '
              'of the two-sided paired t-test).', '',
              '| variant | n (shared seeds) | ' + ' | '.join(metrics) + ' |',
              '|' + '---|' * (len(metrics) + 2)]
    for c in report['comparisons']:
      shared = next(iter(c['metrics'].values()), {'seeds': []})['seeds']
      lines.append(f'| {c["variant"]} | {seeds_cell(shared)} | ' +
                   ' | '.join(_diff_cell(c['metrics'].get(m)) for m in metrics) + ' |')
  for label in ('failed', 'missing'):
    if report[label]:
      lines += ['', f'{label.capitalize()} runs: ' + ', '.join(report[label])]
  return '\n'.join(lines) + '\n'


def curve_points(rows: list[dict[str, Any]], metric: str) -> dict[str, tuple[list, list]]:
  """One run's learning curve of `metric` from its metrics.jsonl rows: {split: (steps, values)}
  for 'train' (logged every train.log_every steps) and 'validation' (every train.eval_every
  steps from step 0, and the final evaluation), in step order; a step logged twice keeps the
  last row."""
  out = {}
  for split in ('train', 'validation'):
    points = {r['step']: r[metric] for r in rows if r.get('split') == split and metric in r}
    steps = sorted(points)
    out[split] = (steps, [points[s] for s in steps])
  return out


def _mean_curve(curves: list[tuple[list, list]]) -> dict[str, list]:
  """{'steps', 'mean', 'std'} over seeds (>= 1 curve) on the steps every seed logged."""
  common = sorted(set.intersection(*(set(steps) for steps, _ in curves)))
  y = np.array([[dict(zip(*c))[s] for s in common] for c in curves], np.float64)
  y = y.reshape(len(curves), len(common))  # [seeds, steps]
  return {'steps': common, 'mean': y.mean(0).tolist(), 'std': y.std(0).tolist()}


def learning_curves(runs: list[dict[str, Any]], primary: str) -> dict[str, Any]:
  """What learning_curves.png draws: {'train_metric': m, 'primary': primary, 'variants':
  {variant: {'train', 'validation', 'primary'}}}, each {'steps', 'mean', 'std'} over seeds.
  m is `primary` when the train rows log it, else 'loss'; 'validation' is m on the validation
  split, 'primary' the validation primary metric (the second panel when m differs)."""
  logged = any(r.get('split') == 'train' and primary in r for run in runs for r in run['metrics'])
  metric = primary if logged else 'loss'
  by_variant: dict[str, list[dict]] = collections.defaultdict(list)
  for run in runs:
    by_variant[run['variant']].append(run)
  variants = {}
  for variant, group in by_variant.items():
    own = [curve_points(r['metrics'], metric) for r in group]
    main = [curve_points(r['metrics'], primary)['validation'] for r in group]
    variants[variant] = {'train': _mean_curve([c['train'] for c in own]),
                         'validation': _mean_curve([c['validation'] for c in own]),
                         'primary': _mean_curve(main)}
  return {'train_metric': metric, 'primary': primary, 'variants': variants}


def plot(sweep_dir: pathlib.Path, report: dict[str, Any]) -> list[pathlib.Path]:
  """Learning curves (train lines, validation markers, ±std bands over seeds) and a bar chart of
  the primary metric with its 95% intervals."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  primary = report['primary']
  if primary is None:
    return []
  out_dir = sweep_dir / wd.PLOTS
  out_dir.mkdir(exist_ok=True)
  runs, _, _ = collect(sweep_dir)
  data = learning_curves(runs, primary)
  metric = data['train_metric']
  two = metric != primary
  fig, axes = plt.subplots(1, 2 if two else 1, figsize=(14 if two else 8, 5), squeeze=False)
  for i, (variant, d) in enumerate(data['variants'].items()):
    color = f'C{i % 10}'
    train, val = d['train'], d['validation']
    mean, std = np.array(train['mean']), np.array(train['std'])
    axes[0, 0].plot(train['steps'], mean, color=color, label=variant)
    axes[0, 0].fill_between(train['steps'], mean - std, mean + std, color=color, alpha=0.15)
    axes[0, 0].plot(val['steps'], val['mean'], 'o', color=color, markersize=5)
    if two:
      axes[0, 1].plot(d['primary']['steps'], d['primary']['mean'], 'o-', color=color,
                      markersize=5, linewidth=0.8, label=variant)
  axes[0, 0].set_title(f'{metric}: train (lines, every log_every steps) and validation '
                       '(markers); mean over seeds, ±std band', fontsize=9)
  axes[0, 0].set_ylabel(metric)
  if two:
    axes[0, 1].set_title(f'validation {primary}, mean over seeds', fontsize=9)
    axes[0, 1].set_ylabel(f'validation {primary}')
  for ax in axes[0]:
    ax.set_xlabel('step')
    ax.legend(fontsize=7)
  fig.tight_layout()
  curves_path = out_dir / 'learning_curves.png'
  fig.savefig(curves_path, dpi=90)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(8, 4.5))
  names = [v['variant'] for v in report['variants'] if primary in v['metrics']]
  stats_ = [v['metrics'][primary] for v in report['variants'] if primary in v['metrics']]
  means = np.array([s['mean'] for s in stats_])
  err = np.array([[s['mean'] - s['ci95'][0], s['ci95'][1] - s['mean']] for s in stats_]).T
  ax.bar(range(len(names)), means, yerr=np.nan_to_num(err), capsize=4, color='tab:blue')
  ax.set_xticks(range(len(names)), names, rotation=30, ha='right', fontsize=8)
  ax.set_ylabel(f'final {primary}')
  label = stats_[0]['interval'] if stats_ else 't'
  ax.set_title(f'final {primary} (mean, 95% CI over seeds: {label})')
  fig.tight_layout()
  bar_path = out_dir / f'final_{primary}.png'
  fig.savefig(bar_path, dpi=90)
  plt.close(fig)
  return [curves_path, bar_path]


def write(sweep_dir: str | pathlib.Path, title: str | None = None,
          baseline: str | None = None) -> dict[str, Any]:
  """Writes report.json, report.md and plots/ into the sweep dir; returns the report."""
  sweep_dir = pathlib.Path(sweep_dir)
  report = build(sweep_dir, baseline)
  (sweep_dir / wd.REPORT_JSON).write_text(json.dumps(report, indent=2) + '\n')
  plots = plot(sweep_dir, report)
  text = markdown(report, title or f'Sweep report: {sweep_dir.name}')
  text += ''.join(f'\n![{p.stem}]({wd.PLOTS}/{p.name})\n' for p in plots)
  (sweep_dir / wd.REPORT_MD).write_text(text)
  return report
