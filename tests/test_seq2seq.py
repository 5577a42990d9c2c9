"""The RNN encoder-decoder family: shapes, masking, peeky, attention capture, decoding, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.attention.scores import SCORES
from attention_zoo.specials import BOS, EOS
from attention_zoo.models import decoding, get_model
from attention_zoo.models import seq2seq
from tests import learning

SRC_V, TGT_V = 12, 10
SOURCE = jnp.array([[5, 6, 7, 8, 0, 0], [9, 4, 3, 0, 0, 0], [3, 3, 4, 5, 6, 7]])  # [B=3, S=6]
TARGET_IN = jnp.array([[1, 5, 6, 7], [1, 3, 4, 5], [1, 9, 8, 7]])  # [B=3, T=4]


def build(seed=0, **kw):
  kw = dict(dict(embed_dim=8, hidden=16), **kw)
  return get_model('seq2seq', src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, rngs=nnx.Rngs(seed),
                   **kw)


VARIANTS = {
    'plain': {}, 'peeky': dict(peeky=True), 'gru': dict(cell='gru'),
    'lstm_unfused': dict(cell='lstm_unfused'), 'bidirectional': dict(bidirectional=True),
    'peeky_bahdanau_gru': dict(peeky=True, cell='gru', score='additive',
                               style='bahdanau'),
    'bidirectional_luong_dot': dict(bidirectional=True, score='dot'),
    **{f'bahdanau_{s}': dict(score=s, style='bahdanau') for s in SCORES},
    **{f'luong_{s}': dict(score=s, style='luong') for s in SCORES},
}


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_logits_shape_and_source_padding_is_ignored(name):
  model = build(**VARIANTS[name])
  logits = model(SOURCE, TARGET_IN)
  assert logits.shape == (3, 4, TGT_V)
  assert np.isfinite(logits).all()
  # Three more PAD columns change neither the encoder's final state nor the attention's output.
  padded = jnp.pad(SOURCE, ((0, 0), (0, 3)))
  np.testing.assert_allclose(model(padded, TARGET_IN), logits, atol=1e-5)


def test_variants_really_differ():
  """Each option changes the computation (same seed, so only the option differs)."""
  outs = {n: np.asarray(build(**VARIANTS[n])(SOURCE, TARGET_IN))
          for n in ('plain', 'peeky', 'luong_general', 'bahdanau_general', 'bidirectional')}
  names = sorted(outs)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert not np.allclose(outs[a], outs[b], atol=1e-4), (a, b)


@pytest.mark.parametrize('name', ['plain', 'luong_general', 'bahdanau_additive'])
def test_greedy_generate_equals_argmax_of_teacher_forced_logits(name):
  """Cached step-by-step decoding equals a full teacher-forced pass over its own output."""
  model = build(seed=1, **VARIANTS[name])
  tokens = np.asarray(model.generate(SOURCE, max_len=5))
  assert tokens.shape == (3, 5) and tokens.dtype == np.int32
  target_in = jnp.concatenate([jnp.full((3, 1), BOS), tokens[:, :-1]], axis=1)
  want = np.argmax(model(SOURCE, target_in), axis=-1)  # [B, T]
  for b in range(3):
    stop = list(tokens[b]).index(EOS) + 1 if EOS in tokens[b] else 5
    np.testing.assert_array_equal(tokens[b, :stop], want[b, :stop])
    assert (tokens[b, stop:] == 0).all()


def sequence_logprob(model, tokens):
  """log p(tokens | SOURCE) up to and including the first EOS, from teacher-forced logits."""
  target_in = jnp.concatenate([jnp.full((3, 1), BOS), tokens[:, :-1]], axis=1)
  logp = np.asarray(jax.nn.log_softmax(model(SOURCE, target_in)))  # [B, T, V]
  out = []
  for b in range(tokens.shape[0]):
    total = 0.0
    for t, y in enumerate(np.asarray(tokens[b])):
      total += logp[b, t, y]
      if y == EOS:
        break
    out.append(total)
  return np.array(out)


def test_beam_search_on_the_model():
  model = build(seed=2, score='general')
  greedy = model.generate(SOURCE, max_len=5)
  # Width 1 through beam_search is the same search as greedy decoding.
  step_fn, state, bos = seq2seq.decoder_step_fn(model, SOURCE, max_len=5)
  beam1, _ = decoding.beam_search(step_fn, state, bos, max_len=5, eos_id=EOS, beam_size=1)
  np.testing.assert_array_equal(beam1, greedy)
  # Wider beams without length penalty never find a less likely sequence than greedy.
  beam = model.generate(SOURCE, max_len=5, beam_size=4, length_penalty=0.0)
  assert beam.shape == (3, 5)
  assert (sequence_logprob(model, beam) >= sequence_logprob(model, greedy) - 1e-4).all()


def test_peeky_feeds_the_summary_to_every_step():
  """Perturbing only the summary (not the decoder's initial state) changes every output step
  of the peeky decoder and none of the plain decoder's."""
  for peeky in (True, False):
    model = build(peeky=peeky)
    enc = model.encode(SOURCE)
    moved = dict(enc, summary=enc['summary'] + 0.5)
    delta = np.abs(model.decode(moved, TARGET_IN) - model.decode(enc, TARGET_IN)).max(-1)  # [B, T]
    if peeky:
      assert (delta > 1e-4).all()
    else:
      assert (delta == 0).all()


@pytest.mark.parametrize('style', ['bahdanau', 'luong'])
def test_alignment_weights_teacher_forced_and_generated(style):
  model = build(seed=3, score='additive', style=style, capture_weights=True)
  _, inter = nnx.capture(model, nnx.Intermediate)(SOURCE, TARGET_IN)
  (weights,) = inter['attention_weights']
  weights = np.asarray(weights)
  assert weights.shape == (3, 4, 6)  # [B, T, S]
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  pad = np.broadcast_to(np.asarray(SOURCE)[:, None, :] == 0, weights.shape)
  assert (weights[pad] == 0).all() and (weights[~pad] > 0).all()
  # Greedy decoding returns its per-step alignment; it equals the teacher-forced alignment of the
  # same tokens (rows after EOS are zero).
  tokens, gen_w = model.generate(SOURCE, max_len=4, return_weights=True)
  assert gen_w.shape == (3, 4, 6)
  target_in = jnp.concatenate([jnp.full((3, 1), BOS), tokens[:, :-1]], axis=1)
  _, inter = nnx.capture(model, nnx.Intermediate)(SOURCE, target_in)
  (tf_w,) = inter['attention_weights']
  ended = np.cumsum(np.asarray(tokens) == EOS, axis=1) - (np.asarray(tokens) == EOS) > 0
  np.testing.assert_allclose(gen_w, np.where(ended[..., None], 0.0, tf_w), atol=1e-5)


def test_dropout_follows_train_and_eval_modes():
  model = build(dropout_rate=0.5, score='dot')
  forward = nnx.jit(lambda m: m(SOURCE, TARGET_IN))
  model.train()
  assert not np.allclose(forward(model), forward(model))
  greedy_train = model.generate(SOURCE, max_len=4)  # generation never drops out
  model.eval()
  np.testing.assert_array_equal(forward(model), forward(model))
  np.testing.assert_array_equal(model.generate(SOURCE, max_len=4), greedy_train)


@pytest.mark.parametrize('option, value, valid', [
    ('cell', 'rnn', 'gru, lstm'),
    ('score', 'cosine', 'additive, concat, dot, general, scaled_dot'),
    ('style', 'vaswani', 'bahdanau, luong'),
])
def test_bad_options_raise_value_error_listing_choices(option, value, valid):
  kw = {option: value}
  with pytest.raises(ValueError, match=f'{value}.*known: .*{valid}'):
    build(**kw)


def test_unknown_option_raises_value_error_listing_options():
  with pytest.raises(ValueError, match="unknown option.*'bogus'.*valid options: .*'peeky'"):
    build(bogus=1)


def test_generate_inside_jax_jit_of_a_split_model():
  """The training loop merges (graphdef, params, ...) inside jax.jit and calls generate."""
  model = build(seed=4, score='concat', dropout_rate=0.3)
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def generate(params, rest, source):
    return nnx.merge(graphdef, params, rest, copy=True).generate(source, max_len=5)

  np.testing.assert_array_equal(generate(params, rest, SOURCE), model.generate(SOURCE, max_len=5))


def test_bad_generate_arguments():
  with pytest.raises(ValueError, match='return_weights'):
    build().generate(SOURCE, max_len=3, return_weights=True)  # no attention
  with pytest.raises(ValueError, match='beam_size'):
    build().generate(SOURCE, max_len=3, beam_size=0)
  with pytest.raises(ValueError, match='even hidden'):
    build(bidirectional=True, hidden=15)


def reverse_task(num=8, length=5, seed=0):
  """Copy a sequence in reverse: source [N, L] of tokens 3..9, target = reversed source."""
  src = np.random.default_rng(seed).integers(3, 10, size=(num, length))
  tgt = src[:, ::-1]
  target_in = np.concatenate([np.full((num, 1), BOS), tgt], axis=1)
  target_out = np.concatenate([tgt, np.full((num, 1), EOS)], axis=1)
  return jnp.asarray(src), jnp.asarray(target_in), jnp.asarray(target_out)


@pytest.mark.parametrize('options', [{}, dict(score='additive', style='bahdanau')],
                         ids=['plain', 'bahdanau_additive'])
def test_overfits_a_tiny_batch(options):
  src, target_in, target_out = reverse_task()
  model = build(hidden=32, **options)
  assert learning.fit(model, (src, target_in), target_out, steps=200) < 0.05
  np.testing.assert_array_equal(model.generate(src, max_len=6), target_out)
