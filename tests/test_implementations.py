"""The kernels' `implementation` (attention.implementations): which code each platform's lowered
program holds, the combinations refused and why, and the numbers of each implementation against
the numpy reference (the Pallas kernels in Pallas' interpret mode, which runs them on CPU)."""

import functools

import jax
import jax.experimental.pallas.tpu as pltpu
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.attention import implementations as impl
from attention_zoo.attention import kernels, masks, native, scores
from attention_zoo.models import transformer
from attention_zoo.models.transformer_blocks import BlockOptions
from tests import numpy_reference as ref

F32, BF16 = jnp.float32, jnp.bfloat16
B, L, N, D = 2, 24, 2, 16
NATIVE_HERE = 'native' if native.preferred() else 'xla'  # what 'auto' takes on this CPU
HALF_CUDA = 'cudnn' if impl.host_has_cudnn() else 'pallas'  # fp16/bf16 on cuda, causal


def _found(program: str) -> str:
  """Which implementation a lowered program holds, by its custom calls."""
  if any(t in program for t in impl.cpu_only_targets()):
    return 'native'
  if 'tpu_custom_call' in program or '__gpu$xla.gpu.triton' in program:
    return 'pallas'
  return 'cudnn' if '__cudnn$fmha' in program else 'xla'


def _inputs(dtype=F32, q_len=L, seed=0):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(B, q_len, N, D)), dtype)
  k, v = (jnp.asarray(rng.normal(size=(B, L, N, D)), dtype) for _ in range(2))
  return q, k, v


def _mask(kind, q_len=L):
  """(mask, causal) of a kind: key padding (row 1 sees 10 keys), causal, or one per query."""
  padding = masks.padding_mask(jnp.arange(L)[None] < jnp.array([[L], [10]]))
  return {'padding': (padding, False), 'causal': (None, True),
          'per_query': (masks.causal_mask(q_len, L) & padding, False)}[kind]


def _lowered(kernel, score_name, dtype, kind, q_len=L, implementation='auto', **kw):
  """{platform: lowered text} of the gradient of a kernel call, traced once."""
  score = scores.make_score(score_name, D, D, rngs=nnx.Rngs(0))
  mask, causal = _mask(kind, q_len)
  q, k, v = _inputs(dtype, q_len)
  loss = lambda q, k, v: jnp.sum(kernels.get_kernel(kernel)(
      score, q, k, v, mask, causal=causal, implementation=implementation, **kw)[0]
      .astype(F32) ** 2)
  traced = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q, k, v)
  return {p: traced.lower(lowering_platforms=(p,)).as_text() for p in impl.PLATFORMS}


# (kernel, score, dtype, mask, queries) -> what 'auto' runs on cpu, cuda, tpu
CASES = [
    ('chunked', 'scaled_dot', F32, 'padding', L, (NATIVE_HERE, 'xla', 'pallas')),
    ('fused', 'dot', F32, 'causal', L, (NATIVE_HERE, 'xla', 'pallas')),
    ('chunked', 'scaled_dot', BF16, 'causal', L, ('xla', HALF_CUDA, 'pallas')),
    ('chunked', 'scaled_dot', BF16, 'padding', L,
     ('xla', 'cudnn' if impl.host_has_cudnn() else 'xla', 'pallas')),
    ('dense', 'scaled_dot', F32, 'causal', L, ('xla', 'xla', 'pallas')),  # native: chunked only
    ('dense', 'dot', BF16, 'causal', L, ('xla', HALF_CUDA, 'pallas')),
    ('chunked', 'additive', BF16, 'causal', L, ('xla', 'xla', 'xla')),  # not a dot product
    ('chunked', 'general', F32, 'padding', L, ('xla', 'xla', 'xla')),
    ('chunked', 'scaled_dot', F32, 'per_query', L, ('xla', 'xla', 'xla')),  # not a key mask
    ('chunked', 'scaled_dot', F32, 'padding', 1, ('xla', 'xla', 'xla')),  # a decoding step
]


@pytest.mark.parametrize('kernel,score_name,dtype,kind,q_len,want', CASES,
                         ids=[f'{c[0]}-{c[1]}-{c[2].__name__}-{c[3]}-Q{c[4]}' for c in CASES])
def test_auto_picks_per_lowering_platform(kernel, score_name, dtype, kind, q_len, want):
  programs = _lowered(kernel, score_name, dtype, kind, q_len)
  assert tuple(_found(programs[p]) for p in impl.PLATFORMS) == want
  for platform in ('cuda', 'tpu'):  # no CPU custom call ever reaches an accelerator's program
    assert not any(t in programs[platform] for t in impl.cpu_only_targets())


