"""RNN encoder-decoder: plain, peeky, and with Bahdanau or Luong attention.

Shapes: B batch, S source length, T target length, E embedding dim, F features (`hidden`, the
decoder state size: Bahdanau et al.'s n), G encoder state size per direction, K = G · directions
(the width of the encoder outputs h_{1..S} that the attention reads), A score dim, L maxout units,
V vocabulary.

plain (Sutskever et al. 2014; Cho et al. 2014): the decoder starts from the encoder's final state
  s_0 = enc(x); s_t = cell(s_{t-1}, E y_{t-1}); p(y_t) = softmax(W_o s_t + b_o).
peeky (Saito, "Deep Learning from Scratch 2", ch. 7): the encoder summary h (its final output) is
  also concatenated to the decoder input and to the read-out input at every step:
  s_t = cell(s_{t-1}, [E y_{t-1}; h]), p(y_t) = softmax(W_o [s_t; h] + b_o).

bahdanau (Bahdanau, Cho, Bengio 2015, "RNNsearch", sec. 3 and app. A), the paper's defaults:
  encoder (sec. 3.2, app. A.2.1): a bidirectional GRU, G = F per direction (the paper's n each
    way), annotations h_j = [h→_j; h←_j] (K = 2F).
  initial state (app. A.2.2): s_0 = tanh(W_s h←_1 + b_s), h←_1 the backward encoder's state at
    the first source word (`init_state='backward'`).
  attention (sec. 3.1, eq. 5-6; app. A.1.2): queried with the PREVIOUS state,
    e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j), α_ij = softmax_j(e_ij), c_i = Σ_j α_ij h_j
    (any score of SCORES may replace the additive one; U_a h_j is computed once per source).
  decoder (app. A.2.2): the context enters the cell with the embedded previous word,
    s_i = GRU(s_{i-1}, [E y_{i-1}; c_i]).
  read-out (sec. 3.1 eq. 4, p(y_i) = g(y_{i-1}, s_i, c_i); app. A.2.2, the "deep output" with one
    maxout layer, `readout='maxout'`):
      t̃_i = U_o s_i + V_o E y_{i-1} + C_o c_i + b_t   (2L units)
      t_i = [max(t̃_{i,2j-1}, t̃_{i,2j})]_{j=1..L},     p(y_i) = softmax(W_o t_i + b_o);
    `readout='linear'`: p(y_i) = softmax(W_o [s_i; c_i; E y_{i-1}] + b_o) (the same inputs, no
    hidden layer).
  Deviations from the paper, by name:
    - the read-out reads s_i as in eq. 4 (and as the dl4mt-tutorial code of Cho's group does);
      app. A.2.2 writes U_o s_{i-1} in the paragraph that defines p(y_i | s_i, y_{i-1}, c_i);
    - every linear map has a bias (the paper omits biases "to make the equations less
      cluttered", app. A.2);
    - the GRU is flax's nnx.GRUCell: ŝ = tanh(W x + b + r ∘ (U s)) where the paper has
      tanh(W x + U (r ∘ s)), and its update gate z is the paper's 1 - z (a relabelling);
    - L defaults to F / 2 (the paper: n = 1000, l = 500); A defaults to K (the paper: n' = n);
    - with cell='lstm', s_0 sets the LSTM's output and its memory cell starts at zero;
    - the paper mentions no dropout; `dropout_rate` (default 0) acts on the embeddings and the
      read-out input.
luong (Luong, Pham, Manning 2015, global attention, sec. 3.1 and 3.3), the paper's defaults:
  encoder: unidirectional, the decoder starts from its final state (`init_state='final'`).
  decoder (sec. 3.3, input feeding): h_t = cell(h_{t-1}, [E y_{t-1}; h̃_{t-1}]), h̃_0 = 0;
    `input_feeding=False` gives sec. 3.1's h_t = cell(h_{t-1}, E y_{t-1}).
  attention (sec. 3.1, eq. 7-8): queried with the CURRENT state h_t,
    score(h_t, h̄_s) = h_tᵀ h̄_s (dot) | h_tᵀ W_a h̄_s (general) | v_aᵀ tanh(W_a [h_t; h̄_s])
    (concat); a_t = softmax_s(score), c_t = Σ_s a_t(s) h̄_s.
  read-out (eq. 5-6): h̃_t = tanh(W_c [c_t; h_t]), p(y_t) = softmax(W_s h̃_t + b_s).
  Deviations from the paper, by name: one LSTM layer per side (the paper stacks 4; this model has
    no option for more); h̃_0 = 0 (the paper does not say; zeros is the usual choice); the
    output layer has a bias; dropout (default 0) acts on the embeddings and the read-out input
    (the paper's 0.2 sits between stacked layers); the model does not reverse the source (tasks
    have a `reverse_source` option); no local attention (sec. 3.2) and no `location` score.

Options and the style's defaults: every option left None takes the style's value in
STYLE_DEFAULTS (the paper's wiring above). The pre-paper wiring of configs written before
(an LSTM, a unidirectional encoder, s_0 = the encoder's final state, read-out [s_i; c_i] for
bahdanau, no input feeding for luong) is: cell='lstm', bidirectional=False, init_state='final',
readout='state', input_feeding=False. With score='none' there is no attention: the style then only
picks the encoder, the initial state and the read-out defaults.

Precision (models/precision.py): every layer (embeddings, cells, attention, read-out) computes in
`dtype` with parameters of `param_dtype`; the recurrent state (the carry of every cell, Bahdanau's
s_{i-1}, Luong's fed h̃_{t-1}) is float32 (STATE_DTYPE), so that the cell's update, e.g. the LSTM's
c' = f ⊙ c + i ⊙ g, adds in float32 at every step while its matmuls run in `dtype`.

Source PAD (= 0) positions are masked out of the attention and skipped by the encoder. Peeky and
attention may be combined. Dropout (train mode only) acts on the embeddings and on the read-out
input, never inside the recurrence. `generate` is inference: it never applies dropout.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.attention import Attention, padding_mask
from attention_zoo.attention.kernels import with_implementation
from attention_zoo.attention.scores import SCORES
from attention_zoo.models import decoding
from attention_zoo.models import precision as precision_lib
from attention_zoo.models.registry import options_from, register_model
from attention_zoo.registry import choose
from attention_zoo.specials import BOS, EOS, PAD


STATE_DTYPE = jnp.float32  # the recurrent state's dtype, whatever the computation's (module doc)


@dataclasses.dataclass(frozen=True)
class CellSpec:
  """How to build one recurrent cell, its zero state, and a state whose output is a given s."""
  make: Callable[..., nnx.Module]  # (in_features, hidden_features, *, dtype, param_dtype, rngs)
  zero_carry: Callable[[int, int], Any]  # (batch, hidden) -> carry pytree
  from_output: Callable[[jax.Array], Any]  # s [B, F] -> carry whose output is s


_lstm_zeros = lambda b, f: (jnp.zeros((b, f), STATE_DTYPE), jnp.zeros((b, f), STATE_DTYPE))
_lstm_from_output = lambda s: (jnp.zeros_like(s), s)  # memory cell 0, output s
CELLS = {
    'lstm': CellSpec(nnx.OptimizedLSTMCell, _lstm_zeros, _lstm_from_output),  # (c, h)
    'lstm_unfused': CellSpec(nnx.LSTMCell, _lstm_zeros, _lstm_from_output),
    'gru': CellSpec(nnx.GRUCell, lambda b, f: jnp.zeros((b, f), STATE_DTYPE), lambda s: s),
}

# The papers' wiring per style: the value an option takes when it is left None.
# encoder_hidden: G from (hidden F, directions) -> int.
STYLE_DEFAULTS = {
    'bahdanau': dict(cell='gru', bidirectional=True, encoder_hidden=lambda f, d: f,
                     init_state='backward', readout='maxout', input_feeding=False),
    'luong': dict(cell='lstm', bidirectional=False, encoder_hidden=lambda f, d: f // d,
                  init_state='final', readout='state', input_feeding=True),
}


def run_cell(cell: nnx.Module, carry: Any, out: jax.Array, xs: jax.Array, valid: jax.Array,
             reverse: bool = False) -> tuple[Any, jax.Array, jax.Array]:
  """Runs a cell over time with lax.scan; padded steps leave the state and last output unchanged.

  Args: carry (cell state, leaves [B, G]), out [B, G] (the last output so far), xs [B, S, E],
    valid [B, S] bool; reverse runs from the end (for right-padded input the backward direction
    thus starts at the last real token and ends at the first, h←_1).
  Returns: (final carry, last real output [B, G], outputs [B, S, G]).
  """
  def body(state, inputs):
    carry, out = state
    x, v = inputs  # [B, E], [B]
    new_carry, y = cell(carry, x)  # y [B, G]
    keep = lambda new, old: jnp.where(v[:, None], new, old)
    return (jax.tree.map(keep, new_carry, carry), keep(y, out)), y

  (carry, out), ys = jax.lax.scan(body, (carry, out), (jnp.swapaxes(xs, 0, 1), valid.T),
                                  reverse=reverse)  # ys [S, B, G]
  return carry, out, jnp.swapaxes(ys, 0, 1)


def attend(attention: Attention, query: jax.Array, enc: dict[str, jax.Array],
           want_weights: bool) -> tuple[jax.Array, jax.Array | None]:
  """One decoder state reads the encoder states through the attention core's score and kernel.

  query [B, F], enc['keys'] [B, S, K], enc['projected'] (the keys as the score reads them,
  projected once per source), enc['mask'] [B, 1, 1, S] -> context [B, K], weights [B, S] | None.
  (Called inside lax loops, where sowing is not possible, so the weights are returned instead.)
  """
  out = attention(query, enc['keys'], mask=enc['mask'], return_weights=want_weights,
                  projected_keys=enc['projected'])
  return out if want_weights else (out, None)  # [B, K], [B, S] | None


class NoAttention(nnx.Module):
  """Plain decoder step: s_t = cell(s_{t-1}, x_t); read-out features s_t."""

  def __init__(self, hidden: int):
    self.cell_extra, self.feature_dim = 0, hidden

  def project(self, keys):
    return None  # nothing reads the keys

  def init(self, enc):
    return {'carry': enc['carry']}

  def step(self, cell, state, x, enc, want_weights):
    del enc, want_weights
    carry, s = cell(state['carry'], x)  # s [B, F]
    return {'carry': carry}, s, None


class AttentionStep(nnx.Module):
  """What both attention styles share: the attention core (a decoder state of `hidden` reads
  encoder states of `key_dim`), and the keys it projects once per source."""

  def __init__(self, hidden: int, key_dim: int, *, score: Callable, kernel: Callable,
               score_dim: int | None, rngs: nnx.Rngs, **dtypes: Any):
    self.attention = Attention(hidden, key_dim, score=score, kernel=kernel, score_dim=score_dim,
                               **dtypes, rngs=rngs)

  def project(self, keys):
    return self.attention.project_keys(keys)  # [B, S, A]


class BahdanauStep(AttentionStep):
  """c_i = attn(s_{i-1}, h_{1..S}); s_i = cell(s_{i-1}, [x_i; c_i]); read-out features
  [s_i; c_i]. The state carries s_{i-1}, the query of the next step."""

  def __init__(self, hidden: int, key_dim: int, *, input_feeding: bool, **attention):
    del input_feeding  # Luong's option; validated by Seq2Seq
    super().__init__(hidden, key_dim, **attention)
    self.cell_extra, self.feature_dim = key_dim, hidden + key_dim

  def init(self, enc):
    return {'carry': enc['carry'], 's': enc['s0']}

  def step(self, cell, state, x, enc, want_weights):
    c, w = attend(self.attention, state['s'], enc, want_weights)  # [B, K]
    carry, s = cell(state['carry'], jnp.concatenate([x, c], axis=-1))  # s [B, F]
    return {'carry': carry, 's': s}, jnp.concatenate([s, c], axis=-1), w


class AttentionalState(nnx.Module):
  """Luong et al. (2015), eq. 5: the attentional hidden state h̃_t = tanh(W_c [c_t; h_t]), W_c
  [K + F, F], no bias (as eq. 5 writes it). A read-out layer: h̃_t feeds p(y_t) = softmax(W_s h̃_t)
  (eq. 6) and, with input feeding, the next step's input. It is not a stream combine (those keep
  the identity path, see attention.combine): h_t reaches the output only through W_c and tanh.

  context c [B, K], state h [B, F] -> h̃ [B, F]. dtypes: flax's dtype= and param_dtype=.
  """

  def __init__(self, key_dim: int, hidden: int, *, rngs: nnx.Rngs, **dtypes: Any):
    self.w_c = nnx.Linear(key_dim + hidden, hidden, use_bias=False, **dtypes, rngs=rngs)

  def __call__(self, h: jax.Array, c: jax.Array) -> jax.Array:
    return jnp.tanh(self.w_c(jnp.concatenate([c, h], axis=-1)))  # [B, F]


class LuongStep(AttentionStep):
  """h_t = cell(h_{t-1}, [x_t; h̃_{t-1}]) (input feeding; x_t alone without it);
  c_t = attn(h_t, h_{1..S}); read-out features h̃_t = tanh(W_c [c_t; h_t]) (AttentionalState).
  With input feeding the state carries h̃_{t-1} (h̃_0 = 0)."""

  def __init__(self, hidden: int, key_dim: int, *, input_feeding: bool, rngs: nnx.Rngs,
               dtype: Any = None, param_dtype: Any = jnp.float32, **attention):
    dtypes = dict(dtype=dtype, param_dtype=param_dtype)
    super().__init__(hidden, key_dim, rngs=rngs, **dtypes, **attention)
    # Named `combine` so that the parameter path decoder_step/combine/w_c of checkpoints written
    # before stays valid; it is the eq. 5 read-out layer, not a combine of attention.combine.
    self.combine = AttentionalState(key_dim, hidden, **dtypes, rngs=rngs)
    self.input_feeding = input_feeding
    self.cell_extra, self.feature_dim = (hidden if input_feeding else 0), hidden

  def init(self, enc):
    state = {'carry': enc['carry']}
    if self.input_feeding:
      state['feed'] = jnp.zeros_like(enc['s0'])  # h̃_0 = 0 [B, F]
    return state

  def step(self, cell, state, x, enc, want_weights):
    if self.input_feeding:
      x = jnp.concatenate([x, state['feed']], axis=-1)  # [B, E + F]
    carry, h = cell(state['carry'], x)  # h [B, F]
    c, w = attend(self.attention, h, enc, want_weights)  # [B, K]
    h_tilde = self.combine(h, c)  # [B, F]
    new = {'carry': carry}
    if self.input_feeding:
      new['feed'] = h_tilde.astype(state['feed'].dtype)  # the state's dtype (STATE_DTYPE)
    return new, h_tilde, w


STYLES = {'bahdanau': BahdanauStep, 'luong': LuongStep}


class MaxoutReadout(nnx.Module):
  """Bahdanau et al. app. A.2.2: t̃ = W_t u + b_t (2L), t_j = max(t̃_{2j-1}, t̃_{2j}),
  logits = W_o t + b_o. u [..., in_dim] -> logits [..., V]. dtypes: flax's dtype=, param_dtype=."""

  def __init__(self, in_dim: int, units: int, vocab_size: int, *, rngs: nnx.Rngs,
               **dtypes: Any):
    self.hidden = nnx.Linear(in_dim, 2 * units, **dtypes, rngs=rngs)
    self.out = nnx.Linear(units, vocab_size, **dtypes, rngs=rngs)

  def __call__(self, u: jax.Array) -> jax.Array:
    t = self.hidden(u)  # [..., 2L]
    t = t.reshape(*t.shape[:-1], t.shape[-1] // 2, 2).max(-1)  # [..., L]: units (1, 2), (3, 4)...
    return self.out(t)  # [..., V]


# readout name -> (reads E y_{t-1} besides the step's features,
#                  builder(in_dim, L, V, rngs, dtype=, param_dtype=)).
READOUTS = {
    'state': (False, lambda d, units, v, rngs, **dt: nnx.Linear(d, v, **dt, rngs=rngs)),
    'linear': (True, lambda d, units, v, rngs, **dt: nnx.Linear(d, v, **dt, rngs=rngs)),
    'maxout': (True, lambda d, units, v, rngs, **dt: MaxoutReadout(d, units, v, **dt, rngs=rngs)),
}
# init_state name -> needs a bidirectional encoder.
INIT_STATES = {'final': False, 'backward': True}


@dataclasses.dataclass(frozen=True)
class Wiring:
  """Seq2SeqOptions resolved: the style's defaults filled in, names looked up once."""

  step: Callable[..., nnx.Module] | None  # a class of STYLES; None without attention
  cell: CellSpec  # CELLS[cell]
  bidirectional: bool
  encoder_hidden: int  # G
  key_dim: int  # K = G · directions
  init_state: str  # a name in INIT_STATES
  reads_embedding: bool  # READOUTS[readout][0]
  make_readout: Callable[..., nnx.Module]  # READOUTS[readout][1]
  input_feeding: bool
  score: Callable[..., nnx.Module] | None  # a class of attention.scores.SCORES; None: 'none'
  kernel: Callable  # a function of attention.kernels.KERNELS, bound to its implementation
  precision: precision_lib.Precision  # dtype and param_dtype as jnp dtypes


@dataclasses.dataclass(frozen=True)
class Seq2SeqOptions:
  """The options of Seq2Seq (its docstring says what each means) and their defaults: the one
  place that checks them. An option left None takes the style's paper default (STYLE_DEFAULTS);
  `wiring` holds the options so resolved and what their names stand for."""

  embed_dim: int = 32  # E
  hidden: int = 128  # F, the decoder state size
  cell: str | None = None  # a name in CELLS
  bidirectional: bool | None = None
  encoder_hidden: int | None = None  # G
  init_state: str | None = None  # a name in INIT_STATES
  readout: str | None = None  # a name in READOUTS
  readout_dim: int | None = None  # L (None: F / 2)
  input_feeding: bool | None = None
  peeky: bool = False
  score: str = 'none'  # 'none' or a name in attention.scores.SCORES
  style: str = 'luong'  # a name in STYLES
  kernel: str = 'dense'  # a name in attention.kernels.KERNELS
  implementation: str = 'auto'  # how the kernel runs per platform: attention.implementations
  score_dim: int | None = None  # A of the additive / concat score (None: K)
  dropout_rate: float = 0.0
  capture_weights: bool = False
  dtype: str = precision_lib.DEFAULT  # computation dtype: a name in models.precision.DTYPES
  param_dtype: str = precision_lib.DEFAULT  # parameter dtype: a name in precision.DTYPES
  wiring: Wiring = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    step = choose(STYLES, self.style, 'attention style')
    given = dict(cell=self.cell, bidirectional=self.bidirectional,
                 encoder_hidden=self.encoder_hidden, init_state=self.init_state,
                 readout=self.readout, input_feeding=self.input_feeding)
    o = {k: STYLE_DEFAULTS[self.style][k] if v is None else v for k, v in given.items()}
    hidden, directions = self.hidden, 2 if o['bidirectional'] else 1
    if self.encoder_hidden is None:
      if o['bidirectional'] and hidden % 2 and o['init_state'] == 'final':
        raise ValueError(f'seq2seq: bidirectional=True needs an even hidden size, got {hidden}')
      o['encoder_hidden'] = o['encoder_hidden'](hidden, directions)
    cell = choose(CELLS, o['cell'], 'cell')  # ValueError listing the names
    reads_embedding, make_readout = choose(READOUTS, o['readout'], 'readout')
    if choose(INIT_STATES, o['init_state'], 'init_state') and not o['bidirectional']:
      raise ValueError("seq2seq: init_state='backward' (s_0 = tanh(W_s h<-_1)) needs "
                       'bidirectional=True')
    key_dim = o['encoder_hidden'] * directions  # K
    if o['init_state'] == 'final' and key_dim != hidden:
      raise ValueError(f"seq2seq: init_state='final' needs encoder_hidden x directions = hidden, "
                       f"got {o['encoder_hidden']} x {directions} != {hidden}; use "
                       "init_state='backward' or change encoder_hidden")
    score = None
    if self.score in (None, 'none'):
      if self.input_feeding:
        raise ValueError("seq2seq: input_feeding=True needs attention (score='none' given)")
      step = None
    else:
      score = SCORES.get(self.score)  # ValueError naming the nearest and the known scores
      if self.input_feeding and self.style != 'luong':
        raise ValueError(f'seq2seq: input_feeding=True is an option of style luong, got style '
                         f'{self.style!r}')
    wiring = Wiring(step=step, cell=cell, bidirectional=o['bidirectional'],
                    encoder_hidden=o['encoder_hidden'], key_dim=key_dim,
                    init_state=o['init_state'], reads_embedding=reads_embedding,
                    make_readout=make_readout, input_feeding=o['input_feeding'], score=score,
                    kernel=with_implementation(self.kernel, self.implementation),
                    precision=precision_lib.resolve(self.dtype, self.param_dtype))
    object.__setattr__(self, 'wiring', wiring)  # frozen: set once, here


@register_model('seq2seq')
class Seq2Seq(nnx.Module):
  """RNN encoder-decoder (see the module docstring for the equations of each variant).

  Options left None take the style's paper default (STYLE_DEFAULTS).

  Args:
    src_vocab_size, tgt_vocab_size: vocabularies (PAD = 0, BOS = 1, EOS = 2).
    **options: Seq2SeqOptions' fields, which hold the defaults and are checked there (an unknown
      one: ValueError naming the nearest and the valid ones):
    embed_dim: E. hidden: F, the decoder state size.
    cell: a name in CELLS ('lstm', 'lstm_unfused', 'gru'); bahdanau: 'gru', luong: 'lstm'.
    bidirectional: bidirectional encoder (outputs of both directions concatenated);
      bahdanau: True, luong: False.
    encoder_hidden: G, the encoder state size per direction; bahdanau: F (annotations 2F wide),
      luong: F / directions (the encoder outputs are F wide).
    init_state: the decoder's initial state: 'final' (the encoder's final state, both directions
      concatenated; needs G · directions = F) or 'backward' (s_0 = tanh(W_s h←_1 + b_s); needs a
      bidirectional encoder); bahdanau: 'backward', luong: 'final'.
    readout: 'state' (the step's features: s_t, [s_t; c_t] or h̃_t), 'linear' (those and E y_{t-1})
      or 'maxout' (those and E y_{t-1} through a maxout layer of L = readout_dim units);
      bahdanau: 'maxout', luong: 'state'.
    readout_dim: L, maxout units (default F / 2).
    input_feeding: luong only: h̃_{t-1} joins the next decoder input; luong: True.
    peeky: feed the encoder summary to every decoder step and to the read-out.
    score: 'none' (no attention) or a score name in SCORES ('additive', 'concat', 'dot', ...).
    style: a name in STYLES ('bahdanau', 'luong'): where the attention sits in the step.
    kernel: attention kernel name ('dense', 'chunked', 'fused'); score_dim: additive/concat A.
    implementation: how the kernel runs per platform ('auto', 'xla', 'native', 'cudnn',
      'pallas': attention.implementations).
    dropout_rate: dropout on embeddings and read-out input (train mode only).
    capture_weights: sow the teacher-forced alignment [B, T, S] as nnx.Intermediate
      'attention_weights' on this module (read it with nnx.capture(model, nnx.Intermediate)).
    dtype, param_dtype: computation and parameter dtype, names in models.precision.DTYPES
      ('float32', 'bfloat16'); the recurrent state stays float32 (module doc).
  """

  def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, rngs: nnx.Rngs,
               **options: Any):
    opts = options_from(Seq2SeqOptions, options, 'seq2seq')
    w, hidden, embed_dim = opts.wiring, opts.hidden, opts.embed_dim
    dtypes = w.precision.kwargs
    self.score_name = None if w.score is None else opts.score
    if w.step is None:
      self.decoder_step = NoAttention(hidden)
    else:
      self.decoder_step = w.step(hidden, w.key_dim, score=w.score, kernel=w.kernel,
                                 score_dim=opts.score_dim, input_feeding=w.input_feeding,
                                 **dtypes, rngs=rngs)
    self.spec, self.hidden, self.peeky = w.cell, hidden, opts.peeky
    self.bidirectional, self.capture_weights = w.bidirectional, opts.capture_weights
    self.encoder_hidden, self.init_state = w.encoder_hidden, w.init_state
    self.reads_embedding = w.reads_embedding
    self.tgt_vocab_size = tgt_vocab_size
    self.src_embed = nnx.Embed(src_vocab_size, embed_dim, **dtypes, rngs=rngs)
    self.tgt_embed = nnx.Embed(tgt_vocab_size, embed_dim, **dtypes, rngs=rngs)
    self.encoder = w.cell.make(embed_dim, self.encoder_hidden, **dtypes, rngs=rngs)
    self.encoder_bwd = (w.cell.make(embed_dim, self.encoder_hidden, **dtypes, rngs=rngs)
                        if self.bidirectional else None)
    self.init_proj = (nnx.Linear(self.encoder_hidden, hidden, **dtypes, rngs=rngs)
                      if w.init_state == 'backward' else None)  # W_s, b_s
    peek = w.key_dim if opts.peeky else 0
    self.decoder = w.cell.make(embed_dim + peek + self.decoder_step.cell_extra, hidden, **dtypes,
                               rngs=rngs)
    self.dropout = nnx.Dropout(opts.dropout_rate, rngs=rngs)
    readout_in = self.decoder_step.feature_dim + peek + (embed_dim if w.reads_embedding else 0)
    units = opts.readout_dim or hidden // 2
    self.readout = w.make_readout(readout_in, units, tgt_vocab_size, rngs, **dtypes)

  def encode(self, source: jax.Array, *, deterministic: bool | None = None
             ) -> dict[str, jax.Array]:
    """source [B, S] int -> {'carry': decoder initial state, 's0' [B, F] (its output s_0),
    'summary' [B, K] (the encoder's final outputs), 'keys' [B, S, K] (encoder outputs h_j),
    'mask' [B, 1, 1, S] (True = real token), 'projected' (the keys as the score reads them)}.

    deterministic=True turns dropout off whatever the mode (used by `generate`).
    """
    batch = source.shape[0]
    valid = source != PAD  # [B, S]
    x = self.dropout(self.src_embed(source), deterministic=deterministic)  # [B, S, E]
    g = self.encoder_hidden
    zero = lambda: (self.spec.zero_carry(batch, g), jnp.zeros((batch, g), STATE_DTYPE))
    carry, summary, keys = run_cell(self.encoder, *zero(), x, valid)  # keys [B, S, G]
    if self.bidirectional:
      carry_b, summary_b, keys_b = run_cell(self.encoder_bwd, *zero(), x, valid, reverse=True)
      join = lambda a, b: jnp.concatenate([a, b], axis=-1)
      carry, summary, keys = jax.tree.map(join, carry, carry_b), join(summary, summary_b), join(
          keys, keys_b)  # [B, K], [B, K], [B, S, K]; summary_b = h←_1
    if self.init_proj is not None:
      s0 = jnp.tanh(self.init_proj(summary_b))  # s_0 = tanh(W_s h←_1 + b_s) [B, F]
      s0 = s0.astype(STATE_DTYPE)
      carry = self.spec.from_output(s0)
    else:
      s0 = summary  # the encoder's final output [B, F]
    return {'carry': carry, 's0': s0, 'summary': summary, 'keys': keys,
            'mask': padding_mask(valid),
            'projected': self.decoder_step.project(keys)}  # [B, S, A]: once, not at every step

  def init_decoder(self, enc: dict[str, jax.Array]) -> dict[str, Any]:
    """The decoder's recurrent state before step 1 (a dict whose leaves are [B, ...])."""
    return self.decoder_step.init(enc)

  def _step(self, enc: dict[str, jax.Array], state: dict[str, Any], x: jax.Array,
            want_weights: bool):
    """One decoder step: x [B, E] (embedded y_{t-1}) -> (state, read-out features
    [B, readout input], weights [B, S] | None); the features are the read-out input before
    dropout.
    """
    x_in = jnp.concatenate([x, enc['summary']], axis=-1) if self.peeky else x  # [B, E (+ K)]
    state, feats, w = self.decoder_step.step(self.decoder, state, x_in, enc, want_weights)
    if self.peeky:
      feats = jnp.concatenate([feats, enc['summary']], axis=-1)  # [B, feature_dim + K]
    if self.reads_embedding:
      feats = jnp.concatenate([feats, x], axis=-1)  # + E y_{t-1}
    return state, feats, w

  def decode(self, enc: dict[str, jax.Array], target_in: jax.Array) -> jax.Array:
    """Teacher forcing: target_in [B, T] (BOS + y) -> logits [B, T, V]."""
    x = self.dropout(self.tgt_embed(target_in))  # [B, T, E]
    want = self.capture_weights and self.score_name is not None

    def body(state, x_t):
      state, feats, w = self._step(enc, state, x_t, want)
      return state, (feats, w)

    _, (feats, weights) = jax.lax.scan(body, self.init_decoder(enc),
                                       jnp.swapaxes(x, 0, 1))  # feats [T, B, readout input]
    if want:
      self.sow(nnx.Intermediate, 'attention_weights', jnp.swapaxes(weights, 0, 1))  # [B, T, S]
    return self.readout(self.dropout(jnp.swapaxes(feats, 0, 1)))  # [B, T, V]

  def __call__(self, source: jax.Array, target_in: jax.Array) -> jax.Array:
    """source [B, S], target_in [B, T] -> logits [B, T, V]."""
    return self.decode(self.encode(source), target_in)

  def generate(self, source: jax.Array, max_len: int, beam_size: int = 1,
               length_penalty: float = 0.6, return_weights: bool = False):
    """Greedy (beam_size=1) or beam-search decoding, jit-compiled once per shape and option.

    Returns tokens [B, max_len] (no BOS; PAD after EOS); with return_weights=True (greedy, with
    attention) also the alignment weights [B, max_len, S] of every step (zero after EOS).
    """
    if beam_size < 1:
      raise ValueError(f'generate: beam_size must be >= 1, got {beam_size}')
    if return_weights and (beam_size != 1 or self.score_name is None):
      raise ValueError('generate: return_weights=True needs beam_size=1 and attention '
                       f'(got beam_size={beam_size}, score={self.score_name or "none"!r})')
    return _generate(self, jnp.asarray(source, jnp.int32), max_len=max_len, beam_size=beam_size,
                     length_penalty=length_penalty, return_weights=return_weights)


