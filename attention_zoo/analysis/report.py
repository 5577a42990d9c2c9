"""The comparison report of a sweep: mean ± std and a 95% confidence interval over seeds.

  report.json  {"primary": metric, "variants": [{"variant", "runs", "seeds", "metrics":
               {name: {"mean", "std", "ci95": [lo, hi], "values"}}, "num_params", "steps_per_s",
               "compile_s"}], "best": {metric: variant}, "failed": [...], "missing": [...]}
  report.md    the same as a table, the best variant per metric in bold
  plots/       learning_curves.png (validation metric vs step, mean with a ±std band over seeds),
               final_<metric>.png (bar chart of the final metric with 95% CIs)

The CI is the Student-t interval mean ± t(0.975, n-1) · std / √n (std with ddof=1); one seed
gives no interval (NaN). A run's final metrics are its results.json "test" split (else
"validation"); variants are the overrides other than the seed.
"""

from __future__ import annotations

import collections
import json
import math
import pathlib
from typing import Any

import numpy as np
from scipy import stats

from attention_zoo.sweeps.sweep import variant_name
from attention_zoo.train import workdir as wd

# Metrics where lower is better; every other metric is higher-is-better.
LOWER_IS_BETTER = ('loss', 'perplexity', 'bits_per_char', 'bpc', 'error')
# The metric plotted and ranked first, by preference.
PRIMARY = ('gen_exact_match', 'exact_match', 'accuracy', 'gen_token_accuracy', 'token_accuracy',
           'bleu', 'loss')
# The metrics shown in report.md when present (report.json has them all), in this order.
SHOWN = ('gen_exact_match', 'gen_token_accuracy', 'gen_bleu', 'bleu', 'accuracy', 'perplexity',
         'bits_per_char', 'loss')


def lower_is_better(metric: str) -> bool:
  return any(metric.endswith(s) for s in LOWER_IS_BETTER)


def summarize(values: list[float]) -> dict[str, Any]:
  """mean, std (ddof=1) and the 95% Student-t interval of the values."""
  x = np.asarray(values, np.float64)
  n = len(x)
  mean = float(x.mean())
  std = float(x.std(ddof=1)) if n > 1 else float('nan')
  half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else float('nan')
  return {'mean': mean, 'std': std, 'ci95': [mean - half, mean + half],
          'values': list(map(float, x))}


