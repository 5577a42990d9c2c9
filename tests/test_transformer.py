"""Transformer enc-dec, LM, classifier: shapes, sizes, cached decoding, search, learning, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from attention_zoo.attention import COMBINES, KERNELS, captured
from attention_zoo.attention.scores import SCORES
from attention_zoo.specials import BOS, EOS, PAD
from attention_zoo.models import decoding, get_model, transformer
from attention_zoo.models import transformer_blocks as blocks

SMALL = dict(d_model=16, num_heads=2, num_layers=2, ffn_dim=32, dropout_rate=0.0)
SRC = jnp.array([[5, 6, 7, 8, 9, 0, 0], [3, 4, 5, 6, 7, 8, 9]])  # [2, 7], PAD = 0 tail
TGT_IN = jnp.array([[BOS, 5, 6, 7, 8], [BOS, 3, 4, 5, 6]])  # [2, 5]


def n_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def enc_dec(**kw):
  opts = {**SMALL, **kw}
  return get_model('transformer', rngs=nnx.Rngs(0), src_vocab_size=opts.pop('src', 12),
                   tgt_vocab_size=opts.pop('tgt', 11), **opts)


def fit(model, loss_of, steps: int, lr: float = 3e-3) -> tuple[float, float]:
  """Adam on a fixed batch inside one jit (lax.scan); returns (first loss, last loss)."""
  tx = optax.adam(lr)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def run(params, rest):
    def step(carry, _):
      params, opt_state = carry
      merged = lambda p: nnx.merge(graphdef, p, rest, copy=True)
      loss, grads = jax.value_and_grad(lambda p: loss_of(merged(p)))(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params, losses

  params, losses = run(params, rest)
  nnx.update(model, params)
  return float(losses[0]), float(losses[-1])


# ---------------------------------------------------------------- shapes, for every option

OPTIONS = ([dict(norm=n) for n in ('post', 'pre')]
           + [dict(positional=p) for p in ('sinusoidal', 'learned', 'rotary')]
           + [dict(score=s) for s in SCORES.names()]
           + [dict(combine=c) for c in COMBINES.names()]
           + [dict(kernel='chunked'), dict(kernel='fused'), dict(share_embeddings=True, src=11),
              dict(tie_output=True)])


@pytest.mark.parametrize('opts', OPTIONS, ids=lambda o: '-'.join(f'{k}={v}' for k, v in o.items()))
def test_encoder_decoder_shapes(opts):
  model = enc_dec(**opts)
  model.eval()
  logits = model(SRC, TGT_IN)
  assert logits.shape == (2, 5, 11)
  assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize('opts', [dict(norm='pre'), dict(positional='rotary'),
                                  dict(score='additive'), dict(combine='gate'),
                                  dict(tie_output=True)], ids=str)
def test_lm_shapes(opts):
  model = get_model('transformer_lm', rngs=nnx.Rngs(0), vocab_size=13, **SMALL, **opts)
  assert model(SRC).shape == (2, 7, 13)


@pytest.mark.parametrize('pooling', ['cls', 'mean'])
@pytest.mark.parametrize('opts', [dict(norm='pre'), dict(positional='learned'),
                                  dict(score='additive')], ids=str)
def test_classifier_shapes_and_padding_is_ignored(pooling, opts):
  model = get_model('transformer_classifier', rngs=nnx.Rngs(0), vocab_size=13, num_classes=4,
                    pooling=pooling, **SMALL, **opts)
  logits = model(SRC)
  assert logits.shape == (2, 4)
  padded = jnp.concatenate([SRC, jnp.zeros((2, 3), SRC.dtype)], axis=1)  # more PAD at the end
  np.testing.assert_allclose(model(padded), logits, atol=1e-5)


def test_source_padding_is_masked():
  model = enc_dec()
  model.eval()
  padded = jnp.concatenate([SRC, jnp.zeros((2, 4), SRC.dtype)], axis=1)
  np.testing.assert_allclose(model(padded, TGT_IN), model(SRC, TGT_IN), atol=1e-5)


# ---------------------------------------------------------------- the paper's wiring

def _layer_norm(x):
  return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)


@pytest.mark.parametrize('norm', ['post', 'pre'])
@pytest.mark.parametrize('combine', ['residual', 'gate'])
def test_sublayer_wiring(norm, combine):
  sub = blocks.Sublayer(blocks.BlockOptions(max_len=8, d_model=8, num_heads=2, norm=norm,
                                            combine=combine, dropout_rate=0.0), rngs=nnx.Rngs(0))
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 8)))
  f = lambda h: (2.0 * h + 1.0, None)
  y, _ = sub(jnp.asarray(x), f)
  w_g = getattr(sub.combine, 'w_g', None)  # the gate's W_g [2F, F], b_g [F]
  gate_of = lambda a, b: (np.concatenate([a, b], -1) @ np.asarray(w_g.kernel[...])
                          + np.asarray(w_g.bias[...]))
  gated = lambda a, b: a + b / (1 + np.exp(-gate_of(a, b)))  # x + σ(W_g [x; f] + b_g) ⊙ f
  meet = {'residual': lambda a, b: a + b, 'gate': gated}
  if norm == 'post':  # LayerNorm(x + f(x)), Vaswani et al. sec. 3.1
    expected = _layer_norm(meet[combine](x, 2 * x + 1))
  else:  # x + f(LayerNorm(x))
    expected = meet[combine](x, 2 * _layer_norm(x) + 1)
  np.testing.assert_allclose(y, expected, atol=1e-4)


def test_embeddings_are_scaled_by_sqrt_d_model():
  emb = blocks.Embedder(10, 16, rngs=nnx.Rngs(0))
  table = np.asarray(emb.embed.embedding[...])  # [V, F]
  np.testing.assert_allclose(emb(jnp.array([[3, 7]])), table[[3, 7]][None] * 4.0, rtol=1e-6)


# ---------------------------------------------------------------- parameter counts by formula

def _layer_params(d, f, attns, norms):
  return attns * 4 * (d * d + d) + (d * f + f + f * d + d) + norms * 2 * d


def test_param_counts_match_the_formula():
  d, f, n = 16, 32, 2
  model = enc_dec(src=12, tgt=11)
  expected = (12 * d + 11 * d  # embeddings
              + n * _layer_params(d, f, 1, 2) + n * _layer_params(d, f, 2, 3)
              + d * 11 + 11)  # output projection
  assert n_params(model) == expected
  pre = enc_dec(norm='pre')
  assert n_params(pre) == expected + 2 * 2 * d  # a final LayerNorm per stack
  learned = enc_dec(positional='learned', max_len=50)
  assert n_params(learned) == expected + 2 * 50 * d  # one position table per stack
  shared = enc_dec(src=11, tgt=11, share_embeddings=True)
  assert n_params(shared) == expected - 12 * d + 11 * d - 11 * d - (d * 11 + 11)
  lm = get_model('transformer_lm', rngs=nnx.Rngs(0), vocab_size=13, **SMALL)
  assert n_params(lm) == 13 * d + n * _layer_params(d, f, 1, 2) + d * 13 + 13
  cls = get_model('transformer_classifier', rngs=nnx.Rngs(0), vocab_size=13, num_classes=4,
                  **SMALL)
  assert n_params(cls) == 13 * d + d + n * _layer_params(d, f, 1, 2) + d * 4 + 4  # + CLS vector


# ---------------------------------------------------------------- incremental decoding

@pytest.mark.parametrize('opts', [dict(), dict(norm='pre', positional='learned'),
                                  dict(positional='rotary'), dict(score='additive'),
                                  dict(combine='gate', tie_output=True),
                                  dict(kernel='chunked')], ids=str)
def test_cached_decoding_equals_teacher_forcing(opts):
  model = enc_dec(**opts)
  model.eval()
  full = model(SRC, TGT_IN)  # [2, 5, 11]
  state = model.start_decoding(SRC, max_len=5)
  for t in range(5):
    logits, state = model.step(state, TGT_IN[:, t], jnp.int32(t))
    np.testing.assert_allclose(logits, full[:, t], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('opts', [dict(), dict(norm='pre', positional='learned'),
                                  dict(positional='rotary')], ids=str)
def test_lm_cached_decoding_equals_full_forward(opts):
  model = get_model('transformer_lm', rngs=nnx.Rngs(0), vocab_size=13, **SMALL, **opts)
  model.eval()
  full = model(SRC)  # [2, 7, 13]
  cache = model.init_cache(2, 7)
  for t in range(7):
    logits, cache = model.step(cache, SRC[:, t], jnp.int32(t))
    np.testing.assert_allclose(logits, full[:, t], atol=1e-4, rtol=1e-4)


def test_lm_generate_continues_the_prompt_greedily():
  model = get_model('transformer_lm', rngs=nnx.Rngs(0), vocab_size=13, **SMALL)
  prompt = SRC[1:, :4]  # [1, 4]
  tokens = np.asarray(model.generate(prompt, max_len=3))  # [1, 3]
  assert tokens.shape == (1, 3)
  seq = list(np.asarray(prompt[0]))
  for tok in tokens[0]:  # each token is the argmax of the full forward over what came before
    assert tok == int(jnp.argmax(model(jnp.asarray([seq]))[0, -1]))
    if tok == EOS:
      break
    seq.append(int(tok))


def test_generate_compiles_once_per_shape():
  model = enc_dec()
  compiled = transformer._generate.jitted._cache_size
  before = compiled()
  model.generate(SRC, max_len=4)
  model.generate(SRC + 1, max_len=4)
  assert compiled() == before + 1
  model.generate(SRC[:, :5], max_len=4)  # a new source length: one more compilation
  assert compiled() == before + 2


def test_greedy_is_argmax_of_teacher_forcing_and_beam_one_equals_greedy():
  model = enc_dec(score='additive')
  model.train()  # generate must switch dropout off by itself
  greedy = model.generate(SRC, max_len=6)
  assert greedy.shape == (2, 6) and greedy.dtype == jnp.int32
  model.eval()
  target_in = jnp.concatenate([jnp.full((2, 1), BOS), greedy[:, :-1]], axis=1)
  argmax = np.asarray(jnp.argmax(model(SRC, target_in), -1))
  greedy = np.asarray(greedy)
  for row, pred in zip(greedy, argmax):
    stop = list(row).index(EOS) + 1 if EOS in row else len(row)
    np.testing.assert_array_equal(row[:stop], pred[:stop])
    assert (row[stop:] == PAD).all()
  state = model.start_decoding(SRC, 6)
  beam1, _ = decoding.beam_search(model.step, state, jnp.full((2,), BOS, jnp.int32), max_len=6,
                                  eos_id=EOS, beam_size=1)
  np.testing.assert_array_equal(beam1, greedy)
  beams = model.generate(SRC, max_len=6, beam_size=3)
  assert beams.shape == (2, 6)


def test_generate_returns_attention_weights_per_layer_and_head():
  model = enc_dec()
  tokens, weights = model.generate(SRC, max_len=4, return_weights=True)
  path = lambda module: f'{module}/attention_weights'
  assert sorted(weights) == sorted(
      [path(f'encoder/layers/{i}/self_attn') for i in range(2)]
      + [path(f'decoder/layers/{i}/{a}') for i in range(2) for a in ('self_attn', 'cross_attn')])
  assert weights[path('encoder/layers/0/self_attn')].shape == (2, 2, 7, 7)
  assert weights[path('decoder/layers/1/self_attn')].shape == (2, 2, 4, 4)
  cross = np.asarray(weights[path('decoder/layers/0/cross_attn')])  # [B, N, T, S]
  assert cross.shape == (2, 2, 4, 7)
  np.testing.assert_allclose(cross.sum(-1), 1.0, atol=1e-5)
  assert np.abs(cross[0, :, :, 5:]).max() == 0.0  # PAD source keys get no weight
  self_w = np.asarray(weights[path('decoder/layers/0/self_attn')])
  assert np.abs(np.triu(self_w, k=1)).max() == 0.0  # causal
  # A teacher-forced forward of a model built with capture_weights=True gives the same maps.
  model_with_capture = enc_dec(capture_weights=True)
  model_with_capture.eval()
  target_in = jnp.concatenate([jnp.full((2, 1), BOS), tokens[:, :-1]], axis=1)
  _, forced = captured(model_with_capture, SRC, target_in)
  assert sorted(forced) == sorted(weights)
  for name in weights:
    np.testing.assert_allclose(forced[name], weights[name], atol=1e-5)


def test_dropout_follows_train_and_eval():
  model = enc_dec(dropout_rate=0.3)
  model.train()
  a, b = model(SRC, TGT_IN), model(SRC, TGT_IN)
  assert not np.allclose(a, b)
  model.eval()
  np.testing.assert_array_equal(model(SRC, TGT_IN), model(SRC, TGT_IN))


def test_chunked_kernel_gives_the_same_model_outputs():
  dense, chunked = enc_dec(score='additive'), enc_dec(score='additive', kernel='chunked')
  np.testing.assert_allclose(chunked(SRC, TGT_IN), dense(SRC, TGT_IN), atol=1e-4)


# ---------------------------------------------------------------- learning on tiny batches

def _xent(logits, targets):
  mask = (targets != PAD).astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  return jnp.sum(losses * mask) / jnp.sum(mask)


def test_encoder_decoder_learns_to_reverse():
  rng = np.random.default_rng(0)
  src = jnp.asarray(rng.integers(3, 10, size=(16, 6)), jnp.int32)  # [16, 6]
  tgt = src[:, ::-1]
  tgt_in = jnp.concatenate([jnp.full((16, 1), BOS), tgt], axis=1)  # [16, 7]
  tgt_out = jnp.concatenate([tgt, jnp.full((16, 1), EOS)], axis=1)  # [16, 7]
  model = enc_dec(src=10, tgt=10, d_model=32, num_heads=4, ffn_dim=64)
  first, last = fit(model, lambda m: _xent(m(src, tgt_in), tgt_out), steps=300)
  assert first > 1.5 and last < 0.05
  np.testing.assert_array_equal(model.generate(src, max_len=7), tgt_out)


def test_lm_memorizes_a_batch():
  rng = np.random.default_rng(1)
  seqs = jnp.asarray(rng.integers(3, 20, size=(8, 13)), jnp.int32)
  model = get_model('transformer_lm', rngs=nnx.Rngs(0), vocab_size=20,
                    **{**SMALL, 'd_model': 32, 'num_heads': 4})
  first, last = fit(model, lambda m: _xent(m(seqs[:, :-1]), seqs[:, 1:]), steps=300)
  assert first > 2.5 and last < 0.05


def test_classifier_fits_random_labels():
  rng = np.random.default_rng(2)
  tokens = rng.integers(3, 20, size=(16, 10))
  tokens[:, 7:] = np.where(rng.random((16, 3)) < 0.5, PAD, tokens[:, 7:])  # some padding
  tokens, labels = jnp.asarray(tokens, jnp.int32), jnp.asarray(rng.integers(0, 4, 16))
  model = get_model('transformer_classifier', rngs=nnx.Rngs(0), vocab_size=20, num_classes=4,
                    **SMALL)
  loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(tokens), labels).mean()
  first, last = fit(model, loss, steps=200)
  assert first > 1.0 and last < 0.05


# ---------------------------------------------------------------- bad configuration

@pytest.mark.parametrize('kw, match', [
    (dict(num_heads=3), 'num_heads'),
    (dict(positional='absolute'), 'positional encoding'),
    (dict(norm='sandwich'), 'norm placement'),
    (dict(score='no_such_score'), f"unknown score 'no_such_score'; known: {', '.join(SCORES)}"),
    (dict(score='scaled_dto'), "unknown score 'scaled_dto' \\(did you mean 'scaled_dot'\\?\\)"),
    (dict(combine='add'), 'combine'),
    (dict(kernel='flash'), 'kernel'),
    (dict(dropout_rate=1.5), 'dropout_rate'),
    (dict(share_embeddings=True), 'share_embeddings'),
    (dict(num_layers=0), 'num_layers must be >= 1'),
    (dict(scroe='additive'),
     r"Transformer: unknown option\(s\) 'scroe' \(did you mean 'score'\?\); "
     r"valid options: .*'score'"),
], ids=str)
def test_bad_configuration_raises(kw, match):
  with pytest.raises(ValueError, match=match):
    enc_dec(**kw)


def test_block_options_are_checked_once_by_block_options():
  """Every Transformer takes its layers' options as **block: BlockOptions holds their defaults
  and checks them, before any layer is built (an unknown one names the nearest and the valid
  ones); the layers receive what the names stand for, looked up once."""
  for model in (lambda **kw: transformer.EncoderDecoder(12, 11, rngs=nnx.Rngs(0), **kw),
                lambda **kw: transformer.TransformerLM(12, rngs=nnx.Rngs(0), **kw),
                lambda **kw: transformer.TransformerClassifier(12, 3, rngs=nnx.Rngs(0), **kw)):
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'scroe' \(did you mean 'score'"):
      model(scroe='dot')
    with pytest.raises(ValueError, match=r"num_layer' \(did you mean 'num_layers'"):
      model(num_layer=1)
  opts = blocks.BlockOptions(max_len=32, score='additive', kernel='chunked', combine='gate')
  assert (opts.parts.score, opts.parts.kernel, opts.parts.combine) == (
      SCORES.get('additive'), KERNELS.get('chunked'), COMBINES.get('gate'))
  lm = get_model('transformer_lm', rngs=nnx.Rngs(0), vocab_size=13, score='additive', **SMALL)
  layer = lm.decoder.layers[0]
  assert type(layer.self_attn.score) is SCORES.get('additive')
  assert type(layer.self_sub.combine) is COMBINES.get('residual')
  assert len(lm.decoder.layers) == SMALL['num_layers']


def test_models_keep_their_own_max_len():
  """max_len is each model's own default (the positions it covers), passed to BlockOptions."""
  assert enc_dec().max_len == 256
  assert get_model('transformer_lm', rngs=nnx.Rngs(0), vocab_size=13, **SMALL).max_len == 256
  classifier = get_model('transformer_classifier', rngs=nnx.Rngs(0), vocab_size=13,
                         num_classes=3, **SMALL)
  assert classifier.encoder.max_len == 512


def test_bad_pooling_and_lengths_raise():
  with pytest.raises(ValueError, match="pooling 'max'.*cls, mean"):
    get_model('transformer_classifier', rngs=nnx.Rngs(0), vocab_size=9, num_classes=2,
              pooling='max')
  model = enc_dec(max_len=6)
  with pytest.raises(ValueError, match='max_len'):
    model(SRC, TGT_IN)  # source of length 7
  with pytest.raises(ValueError, match='max_len'):
    model.start_decoding(SRC[:, :5], max_len=8)