def decoder_step_fn(model: Seq2Seq, source: jax.Array, *, max_len: int,
                    return_weights: bool = False):
  """The decoding problem of `source` [B, S] for decoding.py: (step_fn, initial state, bos [B]).

  step_fn(state, tokens [B], t) -> (logits [B, V], state) runs one decoder step (no dropout); the
  state holds the encoding too, so beam search tiles and reorders it with the decoder state (its
  rows are then B * beam). With return_weights, state['weights'] [B, max_len, S] collects each
  step's alignment.
  """
  batch, src_len = source.shape
  enc = model.encode(source, deterministic=True)
  state = {'enc': enc, 'dec': model.init_decoder(enc)}
  if return_weights:
    state['weights'] = jnp.zeros((batch, max_len, src_len))  # [B, T, S]

  def step_fn(state, tokens, t):
    dec, feats, w = model._step(state['enc'], state['dec'], model.tgt_embed(tokens),
                                return_weights)
    new = dict(state, dec=dec)
    if return_weights:
      new['weights'] = state['weights'].at[:, t].set(w)  # [B, T, S]
    return model.readout(feats), new  # [B, V]

  return step_fn, state, jnp.full((batch,), BOS, jnp.int32)


@functools.partial(decoding.eval_mode_jit, static_argnames=('max_len', 'beam_size',
                                                           'length_penalty', 'return_weights'))
def _generate(model: Seq2Seq, source, *, max_len, beam_size, length_penalty, return_weights):
  step_fn, state, bos = decoder_step_fn(model, source, max_len=max_len,
                                        return_weights=return_weights)
  if beam_size > 1:
    tokens, _ = decoding.beam_search(step_fn, state, bos, max_len=max_len, eos_id=EOS,
                                     beam_size=beam_size, length_penalty=length_penalty)
    return tokens
  tokens, state = decoding.greedy_decode(step_fn, state, bos, max_len=max_len, eos_id=EOS,
                                         return_state=True)
  if not return_weights:
    return tokens
  after_eos = (jnp.cumsum(tokens == EOS, axis=1) - (tokens == EOS)) > 0  # [B, T]
  return tokens, jnp.where(after_eos[..., None], 0.0, state['weights'])  # [B, T, S]