def test_dropout_keeps_every_platform_on_xla():
  programs = _lowered('chunked', 'scaled_dot', F32, 'padding', dropout_rate=0.1,
                      dropout_rng=jax.random.key(0))
  assert {_found(p) for p in programs.values()} == {'xla'}


def test_an_explicit_implementation_runs_where_it_can_and_refuses_elsewhere_at_lowering():
  score = scores.make_score('scaled_dot', D, D, rngs=nnx.Rngs(0))
  q, k, v = _inputs()
  traced = jax.jit(lambda q: kernels.chunked(score, q, k, v, implementation='native')[0]).trace(q)
  if native.registered():
    assert _found(traced.lower(lowering_platforms=('cpu',)).as_text()) == 'native'
  with pytest.raises(ValueError, match=r"'native' runs on cpu only.*valid on every platform: "
                                       r'auto, xla'):
    traced.lower(lowering_platforms=('cuda',))
  traced = jax.jit(lambda q: kernels.chunked(score, q, k, v, implementation='pallas')[0]).trace(q)
  assert _found(traced.lower(lowering_platforms=('tpu',)).as_text()) == 'pallas'
  with pytest.raises(ValueError, match=r"'pallas' lowered for cuda: .*float16 or bfloat16"):
    traced.lower(lowering_platforms=('cuda',))  # Triton takes half precision only
  programs = _lowered('chunked', 'scaled_dot', F32, 'padding', implementation='xla')
  assert {_found(p) for p in programs.values()} == {'xla'}


def test_refused_combinations_name_the_reason_and_the_valid_ones():
  additive = scores.make_score('additive', D, D, rngs=nnx.Rngs(0))
  dot = scores.make_score('dot', D, D, rngs=nnx.Rngs(0))
  q, k, v = _inputs()
  with pytest.raises(ValueError, match=r"'cudnn' refuses this call: on cuda: the score "
                                       r'AdditiveScore is not a scaled dot product.*Valid here: '
                                       r'auto, xla$'):
    kernels.chunked(additive, q, k, v, implementation='cudnn')
  with pytest.raises(ValueError, match=r"'pallas' refuses .*not a scaled dot product"):
    kernels.chunked(additive, q, k, v, implementation='pallas')
  with pytest.raises(ValueError, match=r"'native' computes in float32, got q, k, v in bfloat16"):
    kernels.chunked(dot, *(x.astype(BF16) for x in (q, k, v)), implementation='native')
  with pytest.raises(ValueError, match=r"'native' has no attention dropout"):
    kernels.chunked(dot, q, k, v, dropout_rate=0.1, dropout_rng=jax.random.key(0),
                    implementation='native')
  with pytest.raises(ValueError, match=r"unknown implementation 'nativ' \(did you mean "
                                       r"'native'\?\); known: auto, cudnn, native, pallas, xla"):
    kernels.chunked(dot, q, k, v, implementation='nativ')
  if not impl.host_has_cudnn():
    with pytest.raises(ValueError, match='cuDNN is not on this host'):
      kernels.chunked(dot, *(x.astype(BF16) for x in (q, k, v)), implementation='cudnn')
  # The options check the pair before any layer is built.
  with pytest.raises(ValueError, match=r"'native' does not implement the 'dense' kernel.*valid "
                                       r"for 'dense': auto, xla, cudnn, pallas"):
    BlockOptions(max_len=8, kernel='dense', implementation='native')
  assert BlockOptions(max_len=8, kernel='chunked', implementation='native').parts.kernel.keywords \
      == {'implementation': 'native'}


def _reference(score, q, k, v, mask, causal):
  full = masks.combine_masks(mask, masks.causal_mask(q.shape[1], k.shape[1]) if causal else None)
  full = np.ones((1, 1, 1, 1), bool) if full is None else np.asarray(full)
  name = next(n for n in scores.SCORES if type(score) is scores.SCORES.get(n))
  f64 = lambda x: np.asarray(x, np.float64)
  return ref.attention(name, f64(q), f64(k), f64(v), full, ref.params_of(score))[0]


@pytest.mark.parametrize('kernel', ['chunked', 'fused', 'dense'])
def test_xla_native_and_auto_equal_the_numpy_reference(kernel):
  score = scores.make_score('scaled_dot', D, D, rngs=nnx.Rngs(0))
  q, k, v = _inputs()
  names = ['auto', 'xla'] + (['native'] if kernel != 'dense' and native.registered() else [])
  for kind in ('padding', 'causal'):
    mask, causal = _mask(kind)
    want = _reference(score, q, k, v, mask, causal)
    for name in names:
      got = jax.jit(lambda q, k, v: kernels.get_kernel(kernel)(
          score, q, k, v, mask, causal=causal, implementation=name)[0])(q, k, v)
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=f'{name} {kind}')


