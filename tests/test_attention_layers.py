"""Attention, MultiHeadAttention, combine, SE block and positional encodings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo import attention as attn
from tests import numpy_reference as ref


def _copy_params(src: nnx.Module, dst: nnx.Module):
  """Copies query/key/value/out weights of flax's MultiHeadAttention into ours."""
  for name in ('query', 'key', 'value', 'out'):
    for p in ('kernel', 'bias'):
      getattr(getattr(dst, name), p)[...] = getattr(getattr(src, name), p)[...]


@pytest.mark.parametrize('kernel', ['dense', 'chunked', 'fused'])
def test_matches_flax_multihead_attention(kernel):
  ours = attn.MultiHeadAttention(4, 32, kernel=kernel, rngs=nnx.Rngs(0))
  theirs = nnx.MultiHeadAttention(4, 32, decode=False, deterministic=True, rngs=nnx.Rngs(1))
  _copy_params(theirs, ours)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 7, 32)), jnp.float32)
  ctx = jnp.asarray(rng.normal(size=(2, 11, 32)), jnp.float32)
  mask = jnp.asarray(rng.random((2, 1, 7, 11)) < 0.8).at[:, :, :, 0].set(True)
  np.testing.assert_allclose(ours(x, ctx, mask), theirs(x, ctx, mask=mask), rtol=1e-5, atol=1e-5)
  causal = attn.causal_mask(7)
  np.testing.assert_allclose(ours(x, causal=True), theirs(x, mask=causal), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('options', [
    dict(), dict(rotary=True), dict(num_kv_heads=2), dict(score='additive', kernel='chunked'),
    dict(kernel='fused', rotary=True)])
def test_cached_decode_equals_full_causal_forward(options):
  mha = attn.MultiHeadAttention(4, 32, rngs=nnx.Rngs(0), **options)
  x = jax.random.normal(jax.random.key(0), (2, 6, 32))
  full = mha(x, causal=True)
  cache = mha.init_cache(2, 8)  # room for more steps than used
  step = jax.jit(lambda x_t, c: nnx.merge(*nnx.split(mha)).decode_step(x_t, c))
  outs = []
  for t in range(6):
    y, cache = step(x[:, t:t + 1], cache)
    outs.append(y)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(cache['index'], [6, 6])


def test_rotary_self_attention_depends_on_relative_position():
  rng = np.random.default_rng(0)
  q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32) for _ in range(2))
  dot = lambda m, n: float(jnp.sum(attn.apply_rotary(q, jnp.array([m])) *
                                   attn.apply_rotary(k, jnp.array([n]))))
  assert dot(5, 2) == pytest.approx(dot(13, 10), abs=1e-4)
  assert dot(5, 2) != pytest.approx(dot(5, 3), abs=1e-3)


def test_dropout_only_in_training():
  mha = attn.MultiHeadAttention(2, 16, dropout_rate=0.5, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (1, 5, 16))
  a, b = mha(x), mha(x)
  np.testing.assert_array_equal(a, b)  # deterministic by default (eval)
  mha.train()
  c, d = mha(x), mha(x)
  assert not np.allclose(c, a) and not np.allclose(c, d)
  mha.eval()
  np.testing.assert_array_equal(mha(x), a)


def test_capture_weights_only_when_asked():
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  for kernel in ('dense', 'chunked', 'fused'):
    mha = attn.MultiHeadAttention(2, 16, kernel=kernel, capture_weights=True, rngs=nnx.Rngs(0))
    _, inter = nnx.capture(mha, nnx.Intermediate)(x, causal=True)
    (w,) = inter['attention_weights'].get_value()
    assert w.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(np.asarray(w)[0, 0], 1) == 0)  # causal
  quiet = attn.MultiHeadAttention(2, 16, rngs=nnx.Rngs(0))
  _, inter = nnx.capture(quiet, nnx.Intermediate)(x)
  assert 'attention_weights' not in inter


