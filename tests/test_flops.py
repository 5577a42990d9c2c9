"""Model FLOPs per train step, peaks and MFU (attention_zoo/train/flops.py), and their fields in
results.json with the attention implementation that ran (run_info.attention_implementation)."""

import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_zoo import build
from attention_zoo.train import batching, flops, optim, steps
from attention_zoo.train.loop import train_and_evaluate
from tests import fixtures as h

TRANSFORMER = dict(d_model=16, num_heads=2, num_layers=1, ffn_dim=32, max_len=16,
                   kernel='dense', dropout_rate=0.0)


def _transformer_config(**train):
  config = h.tiny_config('transformer', model=dict(TRANSFORMER), **train)
  return config


def test_a_loop_counts_its_trip_count_times():
  """XLA's cost analysis counts a while loop's body once; hlo_matmul_flops multiplies it by the
  loop's known trip count, and step_flops takes that count for a program that loops."""
  x = jnp.ones((64, 64))
  one = 2 * 64 ** 3
  scan = jax.jit(lambda a: jax.lax.scan(lambda c, _: (c @ a, None), a, None, length=10)[0])
  compiled = scan.lower(x).compile()
  assert flops.cost_analysis_flops(compiled) < 1.1 * one  # the body once: why the fallback
  assert flops.hlo_matmul_flops(compiled.as_text()) == (10 * one, one)
  assert flops.step_flops(compiled) == (10 * one, 'xla_hlo_matmuls')
  plain = jax.jit(lambda a, b: a @ b).lower(jnp.ones((8, 32)), jnp.ones((32, 4))).compile()
  assert flops.step_flops(plain) == (2 * 8 * 32 * 4, 'xla_cost_analysis')
  conv = jax.jit(lambda v, k: jax.lax.conv_general_dilated(v, k, (1, 1), 'SAME'))
  compiled = conv.lower(jnp.ones((2, 3, 8, 8)), jnp.ones((5, 3, 3, 3))).compile()
  # 2 x outputs (2·5·8·8) x kernel taps per output (3·3·3)
  assert flops.hlo_matmul_flops(compiled.as_text())[0] == 2 * (2 * 5 * 8 * 8) * (3 * 3 * 3)