@pytest.mark.parametrize('kind', ['padding', 'causal', 'padding_causal'])
def test_the_tpu_pallas_wrapper_equals_the_reference_in_interpret_mode(kind):
  """Keys padded to 128 and told apart by segment ids, queries padded to 8, a query with no key
  zeroed (row 1 of the padding mask sees no key here), forward and gradients."""
  score = scores.make_score('scaled_dot', D, D, rngs=nnx.Rngs(0))
  q, k, v = _inputs(q_len=20)
  padding = masks.padding_mask(jnp.arange(L)[None] < jnp.array([[L], [0]]))
  mask, causal = {'padding': (padding, False), 'causal': (None, True),
                  'padding_causal': (padding, True)}[kind]
  call = impl.Call('chunked', score, q, k, v, mask, causal, False, None)
  run = lambda q, k, v: impl.PALLAS.runners['tpu'](call, q, k, v, mask)
  with pltpu.force_tpu_interpret_mode():
    got = run(q, k, v)
    grads = jax.grad(lambda *x: jnp.sum(jnp.sin(run(*x))), argnums=(0, 1, 2))(q, k, v)
  np.testing.assert_allclose(got, _reference(score, q, k, v, mask, causal), rtol=1e-5, atol=1e-5)
  want = jax.grad(lambda *x: jnp.sum(jnp.sin(kernels.dense(
      score, *x, mask, causal=causal, implementation='xla')[0])), argnums=(0, 1, 2))(q, k, v)
  for name, g, w in zip('qkv', grads, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f'd/d{name}')


def test_the_triton_wrapper_equals_the_reference_in_interpret_mode(monkeypatch):
  """Causal self-attention of 20 positions padded to 32 (the padded keys come after every real
  query, so causality hides them)."""
  from jax.experimental.pallas.ops.gpu import attention as triton
  monkeypatch.setattr(triton, 'mha', functools.partial(triton.mha, interpret=True))
  score = scores.make_score('dot', D, D, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(4)
  q, k, v = (jnp.asarray(rng.normal(size=(B, 20, N, D)), F32) for _ in range(3))
  call = impl.Call('chunked', score, q, k, v, None, True, False, None)
  got = impl.PALLAS.runners['cuda'](call, q, k, v, None)
  np.testing.assert_allclose(got, _reference(score, q, k, v, None, True), rtol=1e-5, atol=1e-5)


def test_for_model_names_each_layer_and_agrees_with_the_lowered_programs():
  model = transformer.TransformerLM(13, rngs=nnx.Rngs(0), d_model=32, num_heads=2, num_layers=2,
                                    ffn_dim=32, max_len=32, kernel='chunked')
  tokens = jnp.ones((2, 16), jnp.int32)
  layers = impl.for_model(model, tokens)
  assert layers == {f'decoder.layers.{i}.self_attn': {'cpu': NATIVE_HERE, 'cuda': 'xla',
                                                      'tpu': 'pallas'} for i in range(2)}
  graphdef, state = nnx.split(model)
  traced = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)).trace(state, tokens)
  for platform in impl.PLATFORMS:
    found = _found(traced.lower(lowering_platforms=(platform,)).as_text())
    assert found == layers['decoder.layers.0.self_attn'][platform]


def test_for_model_records_xla_where_the_weights_are_captured():
  """The dense kernel asked for its weights (capture_weights) computes them in xla everywhere."""
  model = transformer.TransformerLM(13, rngs=nnx.Rngs(0), d_model=32, num_heads=2, num_layers=1,
                                    ffn_dim=32, max_len=32, capture_weights=True)
  layers = impl.for_model(model, jnp.ones((2, 16), jnp.int32))
  assert layers == {'decoder.layers.0.self_attn': {p: 'xla' for p in impl.PLATFORMS}}
  model.decoder.layers[0].self_attn.capture_weights = False  # the same layer, weights not asked
  layers = impl.for_model(model, jnp.ones((2, 16), jnp.int32))
  assert layers['decoder.layers.0.self_attn']['tpu'] == 'pallas'


def test_for_model_of_decoding_leaves_the_steps_on_xla():
  """generate: the encoder reads the whole source (pallas on tpu); each decoding step has one
  query, which auto leaves on xla on every platform."""
  model = transformer.EncoderDecoder(12, 12, rngs=nnx.Rngs(0), d_model=32, num_heads=2,
                                     num_layers=1, ffn_dim=32, max_len=16)
  layers = impl.for_model(model, jnp.ones((2, 10), jnp.int32), method='generate', max_len=5)
  assert layers == {
      'encoder.layers.0.self_attn': {'cpu': 'xla', 'cuda': 'xla', 'tpu': 'pallas'},
      'decoder.layers.0.self_attn': {p: 'xla' for p in impl.PLATFORMS},
      'decoder.layers.0.cross_attn': {p: 'xla' for p in impl.PLATFORMS}}
