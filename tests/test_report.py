"""The sweep report: bounded intervals, paired tests, significant winners and learning curves,
against hand-written numpy over fake sweep dirs (and one real tiny run for the curves)."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats

from attention_zoo import sweeps
from attention_zoo.analysis import report, stats
from attention_zoo.train import workdir as wd
from attention_zoo.train.loop import train_and_evaluate
from tests import fixtures as h

REPO = pathlib.Path(__file__).resolve().parents[1]
T_975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}  # Student t quantiles (tables)
TRAIN_STEPS = range(10, 101, 10)  # the fake runs log train rows every 10 steps to 100
VALIDATION_STEPS = (0, 50, 100)


def _t_interval(x):
  """The Student-t 95% interval of the mean of x, by hand."""
  x = np.asarray(x, np.float64)
  half = T_975[len(x) - 1] * x.std(ddof=1) / np.sqrt(len(x))
  return [x.mean() - half, x.mean() + half]


def _fake_sweep(tmp_path, table, *, seeds=None):
  """table: {variant overrides (tuple of items): [test accuracy per seed]} -> sweep dir, runs
  listed in the table's order; seeds: {items: [seed per value]} (default 0, 1, ...)."""
  runs = []
  for items, accs in table.items():
    for seed, acc in zip((seeds or {}).get(items, range(len(accs))), accs):
      overrides = dict(items, seed=seed)
      name = sweeps.run_name(overrides)
      run_dir = tmp_path / wd.RUNS / name
      run_dir.mkdir(parents=True)
      results = {'test': {'accuracy': acc, 'loss': 1.0 - acc}, 'num_params': 123,
                 'steps_per_s': 10.0 + seed, 'compile_s': 2.0}
      (run_dir / wd.RESULTS).write_text(json.dumps(results))
      rows = [{'step': s, 'split': 'train', 'loss': 2.0 - acc * s / 100 + seed}
              for s in TRAIN_STEPS]
      rows += [{'step': s, 'split': 'validation', 'accuracy': acc * s / 100, 'loss': 1.0 + seed}
               for s in VALIDATION_STEPS]
      (run_dir / wd.METRICS).write_text(''.join(json.dumps(r) + '\n' for r in rows))
      runs.append({'name': name, 'overrides': overrides})
  runs.append({'name': 'never_ran', 'overrides': {'model.score': 'x', 'seed': 0}})
  (tmp_path / wd.SWEEP).write_text(json.dumps({'config': 'c.py', 'runs': runs}))
  return tmp_path


# ---- stats ---------------------------------------------------------------------------------------
def test_bounds_by_metric_name():
  for name in ('accuracy', 'seq_accuracy', 'gen_token_accuracy', 'gen_exact_match', 'error_rate',
               'error'):
    assert stats.bounds(name) == (0.0, 1.0), name
  for name in ('bleu', 'gen_bleu', 'gen_chrf'):
    assert stats.bounds(name) == (0.0, 100.0), name
  for name in ('loss', 'smoothed_loss', 'bits_per_char'):
    assert stats.bounds(name) == (0.0, math.inf), name
  assert stats.bounds('perplexity') == (1.0, math.inf)
  assert stats.bounds('steps_per_s') is None


def test_t_interval_equals_the_formula_away_from_the_bounds():
  x = [0.50, 0.55, 0.60, 0.52]
  s = stats.summarize(x, stats.bounds('accuracy'))
  assert s['ci95'] == pytest.approx(_t_interval(x), rel=1e-9)
  assert (s['n'], s['mean'], s['std']) == (4, pytest.approx(np.mean(x)),
                                           pytest.approx(np.std(x, ddof=1)))
  assert s['interval'] == 't, clipped to [0, 1]' and s['values'] == x
  loss = stats.summarize([2.0, 2.5, 2.25])
  assert loss['ci95'] == pytest.approx(_t_interval([2.0, 2.5, 2.25])) and loss['interval'] == 't'


def test_intervals_of_bounded_metrics_stay_inside_the_bounds():
  near_one = [1.0, 0.99, 1.0]
  s = stats.summarize(near_one, stats.bounds('gen_exact_match'))
  lo, hi = _t_interval(near_one)
  assert hi > 1.0  # the plain t interval leaves [0, 1] ...
  assert s['ci95'] == [pytest.approx(lo), 1.0]  # ... the clipped one ends at 1
  near_zero = stats.summarize([0.5, 0.1, 2.0], stats.bounds('gen_bleu'))
  assert _t_interval([0.5, 0.1, 2.0])[0] < 0 and near_zero['ci95'][0] == 0.0
  assert near_zero['interval'] == 't, clipped to [0, 100]'
  one = stats.summarize([0.7], (0.0, 1.0))
  assert one['n'] == 1 and math.isnan(one['std']) and all(map(math.isnan, one['ci95']))