def _final_metrics(results: dict[str, Any]) -> dict[str, float]:
  split = 'test' if results.get('test') else 'validation'
  return {k: float(v) for k, v in (results.get(split) or {}).items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


def collect(sweep_dir: pathlib.Path) -> tuple[list[dict], list[str], list[str]]:
  """Runs of the sweep with results -> (runs, failed names, missing names)."""
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


def build(sweep_dir: str | pathlib.Path) -> dict[str, Any]:
  """The report as data (what report.json holds)."""
  sweep_dir = pathlib.Path(sweep_dir)
  runs, failed, missing = collect(sweep_dir)
  by_variant: dict[str, list[dict]] = collections.defaultdict(list)
  for run in runs:
    by_variant[run['variant']].append(run)
  variants = []
  for variant, group in by_variant.items():
    finals = [_final_metrics(r['results']) for r in group]
    names = sorted(set.intersection(*(set(f) for f in finals)))
    mean_of = lambda key: float(np.mean([r['results'].get(key) or 0.0 for r in group]))
    variants.append({
        'variant': variant, 'runs': [r['name'] for r in group],
        'seeds': [r['seed'] for r in group],
        'metrics': {m: summarize([f[m] for f in finals]) for m in names},
        'num_params': group[0]['results'].get('num_params'),
        'steps_per_s': mean_of('steps_per_s'), 'compile_s': mean_of('compile_s'),
    })
  metrics = sorted(set().union(*(v['metrics'] for v in variants))) if variants else []
  best = {}
  for m in metrics:
    scored = [(v['metrics'][m]['mean'], v['variant']) for v in variants if m in v['metrics']]
    best[m] = (min if lower_is_better(m) else max)(scored)[1]
  primary = next((p for p in PRIMARY if p in metrics), metrics[0] if metrics else None)
  return {'primary': primary, 'metrics': metrics, 'variants': variants, 'best': best,
          'failed': failed, 'missing': missing}


def _cell(s: dict[str, Any], bold: bool) -> str:
  if len(s['values']) > 1:
    text = f'{s["mean"]:.4f} ± {s["std"]:.4f} [{s["ci95"][0]:.4f}, {s["ci95"][1]:.4f}]'
  else:
    text = f'{s["mean"]:.4f}'  # one seed: no spread
  return f'**{text}**' if bold else text


def markdown(report: dict[str, Any], title: str) -> str:
  metrics = [m for m in SHOWN if m in report['metrics']] or report['metrics']
  lines = [f'# {title}', '',
           'Final test metrics per variant over seeds: mean ± std [95% CI]; the best variant per '
           'metric in bold (report.json has every metric).', '',
           '| variant | seeds | ' + ' | '.join(metrics) + ' | params | steps/s | compile s |',
           '|' + '---|' * (len(metrics) + 5)]
  for v in report['variants']:
    cells = [_cell(v['metrics'][m], report['best'][m] == v['variant']) if m in v['metrics']
             else '-' for m in metrics]
    lines.append(f'| {v["variant"]} | {len(v["seeds"])} | ' + ' | '.join(cells) +
                 f' | {v["num_params"]:,} | {v["steps_per_s"]:.1f} | {v["compile_s"]:.1f} |')
  for label in ('failed', 'missing'):
    if report[label]:
      lines += ['', f'{label.capitalize()} runs: ' + ', '.join(report[label])]
  return '\n'.join(lines) + '\n'


def plot(sweep_dir: pathlib.Path, report: dict[str, Any]) -> list[pathlib.Path]:
  """Learning curves with a band over seeds and a bar chart of the primary metric with CIs."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  primary = report['primary']
  if primary is None:
    return []
  out_dir = sweep_dir / wd.PLOTS
  out_dir.mkdir(exist_ok=True)
  runs, _, _ = collect(sweep_dir)
  fig, ax = plt.subplots(figsize=(8, 5))
  for v in report['variants']:
    curves = []
    for run in (r for r in runs if r['variant'] == v['variant']):
      rows = [r for r in run['metrics'] if r.get('split') == 'validation' and primary in r]
      curves.append({r['step']: r[primary] for r in rows})
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    if not steps:
      continue
    y = np.array([[c[s] for s in steps] for c in curves])  # [seeds, steps]
    mean, std = y.mean(0), y.std(0)
    ax.plot(steps, mean, label=v['variant'])
    ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
  ax.set_xlabel('step')
  ax.set_ylabel(f'validation {primary}')
  ax.set_title(f'validation {primary}: mean ± std over seeds')
  ax.legend(fontsize=8)
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
  ax.set_title(f'final {primary} (mean, 95% CI over seeds)')
  fig.tight_layout()
  bar_path = out_dir / f'final_{primary}.png'
  fig.savefig(bar_path, dpi=90)
  plt.close(fig)
  return [curves_path, bar_path]


def write(sweep_dir: str | pathlib.Path, title: str | None = None) -> dict[str, Any]:
  """Writes report.json, report.md and plots/ into the sweep dir; returns the report."""
  sweep_dir = pathlib.Path(sweep_dir)
  report = build(sweep_dir)
  (sweep_dir / wd.REPORT_JSON).write_text(json.dumps(report, indent=2) + '\n')
  plots = plot(sweep_dir, report)
  text = markdown(report, title or f'Sweep report: {sweep_dir.name}')
  text += ''.join(f'\n![{p.stem}]({wd.PLOTS}/{p.name})\n' for p in plots)
  (sweep_dir / wd.REPORT_MD).write_text(text)
  return report
