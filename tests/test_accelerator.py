"""Checks that need a GPU or TPU (marker `accelerator`): they skip on a CPU-only host, and
`python -m experiments.bench accelerator` runs them on the day one is lent.

Each compares the device's fast path with the dense kernel's XLA code on the same inputs, or
checks what a bf16 training run records there.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.attention import implementations, kernels, scores
from attention_zoo.train import flops
from attention_zoo.train.loop import train_and_evaluate
from tests import fixtures as h

pytestmark = [
    pytest.mark.accelerator,
    pytest.mark.skipif(jax.default_backend() == 'cpu',
                       reason='needs a GPU or TPU: this host runs JAX on CPU only'),
]

B, L, N, D = 2, 256, 4, 64


def _inputs(dtype=jnp.bfloat16):
  keys = jax.random.split(jax.random.key(0), 3)
  return [jax.random.normal(k, (B, L, N, D), jnp.float32).astype(dtype) for k in keys]


def _attend(kernel: str, implementation: str, causal: bool):
  score = scores.make_score('scaled_dot', D, D, num_heads=N, rngs=nnx.Rngs(0))
  run = kernels.with_implementation(kernel, implementation)
  return jax.jit(lambda q, k, v: run(score, q, k, v, causal=causal)[0])


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('kernel', ['fused', 'chunked'])
def test_fast_kernel_equals_dense_in_bf16_on_device(kernel, causal):
  """The kernel with 'auto' (cuDNN, Pallas Triton or Mosaic where they take the call) equals
  the dense kernel's XLA code in bf16, to bf16 rounding."""
  q, k, v = _inputs()
  fast = np.asarray(_attend(kernel, 'auto', causal)(q, k, v), np.float32)
  dense = np.asarray(_attend('dense', 'xla', causal)(q, k, v), np.float32)
  np.testing.assert_allclose(fast, dense, atol=3e-2, rtol=3e-2)


def test_auto_takes_a_device_kernel_for_bf16_dot_product():
  """On this device, 'auto' under the fused kernel resolves to a device kernel, not xla: the
  compiled program holds that implementation's custom call."""
  platform = {'gpu': 'cuda'}.get(jax.default_backend(), jax.default_backend())
  text = _attend('fused', 'auto', True).lower(*_inputs()).compile().as_text()
  found = [name for name in ('cudnn', 'pallas')
           if any(t in text for t in implementations.targets(name, platform))]
  assert found, f'no device attention kernel in the {platform} program'


def test_bf16_training_records_mfu_against_the_device_peak(tmp_path, tiny_models):
  """A tiny Transformer trained in bf16 on the device: finite loss, MFU against PEAKS."""
  model = dict(d_model=64, num_heads=4, num_layers=1, ffn_dim=128, max_len=16, dtype='bfloat16')
  config = h.tiny_config('transformer', model=model, steps=4, eval_every=0, checkpoint_every=4)
  results = train_and_evaluate(config, tmp_path, task=h.reverse_task())
  assert np.isfinite(results['train']['loss'])
  peak, _ = flops.device_peak(jax.devices()[0], 'bfloat16')
  assert peak is not None and results['peak_flop_per_s'] == peak * jax.device_count()
  assert 0 < results['mfu'] <= 1
