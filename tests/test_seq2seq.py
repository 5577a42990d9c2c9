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
from configs import common
from tests import learning

SRC_V, TGT_V = 12, 10
SOURCE = jnp.array([[5, 6, 7, 8, 0, 0], [9, 4, 3, 0, 0, 0], [3, 3, 4, 5, 6, 7]])  # [B=3, S=6]
TARGET_IN = jnp.array([[1, 5, 6, 7], [1, 3, 4, 5], [1, 9, 8, 7]])  # [B=3, T=4]


def build(seed=0, **kw):
  kw = dict(dict(embed_dim=8, hidden=16), **kw)
  return get_model('seq2seq', src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, rngs=nnx.Rngs(seed),
                   **kw)


# The wiring of the configs measured before the papers' defaults existed: not the papers'.
PRE_PAPER = common.PRE_PAPER_SEQ2SEQ
VARIANTS = {
    'plain': {}, 'peeky': dict(peeky=True), 'gru': dict(cell='gru'),
    'lstm_unfused': dict(cell='lstm_unfused'), 'bidirectional': dict(bidirectional=True),
    'peeky_bahdanau': dict(peeky=True, score='additive', style='bahdanau'),
    'bidirectional_luong_dot': dict(bidirectional=True, score='dot'),
    # Bahdanau's paper defaults (bi-GRU, K = 2F, s_0 from h<-_1, maxout read-out); the dot scores
    # need K = F, so those run with G = F / 2 per direction.
    **{f'bahdanau_{s}': dict(score=s, style='bahdanau',
                             **(dict(encoder_hidden=8) if 'dot' in s else {})) for s in SCORES},
    'bahdanau_linear': dict(score='additive', style='bahdanau', readout='linear'),
    'bahdanau_lstm': dict(score='additive', style='bahdanau', cell='lstm'),
    'bahdanau_pre_paper': dict(PRE_PAPER, score='additive', style='bahdanau'),
    # Luong's paper default: input feeding.
    **{f'luong_{s}': dict(score=s, style='luong') for s in SCORES},
    'luong_general_no_feeding': dict(score='general', style='luong', input_feeding=False),
    'luong_pre_paper': dict(PRE_PAPER, score='general', style='luong'),
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
          for n in ('plain', 'peeky', 'luong_general', 'bahdanau_general', 'bidirectional',
                    'luong_general_no_feeding', 'bahdanau_additive', 'bahdanau_linear',
                    'bahdanau_pre_paper', 'bahdanau_lstm')}
  names = sorted(outs)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert not np.allclose(outs[a], outs[b], atol=1e-4), (a, b)


STYLE_VARIANTS = ['plain', 'luong_general', 'luong_general_no_feeding', 'bahdanau_additive',
                  'bahdanau_linear', 'bahdanau_pre_paper', 'peeky_bahdanau']


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_cached_steps_equal_the_teacher_forced_pass(name):
  """decoder_step_fn, one step at a time on the teacher's tokens, gives the logits of the full
  teacher-forced pass (the state carries everything the step needs)."""
  model = build(seed=5, **VARIANTS[name])
  step_fn, state, tokens = seq2seq.decoder_step_fn(model, SOURCE, max_len=4)
  steps = []
  for t in range(4):
    logits, state = step_fn(state, TARGET_IN[:, t], t)
    steps.append(logits)
  np.testing.assert_allclose(np.stack(steps, 1), model(SOURCE, TARGET_IN), atol=1e-5)


@pytest.mark.parametrize('name', STYLE_VARIANTS)
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


@pytest.mark.parametrize('name', STYLE_VARIANTS)
def test_beam_search_on_the_model(name):
  model = build(seed=2, **VARIANTS[name])
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


@pytest.mark.parametrize('name', ['bahdanau_additive', 'luong_additive', 'bahdanau_pre_paper'])
def test_alignment_weights_teacher_forced_and_generated(name):
  model = build(seed=3, capture_weights=True, **VARIANTS[name])
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
    ('score', 'no_such_score', ', '.join(SCORES)),
    ('style', 'vaswani', 'bahdanau, luong'),
    ('readout', 'softmax', 'linear, maxout, state'),
    ('init_state', 'zeros', 'backward, final'),
])
def test_bad_options_raise_value_error_listing_choices(option, value, valid):
  kw = {option: value}
  with pytest.raises(ValueError, match=f'{value}.*known: .*{valid}'):
    build(**kw)