def test_paired_test_equals_a_hand_computed_paired_t():
  a = {0: 0.70, 1: 0.80, 2: 0.75, 3: 0.90}
  b = {1: 0.72, 2: 0.70, 3: 0.81, 7: 0.10}  # seeds 0 and 7 are not shared
  out = stats.paired_test(a, b)
  d = np.array([0.80 - 0.72, 0.75 - 0.70, 0.90 - 0.81])
  t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
  assert out['seeds'] == [1, 2, 3] and out['n'] == 3 and out['test'] == 'paired t'
  assert out['mean_diff'] == pytest.approx(d.mean())
  assert out['p_value'] == pytest.approx(2 * scipy_stats.t.sf(abs(t), df=2), rel=1e-9)
  assert stats.paired_test(a, dict(a))['p_value'] == 1.0  # identical results
  assert math.isnan(stats.paired_test(a, {0: 0.5})['p_value'])  # one shared seed


# ---- the report ----------------------------------------------------------------------------------
def test_report_statistics_equal_numpy(tmp_path):
  table = {(('model.score', 'dot'),): [0.60, 0.62, 0.67],
           (('model.score', 'additive'),): [0.99, 0.98, 0.995, 0.97]}
  out = report.write(_fake_sweep(tmp_path, table))
  for v in out['variants']:
    accs = np.array(table[((('model.score', v['variant'].split('=')[1])),)])
    s = v['metrics']['accuracy']
    assert s['mean'] == pytest.approx(accs.mean())
    assert s['std'] == pytest.approx(accs.std(ddof=1))
    lo, hi = _t_interval(accs)
    assert s['ci95'] == pytest.approx([lo, min(hi, 1.0)], rel=1e-7)
    assert v['seeds'] == list(range(len(accs)))
    assert v['steps_per_s'] == pytest.approx(np.mean(10.0 + np.arange(len(accs))))
  assert out['missing'] == ['never_ran'] and out['primary'] == 'accuracy'
  assert out['baseline'] == 'score=dot'  # the first variant listed
  (c,) = out['comparisons']
  assert (c['variant'], c['baseline']) == ('score=additive', 'score=dot')
  assert c['metrics']['accuracy']['seeds'] == [0, 1, 2]  # seed 3 ran for additive only
  assert c['metrics']['accuracy']['mean_diff'] == pytest.approx(
      np.mean([0.99 - 0.60, 0.98 - 0.62, 0.995 - 0.67]))
  md = (tmp_path / wd.REPORT_MD).read_text()
  assert '| score=dot | 3 (0, 1, 2) |' in md and '| score=additive | 4 (0, 1, 2, 3) |' in md
  assert 'Missing runs: never_ran' in md
  assert 'Paired differences against the baseline, score=dot' in md
  assert (tmp_path / wd.PLOTS / 'learning_curves.png').stat().st_size > 1000
  assert (tmp_path / wd.PLOTS / 'final_accuracy.png').stat().st_size > 1000
  assert json.loads((tmp_path / wd.REPORT_JSON).read_text())['comparisons'][0]['variant'] == \
      'score=additive'


def test_bold_marks_only_a_variant_significantly_better_than_every_other(tmp_path):
  clear = {(('model.score', 'dot'),): [0.60, 0.62, 0.61],
           (('model.score', 'general'),): [0.70, 0.73, 0.71],
           (('model.score', 'additive'),): [0.90, 0.91, 0.92]}
  out = report.write(_fake_sweep(tmp_path / 'clear', clear))
  assert out['best'] == {'accuracy': 'score=additive', 'loss': 'score=additive'}
  md = (tmp_path / 'clear' / wd.REPORT_MD).read_text()
  assert '| score=additive | 3 (0, 1, 2) | **0.9100 ± 0.0100' in md
  assert md.count('**') == 4  # accuracy and loss of additive, nothing else
  assert 'score=additive is better than every other variant at p < 0.05' in md
  # additive beats dot clearly, but not general (seed 1 goes the other way): nothing is bold.
  mixed = {(('model.score', 'dot'),): [0.60, 0.62, 0.61],
           (('model.score', 'general'),): [0.80, 0.95, 0.90],
           (('model.score', 'additive'),): [0.90, 0.91, 0.92]}
  out = report.write(_fake_sweep(tmp_path / 'mixed', mixed))
  general = next(c for c in out['comparisons'] if c['variant'] == 'score=general')
  assert general['metrics']['accuracy']['p_value'] < 0.05  # general vs the baseline (dot): yes
  assert out['best'] == {'accuracy': None, 'loss': None}
  md = (tmp_path / 'mixed' / wd.REPORT_MD).read_text()
  assert '**' not in md
  assert 'no variant is distinguishable at p < 0.05 on accuracy' in md


