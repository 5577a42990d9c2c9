# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Reading a sweep: intervals, paired tests, learning curves
#
# One run is an anecdote: another seed gives another number. The zoo compares variants over
# seeds. A sweep (`attention_zoo.sweeps.run_sweep`, what `python -m experiments.sweep` runs) is
# a config's `get_sweep(arg)`: every variant with each seed, one workdir per run; its report
# (`attention_zoo.analysis.report`) gives, per variant and metric,
#
# - the mean and standard deviation over seeds, and the 95% Student-t interval of the mean,
#   $\bar x \pm t_{0.975,\,n-1}\, s / \sqrt n$, clipped to the metric's range
#   (`analysis.stats.summarize`);
# - per variant, the two-sided **paired** t-test against the baseline on the seeds both ran
#   (Student 1908): $d_s = a_s - b_s$, $t = \bar d / (s_d / \sqrt n)$; pairing by seed removes
#   what the seed does to both (its initialization and data order);
# - the learning curves: train metrics every `log_every` steps, validation every `eval_every`.
#
# The sweep here is the Transformer's **combine** axis on dates (`configs/dates_transformer.py`,
# axis=combine): the residual sublayer $x + f(x)$ against the gated one
# $x + \sigma(W_g[x; f]) \odot f$, at the config's `tiny` size (20 steps), 3 seeds each, two runs
# at a time. At that size the two are not expected to differ: the point is how to read the
# report. `make demo` leaves a real sweep in `runs/demo` (8 variants, 3 seeds, 1,200-1,500
# steps): set `SPEC = 'configs/dates_demo.py'` and `SWEEP = pathlib.Path('runs/demo')` below to
# read it instead (its finished runs are skipped, not trained again).
#
# **What this notebook asserts:** the report's intervals and p-values equal a direct
# computation with scipy from the per-seed values it lists, and every variant's mean train loss
# falls from its first to its last logged step.

# %%
import json
import pathlib
import sys

import numpy as np
from IPython.display import Image, Markdown, display
from scipy import stats as scipy_stats

import attention_zoo
from attention_zoo import sweeps
from attention_zoo.analysis import report, stats

# notebooks/notebook_setup.py: the repository root (found through the installed package) as the
# working directory, SIZE and RUNS from the environment, treescope as the renderer.
sys.path.insert(0, str(pathlib.Path(attention_zoo.__file__).resolve().parents[1]))
from notebooks.notebook_setup import setup  # noqa: E402

ROOT, SIZE, RUNS = setup()

# %% [markdown]
# ## Run the sweep
#
# Each variant's 3 seeds train as one program in one child process (`experiments.main`); a
# finished run is skipped when the cell runs again.

# %%
SPEC = 'configs/dates_transformer.py:axis=combine,size=tiny,seeds=3'
SWEEP = RUNS / 'sweep_combine'
for run in sweeps.expand(SPEC):
  print(run.name, run.overrides)
status = sweeps.run_sweep(SPEC, SWEEP, parallel=2, root=ROOT)
print(status)
assert set(status.values()) <= {'done', 'skipped'}, status

# %% [markdown]
# ## The report
#
# `report.write` reads every run's `results.json` and `metrics.jsonl` and writes `report.json`,
# `report.md` and the plots. The table: mean ± std [95% interval] per variant; below it, the
# paired differences against the baseline (the first variant).

# %%
found = report.write(SWEEP, title='combine axis, dates Transformer (tiny)')
text = (SWEEP / 'report.md').read_text()
display(Markdown(text.split('\n![')[0]))  # the plots follow as images

# %% [markdown]
# The same report as data (`report.json`), rendered by treescope: unfold a variant to see its
# per-seed values.

# %%
found

# %% [markdown]
# ## One interval, by hand
#
# The report keeps each variant's per-seed values; the interval is a function of them alone.

# %%
METRIC = 'accuracy'  # teacher-forced token accuracy: it varies between seeds even at 20 steps
by_variant = {v['variant']: v for v in found['variants']}
for name, variant in by_variant.items():
  s = variant['metrics'][METRIC]
  values = np.asarray(s['values'])
  n = len(values)
  half = scipy_stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)
  low, high = stats.bounds(METRIC)
  by_hand = np.clip([values.mean() - half, values.mean() + half], low, high)
  print(f'{name}: seeds {variant["seeds"]}, values {np.round(values, 4)}')
  print(f'  report: {s["mean"]:.4f} [{s["ci95"][0]:.4f}, {s["ci95"][1]:.4f}] ({s["interval"]}); '
        f'by hand: [{by_hand[0]:.4f}, {by_hand[1]:.4f}]')
  np.testing.assert_allclose(s['ci95'], by_hand, rtol=1e-9)
  np.testing.assert_allclose(s['mean'], values.mean(), rtol=1e-12)

# %% [markdown]
# ## One paired test, by hand
#
# The same seeds of the two variants, paired: `scipy.stats.ttest_rel`.

# %%
for comparison in found['comparisons']:
  test = comparison['metrics'][METRIC]
  a = dict(zip(by_variant[comparison['variant']]['seeds'],
               by_variant[comparison['variant']]['metrics'][METRIC]['values']))
  b = dict(zip(by_variant[comparison['baseline']]['seeds'],
               by_variant[comparison['baseline']]['metrics'][METRIC]['values']))
  shared = sorted(set(a) & set(b))
  by_hand = scipy_stats.ttest_rel([a[s] for s in shared], [b[s] for s in shared])
  print(f'{comparison["variant"]} - {comparison["baseline"]}: mean difference '
        f'{test["mean_diff"]:+.4f} on seeds {test["seeds"]}, p = {test["p_value"]:.3f} '
        f'(scipy: {by_hand.pvalue:.3f})')
  assert test['seeds'] == shared
  np.testing.assert_allclose(test['p_value'], by_hand.pvalue, rtol=1e-9)
  verdict = 'distinguishable' if test['p_value'] < found['alpha'] else 'not distinguishable'
  print(f'  at alpha = {found["alpha"]}: {verdict} on {METRIC}')

# %% [markdown]
# ## Learning curves
#
# `report.learning_curves` is what the plot draws: per variant, the mean over seeds (and its
# std) of the train metric at every logged step (here the loss: the primary metric, greedy exact
# match, is measured on validation only), and of the validation metric.

# %%
display(Image(filename=str(SWEEP / 'plots' / 'learning_curves.png')))
runs, _, _ = report.collect(SWEEP)
curves = report.learning_curves(runs, found['primary'])
assert curves['train_metric'] == 'loss'  # train rows do not log the primary (greedy decoding)
for name, curve in curves['variants'].items():
  train = curve['train']
  print(f'{name}: train {curves["train_metric"]} at steps {train["steps"]}: '
        f'{np.round(train["mean"], 3)}')
  assert train['mean'][-1] < train['mean'][0], (name, train['mean'])
print(json.dumps({k: found[k] for k in ('primary', 'baseline', 'best')}, indent=1))
