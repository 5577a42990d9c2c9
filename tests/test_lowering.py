"""Every config's programs lowered for every platform: the train step, the eval step and decoding
(where the family decodes) of each config at size tiny, in float32 and bfloat16 (model.dtype),
and the Multi30k Transformer at size small, lowered for cpu, cuda and tpu on this CPU-only host.

Lowering does not compile: each program is traced once and lowered per platform from that trace
(what jax.export does per platform), and the train step of one config goes through jax.export
itself. It asserts that each lowers; that no CPU-only custom call (attention.native's FFI
targets) reaches a cuda or tpu program; that the tpu program of a dot-product Transformer holds
the Pallas kernel (tpu_custom_call), and its bfloat16 cuda train step the Triton one (or cuDNN
where this host has cuDNN). Programs that need the device to lower (cuDNN's) are the accelerator
check's (experiments.bench accelerator).
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from attention_zoo.attention import implementations as impl
from attention_zoo.build import build_model
from attention_zoo.train import batching, optim, steps
from tests.fixtures import CONFIGS, built_task, tiny

CASES = [(name, 'size=tiny') for name in CONFIGS] + [('multi30k_transformer', 'size=small')]
DTYPES = ('float32', 'bfloat16')  # model.dtype (mixed precision: parameters stay float32)
TRANSFORMERS = ('transformer', 'transformer_lm', 'transformer_classifier')
CUDA_HALF = impl.TARGETS[('cudnn' if impl.host_has_cudnn() else 'pallas', 'cuda')]


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _programs(config, task):
  """{'train' | 'eval' | 'decode': (jitted fn, its arguments)} as the loop builds them."""
  model = build_model(config, task)
  tx = optim.make_optimizer(config.train, config.model)
  model.eval()
  g_eval = steps.split_model(model)[0]
  model.train()
  g_train, params, rngs, other = steps.split_model(model)
  state = steps.TrainState(jnp.asarray(0, jnp.int32), params, tx.init(params), rngs, other)
  batch = batching.train_batches(task, config.train, 0).shape_batches()[0]
  rows = len(batch[task.target_key])
  train = steps.make_train_step(g_train, task, tx, steps.rng_tags(rngs),
                                optim.learning_rate(config.train, config.model),
                                label_smoothing=config.train.label_smoothing)
  programs = {
      'train': (jax.jit(train), (state, batch, jax.random.key(0))),
      'eval': (jax.jit(steps.make_eval_step(g_eval, task)),
               (params, rngs, other, batch, np.ones(rows, np.float32))),
  }
  source = batch[task.input_keys[0]]
  if task.kind == 'seq2seq' and hasattr(model, 'generate'):
    generate = steps.make_generate(g_eval, task.max_target_len or source.shape[1])
    programs['decode'] = (jax.jit(generate), (params, rngs, other, source))
  elif task.kind == 'lm' and hasattr(model, 'generate'):  # a prompt's greedy continuation
    decode = lambda params, rngs, other, prompt: steps.nnx.merge(
        g_eval, params, rngs, other, copy=True).generate(prompt, max_len=4)
    programs['decode'] = (jax.jit(decode), (params, rngs, other, source[:, :4]))
  return programs


def _dot_product_transformer(config) -> bool:
  return config.model_name in TRANSFORMERS and config.model.score in ('dot', 'scaled_dot')


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name,arg', CASES, ids=[f'{n}-{a}' for n, a in CASES])
def test_every_program_lowers_for_every_platform(name, arg, dtype, tfds_dir, request):
  config = tiny(name, tfds_dir, request, arg)
  assert config.model.dtype == 'float32'  # every config has the field, float32 by default
  config.model.dtype = dtype
  task = built_task(config.task)
  cpu_only = impl.cpu_only_targets()
  for kind, (fn, args) in _programs(config, task).items():
    traced = fn.trace(*args)
    text = {p: traced.lower(lowering_platforms=(p,)).as_text() for p in impl.PLATFORMS}
    for platform in ('cuda', 'tpu'):
      assert not [t for t in cpu_only if t in text[platform]], (kind, platform)
    if _dot_product_transformer(config) and kind in ('train', 'eval'):
      assert 'tpu_custom_call' in text['tpu'], kind
      causal = config.model_name != 'transformer_classifier'  # a decoder's self-attention
      if dtype == 'bfloat16' and causal:
        assert CUDA_HALF in text['cuda'], kind
    if config.model_name in TRANSFORMERS and dtype == 'float32' and kind == 'train':
      assert '__gpu$xla.gpu.triton' not in text['cuda']  # Triton takes half precision only


def test_the_train_step_exports_for_every_platform(tfds_dir, request):
  """jax.export of the dates Transformer's train step: the cuda and tpu programs need no safety
  check disabled (no custom call without a compatibility guarantee: XLA's and tpu_custom_call
  only); the cpu one only attention.native's targets, when it holds them."""
  config = tiny('dates_transformer', tfds_dir, request)
  config.model.kernel = 'chunked'
  task = built_task(config.task)
  fn, args = _programs(config, task)['train']
  for platform in ('cuda', 'tpu'):
    exported = export.export(fn, platforms=(platform,))(*args)
    assert exported.platforms == (platform,)
    assert ('tpu_custom_call' in exported.mlir_module()) == (platform == 'tpu')
  exported = export.export(fn, platforms=('cpu',), disabled_checks=impl.export_checks('cpu'))(
      *args)
  assert exported.platforms == ('cpu',) and exported.in_avals and exported.out_avals
