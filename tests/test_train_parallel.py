"""Data parallelism: 4 virtual CPU devices give the same loss curve as 1 (each in a subprocess,
since XLA_FLAGS must be set before jax initializes)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

_SCRIPT = r'''
import json, sys
from attention_zoo.train import workdir
from attention_zoo.train.loop import train_and_evaluate
from tests import fixtures as h
h.register_tiny_models_for_good()
config = h.tiny_config('_tiny_classifier', steps=6, model={'hidden': 8}, log_every=1, eval_every=0,
                       batch_size=32)
results = train_and_evaluate(config, sys.argv[1], task=h.blobs_task(n_test=70))  # 70 = 2x32 + 6
rows = workdir.read_jsonl(sys.argv[1] + '/metrics.jsonl')
print(json.dumps({'devices': results['devices']['num_devices'], 'test': results['test'],
                  'loss': [r['loss'] for r in rows if r['split'] == 'train']}))
'''


def _run(tmp_path: pathlib.Path, devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  root = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run([sys.executable, '-c', _SCRIPT, str(tmp_path / f'd{devices}')],
                        cwd=root, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_devices_match_one(tmp_path):
  one, four = _run(tmp_path, 1), _run(tmp_path, 4)
  assert (one['devices'], four['devices']) == (1, 4)
  assert len(one['loss']) == 6
  np.testing.assert_allclose(four['loss'], one['loss'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(four['test']['loss'], one['test']['loss'], rtol=1e-3)
