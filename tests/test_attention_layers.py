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


@pytest.mark.parametrize('score', list(attn.SCORES))
def test_seq2seq_attention_layer_matches_numpy(score):
  layer = attn.Attention(6, 6, score=score, score_dim=5, capture_weights=True, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  h = rng.normal(size=(3, 6))  # decoder state [B, Dq]
  enc = rng.normal(size=(3, 4, 6))  # encoder states [B, K, Dk]
  valid = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
  ctx, inter = nnx.capture(layer, nnx.Intermediate)(jnp.asarray(h, jnp.float32),
                                                    jnp.asarray(enc, jnp.float32), mask=valid)
  want, want_w = ref.attention(score, h[:, None, None], enc[:, :, None], enc[:, :, None],
                               valid[:, None, None, :], ref.params_of(layer.score))
  assert ctx.shape == (3, 6)
  np.testing.assert_allclose(ctx, want[:, 0, 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(inter['attention_weights'].get_value()[0], want_w, rtol=1e-5,
                             atol=1e-6)
  assert np.all(np.asarray(inter['attention_weights'].get_value()[0])[2, 0, 0, 1:] == 0)
  # Keys projected once (as a seq2seq decoder does) give the same context, in every kernel.
  projected = layer.project_keys(jnp.asarray(enc, jnp.float32))
  if score in ('additive', 'concat'):
    assert projected.shape == (3, 4, 5)  # [B, K, A]
  for kernel in attn.KERNELS:
    if kernel == 'fused' and layer.score.fused_scale is None:
      continue  # the fused kernel takes dot-product scores only
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


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('name', sorted(attn.COMBINES.names()))
def test_every_combine_keeps_the_identity_path(name, train):
  """With the branch f = 0 every combine returns x exactly, dropout on or off (issue 12, sec. 3):
  a combine such as x ⊙ σ(f) (0.5 x here) or tanh(W [x; f]) fails."""
  combine = attn.make_combine(name, 8, dropout_rate=0.5, rngs=nnx.Rngs(0))
  (combine.train if train else combine.eval)()
  x = jax.random.normal(jax.random.key(1), (2, 3, 8))  # [B, L, F]
  np.testing.assert_array_equal(combine(x, jnp.zeros_like(x)), x)


def test_residual_adds_the_branch():
  x, fx = jnp.array([1.0, -2.0]), jnp.array([0.5, 3.0])
  np.testing.assert_allclose(attn.make_combine('residual', 2, rngs=nnx.Rngs(0))(x, fx), [1.5, 1.0])


@pytest.mark.parametrize('name', sorted(attn.COMBINES.names()))
def test_every_combine_matches_its_numpy_reference(name):
  """Evaluation mode, with every parameter of the combine set to random values (a bias of 0
  would hide a reference that forgets it); the reference must read every one."""
  combine = attn.make_combine(name, 4, rngs=nnx.Rngs(0))
  combine.eval()
  rng = np.random.default_rng(0)
  params = nnx.state(combine, nnx.Param)
  nnx.update(combine, jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype),
                                   params))
  x, fx = (rng.normal(size=(2, 3, 4)).astype(np.float32) for _ in range(2))  # [B, L, F]
  expected = ref.combine(name, x, fx, ref.params_of(combine))
  np.testing.assert_allclose(combine(jnp.asarray(x), jnp.asarray(fx)), expected, rtol=1e-5,
                             atol=1e-5)


def test_gate_starts_centred():
  """W_g [2F, F] at flax's default initialization, b_g = 0: g starts around σ(0) = 0.5."""
  gate = attn.make_combine('gate', 4, rngs=nnx.Rngs(0))
  assert gate.w_g.kernel.shape == (8, 4) and np.all(np.asarray(gate.w_g.bias[...]) == 0)


def test_gate_dropout_acts_after_the_gate():
  """Train mode, rate r: a dropped unit gives y = x exactly; a kept one x + g ⊙ f / (1 - r), with
  g computed from the undropped f. Dropout on f before the gate (the gate would read the dropped f)
  or before a σ(f) gate (a dropped unit would give 0.5 x) fails."""
  rate = 0.5
  gate = attn.make_combine('gate', 16, dropout_rate=rate, rngs=nnx.Rngs(0, dropout=3))
  rng = np.random.default_rng(1)
  x = rng.normal(size=(4, 32, 16)).astype(np.float32)  # [B, L, F]
  fx = (rng.choice([-1.0, 1.0], size=x.shape) * rng.uniform(0.5, 2.0, x.shape)).astype(np.float32)
  y = np.asarray(gate(jnp.asarray(x), jnp.asarray(fx)))
  w, b = np.asarray(gate.w_g.kernel[...]), np.asarray(gate.w_g.bias[...])
  branch = _sigmoid(np.concatenate([x, fx], -1) @ w + b) * fx  # g ⊙ f, never 0 here
  dropped = y == x
  assert 0.45 < dropped.mean() < 0.55  # about r of the units
  np.testing.assert_allclose(y[~dropped], (x + branch / (1 - rate))[~dropped], rtol=1e-5,
                             atol=1e-5)
  gate.eval()
  np.testing.assert_allclose(gate(jnp.asarray(x), jnp.asarray(fx)), x + branch, rtol=1e-5,
                             atol=1e-5)


def test_unknown_combine_and_no_concat_combine():
  with pytest.raises(ValueError, match=r"unknown combine 'concat'.*gate, residual"):
    attn.make_combine('concat', 2, rngs=nnx.Rngs(0))


def test_concat_score_equals_additive_with_split_weights():
  """Luong's vᵀ tanh(W [q; k]) with W = [W_q; W_k] is Bahdanau's vᵀ tanh(W_q q + W_k k): the two
  scores are one function class (attention.scores module doc)."""
  additive = attn.make_score('additive', 6, 4, score_dim=5, rngs=nnx.Rngs(0))
  concat = attn.make_score('concat', 6, 4, score_dim=5, rngs=nnx.Rngs(1))
  concat.w.kernel[...] = jnp.concatenate([additive.w_q.kernel[...], additive.w_k.kernel[...]], 0)
  concat.v.kernel[...] = additive.v.kernel[...]
  rng = np.random.default_rng(2)
  q = rng.normal(size=(2, 3, 1, 6)).astype(np.float32)  # [B, Q, N, Dq]
  k = rng.normal(size=(2, 5, 1, 4)).astype(np.float32)  # [B, K, N, Dk]
  w = np.asarray(concat.w.kernel[...])  # [Dq + Dk, A]
  shape = (2, 3, 5, 1)  # [B, Q, K, N]
  qk = np.concatenate([np.broadcast_to(q[:, :, None], shape + (6,)),
                       np.broadcast_to(k[:, None], shape + (4,))], -1)  # [B, Q, K, N, Dq + Dk]
  expected = np.einsum('bqkn->bnqk', (np.tanh(qk @ w) @ np.asarray(concat.v.kernel[...]))[..., 0])
  np.testing.assert_allclose(concat(jnp.asarray(q), jnp.asarray(k)), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(additive(jnp.asarray(q), jnp.asarray(k)), expected, rtol=1e-5,
                             atol=1e-5)
