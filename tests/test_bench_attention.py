"""`experiments.bench attention --json`: the rows the issue's table is made of, and their ratios."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from attention_zoo.attention import native

REPO = pathlib.Path(__file__).resolve().parents[1]
KEYS = {'score', 'kernel', 'implementation', 'length', 'pass', 'ms', 'gflops', 'memory_gib',
        'ratio_to_torch'}


def _bench(*flags):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.bench', 'attention', '--lengths=32', '--reps=1',
       '--batch=1', '--heads=2', '--head_dim=8', '--nomemory_targets', *flags],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True, text=True,
      timeout=600)


def test_json_rows_name_score_kernel_pass_and_the_ratio_to_torch(tmp_path):
  out = tmp_path / 'attention.json'
  proc = _bench(f'--json={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(out.read_text())['rows']
  assert all(set(r) == KEYS for r in rows)
  impl = {(r['score'], r['kernel']): r['implementation'] for r in rows}
  assert impl[('additive', 'chunked')] == impl[('scaled_dot', 'dense')] == 'xla'
  assert impl[(None, 'jax.nn.dot_product_attention')] == 'xla'
  level = native.host_level()
  assert impl[('scaled_dot', 'chunked')] == (f'native {level}' if native.preferred() else 'xla')
  ours = {(r['score'], r['kernel'], r['pass']): r for r in rows if r['score'] is not None}
  for score in ('dot', 'scaled_dot', 'general', 'additive', 'concat'):
    for kernel in ('dense', 'chunked'):
      for tag in ('fwd', 'fwd+bwd'):
        row = ours[(score, kernel, tag)]
        assert row['length'] == 32 and row['ms'] > 0 and row['memory_gib'] > 0
        # GFLOP/s is 4·B·N·L²·D (x3 with the backward pass) over the time
        flop = 4 * 1 * 2 * 32 ** 2 * 8 * (3 if tag == 'fwd+bwd' else 1)
        assert abs(row['gflops'] - flop / row['ms'] / 1e6) <= 1e-6 * row['gflops']
  assert ('scaled_dot', 'fused', 'fwd+bwd') in ours and ('additive', 'fused', 'fwd') not in ours
  # On CPU the chunked kernel's dot scores run natively; the XLA path is its own row.
  assert ('scaled_dot', 'chunked_xla', 'fwd+bwd') in ours and ('dot', 'chunked_xla', 'fwd') in ours
  assert ('additive', 'chunked_xla', 'fwd') not in ours
  torch_rows = [r for r in rows if r['kernel'].startswith('torch SDPA')]
  if importlib.util.find_spec('torch') is None:
    assert not torch_rows and all(r['ratio_to_torch'] is None for r in rows)
  else:
    torch_ms = {r['pass']: r['ms'] for r in torch_rows}
    assert set(torch_ms) == {'fwd', 'fwd+bwd'}
    for r in rows:
      assert abs(r['ratio_to_torch'] - torch_ms[r['pass']] / r['ms']) <= 1e-6 * r[
          'ratio_to_torch'], r


def test_scores_and_kernels_pick_our_rows_and_the_references_stay(tmp_path):
  out = tmp_path / 'attention.json'
  proc = _bench('--scores=additive', '--kernels=chunked', f'--json={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(out.read_text())['rows']
  ours = {(r['score'], r['kernel'], r['pass']) for r in rows if r['score'] is not None}
  assert ours == {('additive', 'chunked', 'fwd'), ('additive', 'chunked', 'fwd+bwd')}
  assert {'jax.nn.dot_product_attention', 'ours MultiHeadAttention / chunked'} <= {
      r['kernel'] for r in rows}


def test_native_builds_are_rows_side_by_side_naming_their_level(tmp_path):
  """--native_builds=native,<another level this CPU runs>: one chunked_native row per build, its
  implementation the level found in the lowered program; the machine's level is printed."""
  level = native.host_level()
  others = [lvl for lvl in ('x86-64-v3', 'x86-64-v2') if lvl != level and native.can_run(lvl)]
  if level is None or not others:
    pytest.skip('this CPU runs one native level at most')
  out = tmp_path / 'attention.json'
  proc = _bench('--scores=scaled_dot,additive', '--kernels=chunked',
                f'--native_builds=native,{others[0]}', f'--json={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'CPU: ' in proc.stdout and f'{level} ({native.LEVELS[level].isa})' in proc.stdout
  data = json.loads(out.read_text())
  assert data['level'] == level
  builds = {r['implementation'] for r in data['rows'] if r['kernel'] == 'chunked_native'}
  assert builds == {f'native {level}', f'native {others[0]}'}
  assert all(r['score'] == 'scaled_dot' for r in data['rows'] if r['kernel'] == 'chunked_native')


def test_an_unknown_score_or_kernel_is_named_with_the_known_ones():
  proc = _bench('--scores=additive,adtive')
  assert proc.returncode != 0
  assert '--scores: unknown adtive; known: ' in proc.stderr and 'scaled_dot' in proc.stderr
  proc = _bench('--kernels=flash')
  assert proc.returncode != 0 and '--kernels: unknown flash; known: ' in proc.stderr
  assert 'chunked_xla' in proc.stderr
  proc = _bench('--native_builds=x86-64-v9')
  assert proc.returncode != 0 and '--native_builds: unknown x86-64-v9; known: native' in proc.stderr