@pytest.mark.parametrize('options, message', [
    (dict(style='luong', init_state='backward'), "init_state='backward'.*bidirectional=True"),
    (dict(style='bahdanau', init_state='final'), r"init_state='final'.*16 x 2 != 16"),
    (dict(score='additive', style='bahdanau', input_feeding=True), 'input_feeding.*luong'),
    (dict(score='none', input_feeding=True), 'input_feeding=True needs attention'),
])
def test_inconsistent_options_raise_value_error(options, message):
  with pytest.raises(ValueError, match=message):
    build(**options)


def test_unknown_option_raises_value_error_listing_options():
  with pytest.raises(ValueError, match="unknown option.*'bogus'.*valid options: .*'peeky'"):
    build(bogus=1)
  with pytest.raises(ValueError, match=r"seq2seq: unknown option\(s\) 'peaky' \(did you mean "
                                       r"'peeky'\?\); valid options: \["):
    build(peaky=True)
  with pytest.raises(ValueError, match=r"unknown score 'adittive' \(did you mean 'additive'\?\)"):
    build(score='adittive')


def test_options_hold_the_defaults_and_the_style_wiring():
  """Seq2SeqOptions holds every default (the model's constructor has none of its own) and the
  style's paper wiring of the options left None, resolved once."""
  opts = seq2seq.Seq2SeqOptions()
  assert (opts.embed_dim, opts.hidden, opts.score, opts.style) == (32, 128, 'none', 'luong')
  assert opts.wiring.step is None and opts.wiring.score is None  # no attention
  bahdanau = seq2seq.Seq2SeqOptions(score='additive', style='bahdanau', hidden=16)
  w = bahdanau.wiring
  assert (w.step, w.cell, w.bidirectional, w.init_state, w.key_dim) == (
      seq2seq.BahdanauStep, seq2seq.CELLS['gru'], True, 'backward', 32)
  assert w.score is SCORES.get('additive') and w.reads_embedding
  model = build(score='additive', style='bahdanau')
  assert type(model.decoder_step.attention.score) is SCORES.get('additive')


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


@pytest.mark.parametrize('options', [{}, dict(score='additive', style='bahdanau'),
                                     dict(score='general', style='luong')],
                         ids=['plain', 'bahdanau_additive', 'luong_general'])
def test_overfits_a_tiny_batch(options):
  src, target_in, target_out = reverse_task()
  model = build(hidden=32, **options)
  assert learning.fit(model, (src, target_in), target_out, steps=200) < 0.05
  np.testing.assert_array_equal(model.generate(src, max_len=6), target_out)


# The wiring of each style (Bahdanau et al. 2015, app. A; Luong et al. 2015, sec. 3.1, 3.3).


def teacher_forced_weights(model, target_in):
  _, inter = nnx.capture(model, nnx.Intermediate)(SOURCE, target_in)
  return np.asarray(inter['attention_weights'][0])  # [B, T, S]


@pytest.mark.parametrize('name, depends', [
    ('bahdanau_additive', False), ('bahdanau_pre_paper', False),
    ('luong_additive', True), ('luong_general_no_feeding', True)])
def test_step0_alignment_depends_on_y0_only_for_luong(name, depends):
  """Bahdanau queries with s_{i-1}: alpha_1 is computed before y_0 is read. Luong queries with
  h_t = cell(h_{t-1}, E y_{t-1}): alpha_1 reads y_0."""
  model = build(seed=6, capture_weights=True, **VARIANTS[name])
  other = TARGET_IN.at[:, 0].set(7)  # y_0 is another token (a different BOS)
  w, w_other = teacher_forced_weights(model, TARGET_IN), teacher_forced_weights(model, other)
  step0 = np.abs(w[:, 0] - w_other[:, 0]).max()
  assert (step0 > 1e-6) if depends else (step0 == 0), step0
  assert np.abs(w[:, 1] - w_other[:, 1]).max() > 1e-6  # y_0 reaches step 1 in both styles


