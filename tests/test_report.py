"""The sweep report: mean / std / 95% CI against numpy over the runs' results.json."""

import json

import numpy as np
import pytest

from attention_zoo import sweeps
from attention_zoo.analysis import report
from attention_zoo.train import workdir as wd

T_975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}  # Student t quantiles (tables)


def _fake_sweep(tmp_path, table):
  """table: {variant overrides (tuple of items): [test accuracy per seed]} -> sweep dir."""
  runs = []
  for items, accs in table.items():
    for seed, acc in enumerate(accs):
      overrides = dict(items, seed=seed)
      name = sweeps.run_name(overrides)
      run_dir = tmp_path / wd.RUNS / name
      run_dir.mkdir(parents=True)
      results = {'test': {'accuracy': acc, 'loss': 1.0 - acc}, 'num_params': 123,
                 'steps_per_s': 10.0 + seed, 'compile_s': 2.0}
      (run_dir / wd.RESULTS).write_text(json.dumps(results))
      rows = [{'step': s, 'split': 'validation', 'accuracy': acc * s / 100} for s in (50, 100)]
      (run_dir / wd.METRICS).write_text(''.join(json.dumps(r) + '\n' for r in rows))
      runs.append({'name': name, 'overrides': overrides})
  runs.append({'name': 'never_ran', 'overrides': {'model.score': 'x', 'seed': 0}})
  (tmp_path / wd.SWEEP).write_text(json.dumps({'config': 'c.py', 'runs': runs}))
  return tmp_path


def test_report_statistics_equal_numpy(tmp_path):
  table = {(('model.score', 'dot'),): [0.90, 0.92, 0.97],
           (('model.score', 'additive'),): [0.99, 0.98, 0.995, 0.97]}
  out = report.write(_fake_sweep(tmp_path, table))
  for v in out['variants']:
    accs = np.array(table[((('model.score', v['variant'].split('=')[1])),)])
    s = v['metrics']['accuracy']
    n = len(accs)
    half = T_975[n - 1] * accs.std(ddof=1) / np.sqrt(n)
    assert s['mean'] == pytest.approx(accs.mean())
    assert s['std'] == pytest.approx(accs.std(ddof=1))
    assert s['ci95'] == pytest.approx([accs.mean() - half, accs.mean() + half], rel=1e-7)
    assert v['steps_per_s'] == pytest.approx(np.mean(10.0 + np.arange(n)))
  assert out['best'] == {'accuracy': 'score=additive', 'loss': 'score=additive'}
  assert out['missing'] == ['never_ran'] and out['primary'] == 'accuracy'
  md = (tmp_path / wd.REPORT_MD).read_text()
  best = np.array(table[(('model.score', 'additive'),)])
  assert f'**{best.mean():.4f} ± {best.std(ddof=1):.4f}' in md  # the best accuracy, bold
  assert 'Missing runs: never_ran' in md
  assert (tmp_path / wd.PLOTS / 'learning_curves.png').stat().st_size > 1000
  assert (tmp_path / wd.PLOTS / 'final_accuracy.png').stat().st_size > 1000
  assert json.loads((tmp_path / wd.REPORT_JSON).read_text())['best']['accuracy'] == 'score=additive'


def test_lower_is_better_metrics():
  assert report.lower_is_better('loss') and report.lower_is_better('gen_perplexity')
  assert not report.lower_is_better('gen_exact_match')


def test_run_names_from_overrides():
  assert sweeps.run_name({'model.score': 'dot', 'seed': 2}) == 'score=dot,seed=2'
  assert sweeps.run_name({'task.path': 'a b/c'}) == 'path=a_b_c'