@pytest.mark.parametrize('score', ['dot', 'general', 'additive', 'concat', 'scaled_dot'])
def test_seq2seq_attention_layer_matches_numpy(score):
  layer = attn.Attention(6, 6, score=score, score_dim=5, capture_weights=True, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  h = rng.normal(size=(3, 6))  # decoder state [B, Dq]
  enc = rng.normal(size=(3, 4, 6))  # encoder states [B, K, Dk]
  valid = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
  ctx, inter = nnx.capture(layer, nnx.Intermediate)(jnp.asarray(h, jnp.float32),
                                                    jnp.asarray(enc, jnp.float32), mask=valid)
  params = {n: np.asarray(getattr(layer.score, n).kernel[...], np.float64)
            for n in ('w', 'w_q', 'w_k', 'v') if hasattr(layer.score, n)}
  want, want_w = ref.attention(score, h[:, None, None], enc[:, :, None], enc[:, :, None],
                               valid[:, None, None, :], params)
  assert ctx.shape == (3, 6)
  np.testing.assert_allclose(ctx, want[:, 0, 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(inter['attention_weights'].get_value()[0], want_w, rtol=1e-5,
                             atol=1e-6)
  assert np.all(np.asarray(inter['attention_weights'].get_value()[0])[2, 0, 0, 1:] == 0)
  # Keys projected once (as a seq2seq decoder does) give the same context, in both kernels.
  projected = layer.project_keys(jnp.asarray(enc, jnp.float32))
  if score in ('additive', 'concat'):
    assert projected.shape == (3, 4, 5)  # [B, K, A]
  for kernel in ('dense', 'chunked'):
    layer.kernel = attn.get_kernel(kernel)
    again = layer(jnp.asarray(h, jnp.float32), jnp.asarray(enc, jnp.float32), mask=valid,
                  projected_keys=projected)
    np.testing.assert_allclose(again, want[:, 0, 0], rtol=1e-5, atol=1e-6)


def test_layer_bad_inputs():
  with pytest.raises(ValueError, match='query_dim == key_dim'):
    attn.Attention(4, 6, score='dot', rngs=nnx.Rngs(0))
  layer = attn.Attention(4, 6, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'query must be \[B, 4\].*got shape \(2, 5\)'):
    layer(jnp.ones((2, 5)), jnp.ones((2, 3, 6)))
  with pytest.raises(ValueError, match=r'mask \[B, K\] must have shape \(2, 3\), got \(2, 4\)'):
    layer(jnp.ones((2, 4)), jnp.ones((2, 3, 6)), mask=jnp.ones((2, 4), bool))
  with pytest.raises(ValueError, match='qkv_features=30 is not divisible by num_heads=4'):
    attn.MultiHeadAttention(4, 30, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'num_heads=4 is not a multiple of num_kv_heads=3'):
    attn.MultiHeadAttention(4, 32, num_kv_heads=3, rngs=nnx.Rngs(0))
  mha = attn.MultiHeadAttention(4, 32, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'x must be \[B, L, 32\], got shape \(2, 5, 16\)'):
    mha(jnp.ones((2, 5, 16)))
  with pytest.raises(ValueError, match=r'unknown kernel'):
    attn.MultiHeadAttention(4, 32, kernel='flash', rngs=nnx.Rngs(0))


@pytest.mark.parametrize('shape', [(2, 5, 4, 32), (2, 7, 32)])
def test_squeeze_excite_matches_numpy(shape):
  se = attn.SqueezeExcite(32, reduction=8, capture_weights=True, rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  y, inter = nnx.capture(se, nnx.Intermediate)(jnp.asarray(x))
  p = lambda lin, n: np.asarray(getattr(lin, n)[...])
  want, s = ref.squeeze_excite(x, p(se.reduce, 'kernel'), p(se.reduce, 'bias'),
                               p(se.expand, 'kernel'), p(se.expand, 'bias'))
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(inter['se_weights'].get_value()[0], s, rtol=1e-5)
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(se, nnx.Param)))
  assert n_params == 32 * 4 + 4 + 4 * 32 + 32


def test_squeeze_excite_bad_reduction():
  with pytest.raises(ValueError, match=r'r=64 is larger than channels C=32'):
    attn.SqueezeExcite(32, reduction=64, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'r=5 does not divide channels C=32'):
    attn.SqueezeExcite(32, reduction=5, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'expects \[B, height, width, 32\].*got shape \(2, 16\)'):
    attn.SqueezeExcite(32, reduction=4, rngs=nnx.Rngs(0))(jnp.ones((2, 16)))


def test_sinusoidal_positions_formula():
  pe = np.asarray(attn.sinusoidal(50, 16))
  pos, i = 17, 3
  assert pe[pos, 2 * i] == pytest.approx(np.sin(pos / 10000 ** (2 * i / 16)), abs=1e-6)
  assert pe[pos, 2 * i + 1] == pytest.approx(np.cos(pos / 10000 ** (2 * i / 16)), abs=1e-6)
  np.testing.assert_allclose(pe[0, 1::2], 1.0)


@pytest.mark.parametrize('name', sorted(attn.POSITIONS))
def test_positions_add_their_table_or_leave_x_to_the_attention(name):
  positions = attn.POSITIONS[name](10, 8, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))  # [B, L, F]
  pos = jnp.arange(3, 8)
  y = positions(x, pos)
  tables = {'sinusoidal': lambda: attn.sinusoidal(10, 8),
            'learned': lambda: positions.embed.embedding[...], 'rotary': lambda: jnp.zeros((10, 8))}
  np.testing.assert_allclose(y, x + tables[name]()[pos][None], rtol=1e-6, atol=1e-6)
  assert positions.rotary == (name == 'rotary')


def test_combines():
  x, fx = jnp.array([1.0, -2.0]), jnp.array([0.0, 3.0])
  rngs = nnx.Rngs(0)
  np.testing.assert_allclose(attn.make_combine('residual', 2, rngs=rngs)(x, fx), [1.0, 1.0])
  np.testing.assert_allclose(attn.make_combine('gate', 2, rngs=rngs)(x, fx),
                             [0.5, -2.0 / (1 + np.exp(-3.0))], rtol=1e-6)
  concat = attn.make_combine('concat', 2, rngs=rngs)
  w = np.asarray(concat.w_c.kernel[...])  # [4, 2] acting on [c; h]
  np.testing.assert_allclose(concat(x, fx), np.tanh(np.concatenate([fx, x]) @ w), rtol=1e-6)
  with pytest.raises(ValueError, match=r"unknown combine 'add'.*concat, gate, residual"):
    attn.make_combine('add', 2, rngs=rngs)