class NudgeAt(nnx.Module):
  """Wraps Luong's h~_t = tanh(W_c [c_t; h_t]) and adds `delta` to h~ at call number `at`
  (the step-by-step decoder calls it once a step, eagerly)."""

  def __init__(self, inner, at, delta):
    self.inner, self.at, self.delta, self.calls = inner, at, delta, 0

  def __call__(self, h, c):
    out = self.inner(h, c)
    self.calls += 1
    return out + self.delta if self.calls - 1 == self.at else out


def step_logits(model, target_in):
  step_fn, state, _ = seq2seq.decoder_step_fn(model, SOURCE, max_len=target_in.shape[1])
  out = []
  for t in range(target_in.shape[1]):
    logits, state = step_fn(state, target_in[:, t], t)
    out.append(np.asarray(logits))
  return np.stack(out, 1)  # [B, T, V]


@pytest.mark.parametrize('feeding', [True, False])
def test_perturbing_h_tilde_reaches_the_next_step_only_with_input_feeding(feeding):
  t = 1
  model = build(seed=7, score='general', style='luong', input_feeding=feeding)
  base = step_logits(model, TARGET_IN)
  model.decoder_step.combine = NudgeAt(model.decoder_step.combine, at=t, delta=0.3)
  moved = step_logits(model, TARGET_IN)
  delta = np.abs(moved - base).max(-1)  # [B, T]
  assert (delta[:, :t] == 0).all() and (delta[:, t] > 1e-4).all()  # the nudge acted at step t
  if feeding:
    assert (delta[:, t + 1] > 1e-4).all()
  else:
    assert (delta[:, t + 1:] == 0).all()


def backward_first_states(model, source):
  """h<-_1 per example: the backward GRU run by hand over the real tokens, last to first."""
  out = []
  for row in np.asarray(source):
    tokens = row[row != 0][::-1]
    h = jnp.zeros((1, model.encoder_hidden))
    for tok in tokens:
      h, _ = model.encoder_bwd(h, model.src_embed(jnp.array([tok])))
    out.append(np.asarray(h[0]))
  return np.stack(out)  # [B, G]


def test_bahdanau_s0_is_tanh_of_ws_times_the_backward_first_state():
  model = build(seed=8, score='additive', style='bahdanau')  # the paper's defaults
  assert (model.bidirectional, model.encoder_hidden, model.init_state) == (True, 16, 'backward')
  assert isinstance(model.decoder, nnx.GRUCell)
  enc = model.encode(SOURCE)
  h_back = backward_first_states(model, SOURCE)  # [B, G]
  w_s, b_s = np.asarray(model.init_proj.kernel[...]), np.asarray(model.init_proj.bias[...])
  want = np.tanh(h_back @ w_s + b_s)  # [B, F]
  np.testing.assert_allclose(enc['s0'], want, atol=1e-5)
  np.testing.assert_allclose(enc['carry'], want, atol=1e-5)  # the GRU state is s_0 itself
  # h<-_1 is also the backward half of the first annotation h_1 = [h->_1; h<-_1].
  np.testing.assert_allclose(enc['keys'][:, 0, 16:], h_back, atol=1e-5)