def test_unknown_baseline_is_an_error_naming_the_variants(tmp_path):
  table = {(('model.score', 'dot'),): [0.6, 0.7], (('model.score', 'additive'),): [0.8, 0.9]}
  sweep_dir = _fake_sweep(tmp_path, table)
  with pytest.raises(ValueError, match=r"'score=none'.*score=dot, score=additive"):
    report.build(sweep_dir, baseline='score=none')
  out = report.build(sweep_dir, baseline='score=additive')
  assert [c['variant'] for c in out['comparisons']] == ['score=dot']
  assert out['comparisons'][0]['metrics']['accuracy']['mean_diff'] == pytest.approx(-0.2)


def test_sweep_flag_names_the_baseline(tmp_path):
  table = {(('model.score', 'dot'),): [0.6, 0.7], (('model.score', 'additive'),): [0.8, 0.9]}
  sweep_dir = _fake_sweep(tmp_path, table)
  command = [sys.executable, '-m', 'experiments.sweep', '--config=configs/dates_demo.py',
             f'--workdir={sweep_dir}', '--report_only']
  subprocess.run(command + ['--baseline=score=additive'], cwd=REPO, check=True,
                 capture_output=True)
  assert json.loads((sweep_dir / wd.REPORT_JSON).read_text())['baseline'] == 'score=additive'
  failed = subprocess.run(command + ['--baseline=score=none'], cwd=REPO, capture_output=True,
                          text=True)
  assert failed.returncode != 0 and 'score=dot, score=additive' in failed.stderr


# ---- learning curves -----------------------------------------------------------------------------
def test_learning_curves_are_means_over_seeds_from_step_0(tmp_path):
  table = {(('model.score', 'dot'),): [0.6, 0.7], (('model.score', 'additive'),): [0.8, 0.9]}
  runs, _, _ = report.collect(_fake_sweep(tmp_path, table))
  data = report.learning_curves(runs, 'accuracy')
  assert data['train_metric'] == 'loss'  # the fake train rows log no accuracy
  dot = data['variants']['score=dot']
  assert dot['train']['steps'] == list(TRAIN_STEPS)
  np.testing.assert_allclose(dot['train']['mean'],
                             [np.mean([2.0 - a * s / 100 + i for i, a in enumerate([0.6, 0.7])])
                              for s in TRAIN_STEPS])
  assert dot['validation'] == {'steps': [0, 50, 100], 'mean': [1.5] * 3, 'std': [0.5] * 3}
  np.testing.assert_allclose(dot['primary']['mean'], [0.0, 0.325, 0.65])
  points = dot['train']['steps'] + dot['validation']['steps']
  assert len(points) >= 10 and min(points) == 0


@pytest.mark.usefixtures('tiny_models')
def test_a_run_logs_curves_from_step_0_with_10_points(tmp_path):
  config = h.tiny_config(steps=10, log_every=1, eval_every=5, checkpoint_every=10)
  train_and_evaluate(config, tmp_path / 'run', task=h.reverse_task())
  curve = report.curve_points(wd.read_jsonl(tmp_path / 'run' / wd.METRICS), 'loss')
  assert curve['train'][0] == list(range(1, 11))
  assert curve['validation'][0] == [0, 5, 10]  # the untrained model, then every eval_every
  assert all(np.isfinite(curve['train'][1] + curve['validation'][1]))


@pytest.mark.parametrize('name', h.CONFIGS)
def test_configs_log_at_least_10_train_points_a_run(name):
  # Every size but `tiny` (6-20 steps: a smoke run of the code, not a curve to read).
  module = h.load_config(name)
  args = [None] + [f'size={s}' for s in getattr(module, 'SIZES', {}) if s != 'tiny']
  for arg in args:
    train = module.get_config(arg).train
    assert train.steps // train.log_every >= 10, (arg, train.steps, train.log_every)


def test_lower_is_better_metrics():
  assert report.lower_is_better('loss') and report.lower_is_better('gen_perplexity')
  assert not report.lower_is_better('gen_exact_match')


def test_run_names_from_overrides():
  assert sweeps.run_name({'model.score': 'dot', 'seed': 2}) == 'score=dot,seed=2'
  assert sweeps.run_name({'task.path': 'a b/c'}) == 'path=a_b_c'
