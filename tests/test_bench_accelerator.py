"""experiments.bench accelerator on CPU at its tiny sizes, narrowed to a few rows: every part runs
and writes rows that carry the implementation that ran, the compile time and a sane MFU."""

import json
import os
import pathlib
import subprocess
import sys

from attention_zoo.attention import implementations
from configs import multi30k_transformer

REPO = pathlib.Path(__file__).resolve().parents[1]
KEYS = {'part', 'name', 'implementation', 'compile_s', 'seconds', 'flops', 'flops_source',
        'flop_per_s', 'mfu', 'peak_flop_per_s', 'peak_source', 'dtype'}


def test_tiny_run_writes_sane_rows(tmp_path, data_dir):
  out = tmp_path / 'accelerator.json'
  env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / 'tfds'), ATTENTION_ZOO_DATA=data_dir)
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench', 'accelerator', f'--json={out}',
       '--lengths=128', '--scores=scaled_dot', '--kernels=chunked',
       '--implementations=auto,xla,cudnn'], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
  got = json.loads(out.read_text())
  assert got['size'] == 'tiny' and got['device']['platform'] == 'cpu'
  tests = got['tests']  # the accelerator tests: collected, and all skipped on CPU
  assert tests['returncode'] == 0 and tests['skipped'] >= 4 and tests['failed'] == 0
  rows = got['rows']
  # bf16 where the config has model.dtype (mixed precision), else skipped naming the field
  dtypes = (['float32', 'bfloat16'] if 'dtype' in multi30k_transformer.get_config().model
            else ['float32'])
  if len(dtypes) == 1:
    assert any('bfloat16' in s['row'] and 'dtype' in s['reason'] for s in got['skipped'])
  assert [r['part'] for r in rows] == (['attention'] * 2 + ['multi30k'] * len(dtypes)
                                       + ['seeds'] * 2)
  for row in rows:
    assert KEYS <= set(row), (row['name'], KEYS - set(row))
    assert row['implementation'] in implementations.IMPLEMENTATIONS, row
    assert 0 < row['mfu'] <= 1 and row['compile_s'] > 0 and row['flops'] > 0, row
    assert abs(row['flop_per_s'] - row['flops'] / row['seconds']) <= 1e-6 * row['flop_per_s']
  auto, xla = rows[:2]
  assert (auto['asked'], xla['asked'], xla['implementation']) == ('auto', 'xla', 'xla')
  assert 'cudnn' in next(s['reason'] for s in got['skipped'] if '/ cudnn /' in s['row'])
  trains = [r for r in rows if r['part'] == 'multi30k']
  assert [r['dtype'] for r in trains] == dtypes and all(r['tokens_per_s'] > 0 for r in trains)
  assert [r['way'] for r in rows[-2:]] == ['separate', 'map']  # 'map': the CPU's seed map


def test_spent_budget_skips_rows_with_the_reason(tmp_path):
  out = tmp_path / 'accelerator.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench', 'accelerator', f'--json={out}',
       '--parts=attention,seeds', '--lengths=128', '--scores=dot', '--kernels=dense',
       '--implementations=xla', '--budget_s=0'], cwd=REPO, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = json.loads(out.read_text())
  assert got['rows'] == [] and 'tests' not in got
  assert [s['row'] for s in got['skipped']] == [
      'dot / dense / xla / L=128', 'demo transformer, 2 seeds, separate',
      'demo transformer, 2 seeds, map']
  assert all(s['reason'].startswith('time budget') for s in got['skipped'])