def test_transformer_analytic_count_equals_the_compiled_steps_matmuls(tiny_models):
  """transformer_step_flops (6 x weights x tokens + attention) equals, exactly, the dot FLOPs of
  the loop's compiled train step of an encoder-decoder Transformer (dense kernel)."""
  config, task = _transformer_config(), h.reverse_task()
  tx = optim.make_optimizer(config.train, config.model)
  g_train, _, state = steps.init_state(build.build_model(config, task), tx, jax.devices()[0])
  batch = batching.train_batches(task, config.train, 0).batch(0)
  compiled, _, _ = steps.compile_train_step(
      g_train, task, tx, optim.learning_rate(config.train, config.model), state, batch,
      jax.random.key(0), jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  size, source_len = batch['source'].shape
  expected = flops.transformer_step_flops(
      d_model=16, ffn_dim=32, num_layers=1, vocab_size=task.model_dims['tgt_vocab_size'],
      batch_size=size, source_len=source_len, target_len=batch['target_in'].shape[1])
  assert flops.hlo_matmul_flops(compiled.as_text())[0] == expected
  assert flops.ANALYTIC['transformer'](config.model.to_dict(), task.model_dims, batch) == expected
  # XLA's whole count (elementwise ops, the optimizer) is above the matmuls, not far above
  assert expected < flops.cost_analysis_flops(compiled) < 1.6 * expected


def _check_utilization(results):
  assert results['flop_per_s'] == pytest.approx(
      results['flops_per_step'] * results['steps_per_s'], rel=1e-9)
  assert results['mfu'] == pytest.approx(results['flop_per_s'] / results['peak_flop_per_s'],
                                         rel=1e-9)
  assert 0 < results['mfu'] <= 1
  assert results['peak_source'].startswith('measured')  # CPU


def _analytic(config, task):
  batch = batching.train_batches(task, config.train, 0).batch(0)
  return flops.ANALYTIC['transformer'](config.model.to_dict(), task.model_dims, batch)


def test_run_records_flops_and_mfu(tmp_path, tiny_models):
  """A single run: XLA's cost analysis of its step, above the matmuls alone."""
  task = h.reverse_task(n_train=64, n_val=8, n_test=8)
  config = _transformer_config(steps=2, eval_every=0, checkpoint_every=2)
  results = train_and_evaluate(config, tmp_path, task=task)
  assert results['flops_source'] == 'xla_cost_analysis'
  analytic = _analytic(config, task)
  assert analytic < results['flops_per_step'] < 1.6 * analytic
  _check_utilization(results)
  # what ran: the configured kernel, and the implementation its layers resolved to on CPU
  assert (results['attention_kernel'], results['attention_implementation']) == ('dense', 'xla')


def test_seed_group_counts_every_seed(tmp_path, tiny_models):
  """A seed group's step computes both seeds: 2 x the matmuls of one."""
  task = h.reverse_task(n_train=64, n_val=8, n_test=8)
  config = _transformer_config(steps=2, eval_every=0, checkpoint_every=2)
  group = train_and_evaluate(config, tmp_path, task=task, seeds=[0, 1], seed_map='map')
  analytic = _analytic(config, task)
  for seed in group:
    assert seed['flops_source'] == 'xla_hlo_matmuls'  # lax.map: a loop over the seeds
    assert seed['flops_per_step'] == 2 * analytic
    _check_utilization(seed)


def test_data_parallel_counts_every_devices_share():
  """XLA counts the program of one device; over a batch split across 2 devices the step's count
  is that of the whole batch."""
  code = '''
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from attention_zoo.train import flops
mesh = Mesh(np.array(jax.devices()), ('data',))
batch = {'x': jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, P('data')))}
w = jax.device_put(jnp.ones((32, 16)), NamedSharding(mesh, P()))
step = jax.jit(lambda b, w: (b['x'] @ w).sum()).lower(batch, w).compile()
counter = flops.StepFlops([(batch, step)])
counter.add(batch)
print(jax.device_count(), counter.per_step(), counter.source)
'''
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2', 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120, env=dict(__import__('os').environ, **env))
  assert proc.returncode == 0, proc.stderr[-2000:]
  devices, per_step, source = proc.stdout.split()
  assert devices == '2' and source == 'xla_cost_analysis'
  matmul = 2 * 64 * 32 * 16
  assert matmul <= float(per_step) < 1.1 * matmul  # + the sum's adds


def test_peaks_per_device_and_dtype():
  tpu = types.SimpleNamespace(platform='tpu', device_kind='TPU v4')
  assert flops.device_peak(tpu, 'bfloat16')[0] == 275e12
  peak, source = flops.device_peak(tpu, 'float32')  # no f32 figure: bf16 passes
  assert peak == 275e12 and 'bf16 peak' in source
  h100 = types.SimpleNamespace(platform='gpu', device_kind='NVIDIA H100 80GB HBM3')
  assert flops.device_peak(h100, 'bfloat16')[0] == 989.4e12
  assert flops.device_peak(h100, 'float32')[0] == 494.7e12  # TF32
  peak, why = flops.device_peak(types.SimpleNamespace(platform='gpu', device_kind='GPU 9000'))
  assert peak is None and 'GPU 9000' in why and 'TPU v4' in why
  cpu = flops.device_peak(jax.devices('cpu')[0])[0]
  assert 1e9 < cpu < 1e13 and flops.measured_cpu_peak() == cpu  # cached: the same figure
  record = flops.utilization(1e9, 2.0, 4, device=tpu, dtype='bfloat16', num_devices=4)
  assert record['flop_per_s'] == 2e9 and record['peak_flop_per_s'] == 4 * 275e12
  assert record['mfu'] == pytest.approx(2e9 / 1.1e15)
  assert flops.utilization(None, 2.0, 4)['mfu'] is None
  assert np.isclose(flops.utilization(1e9, 1.0, 1)['mfu'], 1e9 / cpu)
