"""Transformer decoding reads the source through keys and values projected once per source.

The counterpart of seq2seq's project_keys: DecoderStack.project_memory runs before the decode
loop (greedy and beam search), and the loop's steps never see the cross-attention projections.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.attention import MultiHeadAttention
from attention_zoo.models import decoding, get_model, transformer
from attention_zoo.specials import EOS

SMALL = dict(d_model=16, num_heads=2, num_layers=2, ffn_dim=32, dropout_rate=0.0)
SRC = jnp.array([[5, 6, 7, 8, 9, 0, 0], [3, 4, 5, 6, 7, 8, 9]])  # [2, 7], PAD = 0 tail
MAX_LEN = 6


def enc_dec(**kw):
  model = get_model('transformer', rngs=nnx.Rngs(0), src_vocab_size=12, tgt_vocab_size=11,
                    **{**SMALL, **kw})
  model.eval()
  return model


def searches(model, beams=(1, 4)):
  """{(beam, cross_cache): (tokens [B, T], scores [B])} of beam search (beam 1 is greedy), with
  the source keys and values projected once and at every step; one jit for all."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, source):
    out = {}
    for beam in beams:
      for cross_cache in (True, False):
        step_fn, dec, bos = transformer.decoder_step_fn(
            nnx.merge(graphdef, state), source, max_len=MAX_LEN, beam_size=beam,
            cross_cache=cross_cache)
        out[beam, cross_cache] = decoding.beam_search(
            step_fn, dec, bos, max_len=MAX_LEN, eos_id=EOS, beam_size=beam, length_penalty=0.6)
    return out

  return run(state, SRC)


@pytest.mark.parametrize('opts', [dict(), dict(score='additive', score_dim=5),
                                  dict(kernel='chunked', norm='pre')], ids=str)
def test_projected_once_gives_the_same_tokens_and_scores(opts):
  model = enc_dec(**opts)
  found = searches(model)
  for beam in (1, 4):
    (tokens, scores), (ref_tokens, ref_scores) = found[beam, True], found[beam, False]
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(scores) < 0)  # real log-probabilities, not a padded default
  if not opts:  # generate runs the same decoding (projected once by default)
    np.testing.assert_array_equal(model.generate(SRC, max_len=MAX_LEN, beam_size=4),
                                  found[4, True][0])


def test_step_reads_projected_memory_as_the_full_forward_does():
  model = enc_dec(score='additive')
  graphdef, state = nnx.split(model)
  target_in = jnp.array([[1, 5, 6, 7, 8], [1, 3, 4, 5, 6]])  # BOS = 1

  @jax.jit
  def run(state):
    model = nnx.merge(graphdef, state)
    dec = model.start_decoding(SRC, max_len=5)
    logits = []
    for t in range(5):
      step_logits, dec = model.step(dec, target_in[:, t], jnp.int32(t))
      logits.append(step_logits)
    return model(SRC, target_in), jnp.stack(logits, axis=1), dec

  full, stepped, dec = run(state)  # [2, 5, 11] twice, the final decoder state
  assert sorted(dec) == ['cache', 'cross', 'valid']  # no encoder output to project per step
  assert dec['cross'][0]['key'].shape == (2, 7, 2, 8)  # [B, S, G, A]: W_k (x W_key)
  assert dec['cross'][0]['value'].shape == (2, 7, 2, 8)  # [B, S, G, D]
  np.testing.assert_allclose(stepped, full, atol=1e-5, rtol=1e-5)


def _loop_operands(jaxpr) -> set:
  """ids of the variables the top-level while loops of `jaxpr` take as operands (constants of
  their bodies included): the arrays a decode step may read."""
  loops = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == 'while']
  assert loops, 'no top-level while loop in the decoding program'
  return {id(v) for eqn in loops for v in eqn.invars}


@pytest.mark.parametrize('score, beam', [('scaled_dot', 1), ('additive', 4)])
def test_cross_projections_are_not_in_the_decode_loop(score, beam):
  """The weights of the cross-attention key / value projections (and the additive score's W_k)
  enter the decode loop only when projected at every step (cross_cache=False)."""
  model = enc_dec(score=score)
  graphdef, state = nnx.split(model)
  paths = ['/'.join(str(k.key) for k in path if hasattr(k, 'key'))  # 'decoder/layers/0/...'
           for path, _ in jax.tree_util.tree_leaves_with_path(state)]

  def projections(name):  # leaf indices of the decoder's `name` attention's key-side kernels
    return [i for i, p in enumerate(paths) if p.startswith('decoder/') and f'/{name}/' in p
            and p.endswith('/kernel')
            and any(f'/{w}/' in p for w in ('key', 'value', 'w_k'))]

  cross, self_ = projections('cross_attn'), projections('self_attn')
  assert len(cross) == 2 * (2 + (score == 'additive'))  # layers x (key, value[, w_k])
  for cross_cache, want_inside in ((True, set()), (False, set(cross))):
    def run(state, source):
      step_fn, dec, bos = transformer.decoder_step_fn(
          nnx.merge(graphdef, state), source, max_len=MAX_LEN, beam_size=beam,
          cross_cache=cross_cache)
      return decoding.beam_search(step_fn, dec, bos, max_len=MAX_LEN, eos_id=EOS,
                                  beam_size=beam)

    closed = jax.make_jaxpr(run)(state, SRC)
    leaves = closed.jaxpr.invars  # the flattened (state, source), in tree order
    inside = _loop_operands(closed.jaxpr)
    assert {i for i in cross if id(leaves[i]) in inside} == want_inside, cross_cache
    assert all(id(leaves[i]) in inside for i in self_)  # the test sees loop operands at all


def test_project_context_errors_and_shapes():
  mha = MultiHeadAttention(2, 16, kv_features=12, num_kv_heads=1, rngs=nnx.Rngs(0))
  memory = jnp.ones((3, 5, 12))
  projected = mha.project_context(memory)
  assert projected['key'].shape == projected['value'].shape == (3, 5, 1, 8)  # [B, K, G, D]
  x = jax.random.normal(jax.random.key(1), (3, 4, 16))
  np.testing.assert_allclose(mha(x, projected_context=projected), mha(x, memory), atol=1e-6)
  with pytest.raises(ValueError, match='not both'):
    mha(x, memory, projected_context=projected)
  with pytest.raises(ValueError, match='differ in batch'):
    mha(x[:2], projected_context=projected)
  with pytest.raises(ValueError, match=r'context must be \[B, L, 12\]'):
    mha.project_context(jnp.ones((3, 5, 16)))