def softmax(x, mask):
  x = np.where(mask, x, -np.inf)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_bahdanau_decoder_equals_the_papers_equations():
  """Appendix A.2.2 in numpy (the GRU cell itself called as a function): the score queried with
  s_{i-1}, the context fed to the cell with E y_{i-1}, maxout over (s_i, E y_{i-1}, c_i)."""
  model = build(seed=9, score='additive', style='bahdanau')
  p = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  enc = model.encode(SOURCE)
  keys, mask = np.asarray(enc['keys']), np.asarray(SOURCE) != 0  # [B, S, K], [B, S]
  att = p['decoder_step']['attention']['score']
  s = np.asarray(enc['s0'])  # [B, F]
  logits = []
  for i in range(TARGET_IN.shape[1]):
    ey = np.asarray(model.tgt_embed(TARGET_IN[:, i]))  # [B, E]
    e = np.tanh((s @ att['w_q']['kernel'])[:, None] + keys @ att['w_k']['kernel'])  # [B, S, A]
    alpha = softmax((e @ att['v']['kernel'])[..., 0], mask)  # [B, S]
    c = np.einsum('bs,bsk->bk', alpha, keys)  # [B, K]
    s, _ = model.decoder(jnp.asarray(s), jnp.concatenate([ey, c], -1))
    s = np.asarray(s)
    ro = p['readout']
    t_tilde = np.concatenate([s, c, ey], -1) @ ro['hidden']['kernel'] + ro['hidden']['bias']
    t = np.maximum(t_tilde[:, 0::2], t_tilde[:, 1::2])  # [B, L], L = F / 2
    assert t.shape == (3, 8)
    logits.append(t @ ro['out']['kernel'] + ro['out']['bias'])
  np.testing.assert_allclose(model(SOURCE, TARGET_IN), np.stack(logits, 1), atol=1e-5)


def test_luong_decoder_equals_the_papers_equations():
  """Sec. 3.1 and 3.3 in numpy (the LSTM cell called as a function): h_t = cell(h_{t-1},
  [E y_{t-1}; h~_{t-1}]), general score h_t^T W_a h_s, h~_t = tanh(W_c [c_t; h_t])."""
  model = build(seed=10, score='general', style='luong')
  p = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  enc = model.encode(SOURCE)
  keys, mask = np.asarray(enc['keys']), np.asarray(SOURCE) != 0
  carry, h_tilde = enc['carry'], np.zeros((3, 16))
  logits = []
  for t in range(TARGET_IN.shape[1]):
    ey = np.asarray(model.tgt_embed(TARGET_IN[:, t]))
    carry, h = model.decoder(carry, jnp.asarray(np.concatenate([ey, h_tilde], -1)))
    h = np.asarray(h)
    w_a = p['decoder_step']['attention']['score']['w']['kernel']
    alpha = softmax(np.einsum('bf,bsf->bs', h @ w_a, keys), mask)
    c = np.einsum('bs,bsk->bk', alpha, keys)
    h_tilde = np.tanh(np.concatenate([c, h], -1) @ p['decoder_step']['combine']['w_c']['kernel'])
    logits.append(h_tilde @ p['readout']['kernel'] + p['readout']['bias'])
  np.testing.assert_allclose(model(SOURCE, TARGET_IN), np.stack(logits, 1), atol=1e-5)


def test_maxout_pairs_adjacent_units():
  readout = seq2seq.MaxoutReadout(3, 2, 5, rngs=nnx.Rngs(0))
  u = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
  t_tilde = u @ np.asarray(readout.hidden.kernel[...]) + np.asarray(readout.hidden.bias[...])
  t = np.stack([t_tilde[:, :2].max(-1), t_tilde[:, 2:].max(-1)], -1)  # units (1, 2), (3, 4)
  want = t @ np.asarray(readout.out.kernel[...]) + np.asarray(readout.out.bias[...])
  np.testing.assert_allclose(readout(jnp.asarray(u)), want, atol=1e-5)


def test_style_defaults_and_the_pre_paper_wiring():
  """The styles' paper defaults, and the explicit options that give the old wiring back."""
  bahdanau = build(score='additive', style='bahdanau')
  assert isinstance(bahdanau.decoder, nnx.GRUCell) and bahdanau.bidirectional
  assert isinstance(bahdanau.readout, seq2seq.MaxoutReadout)
  luong = build(score='general', style='luong')
  assert isinstance(luong.decoder, nnx.OptimizedLSTMCell) and not luong.bidirectional
  assert luong.decoder_step.input_feeding
  old = build(**VARIANTS['bahdanau_pre_paper'])
  assert isinstance(old.decoder, nnx.OptimizedLSTMCell) and old.init_proj is None
  assert not old.bidirectional and isinstance(old.readout, nnx.Linear)
