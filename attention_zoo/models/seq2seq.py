"""RNN encoder-decoder: plain, peeky, and with Bahdanau or Luong attention.

  plain     (Sutskever et al. 2014; Cho et al. 2014): the decoder starts from the encoder's final
            state s_0 = enc(x); s_t = cell(s_{t-1}, e(y_{t-1})); p(y_t) = softmax(W_o s_t).
  peeky     (Saito, "Deep Learning from Scratch 2", ch. 7): the encoder summary h (its final
            output) is also concatenated to the decoder input and to the output layer input at
            every step: s_t = cell(s_{t-1}, [e(y_{t-1}); h]), p(y_t) = softmax(W_o [s_t; h]).
  bahdanau  (Bahdanau, Cho, Bengio 2014): the context is read with the PREVIOUS state and fed to
            the cell: c_t = attn(s_{t-1}, h_{1..S}), s_t = cell(s_{t-1}, [e(y_{t-1}); c_t]),
            p(y_t) = softmax(W_o [s_t; c_t]) (a linear read-out in place of the paper's maxout).
  luong     (Luong, Pham, Manning 2015, global attention without input feeding): the context is
            read with the CURRENT state: s_t = cell(s_{t-1}, e(y_{t-1})), c_t = attn(s_t, h_{1..S}),
            h̃_t = tanh(W_c [c_t; s_t]), p(y_t) = softmax(W_o h̃_t).
Any score of attention_zoo.attention.SCORES works with either style (`score='none'`: no
attention); source PAD (= 0) positions are masked out of the attention. Peeky and attention may be
combined.

Shapes: B batch, S source length, T target length, E embedding dim, F features (`hidden`, the
RNN state size: Bahdanau et al.'s "n hidden units"), A score dim, V vocabulary.
Dropout (train mode only) acts on the embeddings and on the read-out input, never inside the
recurrence. `generate` is inference: it never applies dropout.
In the equations h_{1..S} are the encoder outputs [B, S, F] that the attention reads.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.attention import Attention, Concat, padding_mask
from attention_zoo.attention.scores import SCORES
from attention_zoo.models import decoding
from attention_zoo.models.registry import register_model
from attention_zoo.registry import choose
from attention_zoo.specials import BOS, EOS, PAD


@dataclasses.dataclass(frozen=True)
class CellSpec:
  """How to build one recurrent cell and its zero state."""
  make: Callable[..., nnx.Module]  # (in_features, hidden_features, *, rngs) -> cell
  zero_carry: Callable[[int, int], Any]  # (batch, hidden) -> carry pytree


_lstm_zeros = lambda b, f: (jnp.zeros((b, f)), jnp.zeros((b, f)))  # (c, h)
CELLS = {
    'lstm': CellSpec(nnx.OptimizedLSTMCell, _lstm_zeros),
    'lstm_unfused': CellSpec(nnx.LSTMCell, _lstm_zeros),
    'gru': CellSpec(nnx.GRUCell, lambda b, f: jnp.zeros((b, f))),
}


def run_cell(cell: nnx.Module, carry: Any, out: jax.Array, xs: jax.Array, valid: jax.Array,
             reverse: bool = False) -> tuple[Any, jax.Array, jax.Array]:
  """Runs a cell over time with lax.scan; padded steps leave the state and last output unchanged.

  Args: carry (cell state, leaves [B, F]), out [B, F] (the last output so far), xs [B, S, E],
    valid [B, S] bool; reverse runs from the end (for right-padded input the backward direction
    thus starts at the last real token).
  Returns: (final carry, last real output [B, F], outputs [B, S, F]).
  """
  def body(state, inputs):
    carry, out = state
    x, v = inputs  # [B, E], [B]
    new_carry, y = cell(carry, x)  # y [B, F]
    keep = lambda new, old: jnp.where(v[:, None], new, old)
    return (jax.tree.map(keep, new_carry, carry), keep(y, out)), y

  (carry, out), ys = jax.lax.scan(body, (carry, out), (jnp.swapaxes(xs, 0, 1), valid.T),
                                  reverse=reverse)  # ys [S, B, F]
  return carry, out, jnp.swapaxes(ys, 0, 1)


def attend(attention: Attention, query: jax.Array, enc: dict[str, jax.Array],
           want_weights: bool) -> tuple[jax.Array, jax.Array | None]:
  """One decoder state reads the encoder states through the attention core's score and kernel.

  query [B, Dq], enc['keys'] [B, S, Dk], enc['projected'] (the keys as the score reads them,
  projected once per source), enc['mask'] [B, 1, 1, S] -> context [B, Dk], weights [B, S] | None.
  (Called inside lax loops, where sowing is not possible, so the weights are returned instead.)
  """
  out = attention(query, enc['keys'], mask=enc['mask'], return_weights=want_weights,
                  projected_keys=enc['projected'])
  return out if want_weights else (out, None)  # [B, Dk], [B, S] | None


class NoAttention(nnx.Module):
  """Plain decoder step: s_t = cell(s_{t-1}, x_t); read-out features s_t."""

  def __init__(self, hidden: int):
    self.cell_extra, self.feature_dim = 0, hidden

  def project(self, keys):
    return None  # nothing reads the keys

  def step(self, cell, carry, h_prev, x, enc, want_weights):
    del h_prev, enc, want_weights
    carry, h = cell(carry, x)  # h [B, F]
    return carry, h, h, None


class AttentionStep(nnx.Module):
  """What both attention styles share: the attention core (a decoder state of `hidden` reads
  encoder states of `key_dim`), and the keys it projects once per source."""

  def __init__(self, hidden: int, key_dim: int, *, score: str, kernel: str,
               score_dim: int | None, rngs: nnx.Rngs):
    self.attention = Attention(hidden, key_dim, score=score, kernel=kernel, score_dim=score_dim,
                               rngs=rngs)

  def project(self, keys):
    return self.attention.project_keys(keys)  # [B, S, A]


class BahdanauStep(AttentionStep):
  """c_t = attn(s_{t-1}, h_{1..S}); s_t = cell(s_{t-1}, [x_t; c_t]); read-out [s_t; c_t]."""

  def __init__(self, hidden: int, key_dim: int, **attention):
    super().__init__(hidden, key_dim, **attention)
    self.cell_extra, self.feature_dim = key_dim, hidden + key_dim

  def step(self, cell, carry, h_prev, x, enc, want_weights):
    c, w = attend(self.attention, h_prev, enc, want_weights)  # [B, Dk]
    carry, h = cell(carry, jnp.concatenate([x, c], axis=-1))  # h [B, F]
    return carry, h, jnp.concatenate([h, c], axis=-1), w


class LuongStep(AttentionStep):
  """s_t = cell(s_{t-1}, x_t); c_t = attn(s_t, h_{1..S}); read-out h̃_t = tanh(W_c [c_t; s_t])."""

  def __init__(self, hidden: int, key_dim: int, *, rngs: nnx.Rngs, **attention):
    super().__init__(hidden, key_dim, rngs=rngs, **attention)
    self.combine = Concat(key_dim, hidden, hidden, rngs=rngs)
    self.cell_extra, self.feature_dim = 0, hidden

  def step(self, cell, carry, h_prev, x, enc, want_weights):
    del h_prev
    carry, h = cell(carry, x)  # h [B, F]
    c, w = attend(self.attention, h, enc, want_weights)  # [B, Dk]
    return carry, h, self.combine(h, c), w


STYLES = {'bahdanau': BahdanauStep, 'luong': LuongStep}


@register_model('seq2seq')
class Seq2Seq(nnx.Module):
  """RNN encoder-decoder (see the module docstring for the equations of each variant).

  Args:
    src_vocab_size, tgt_vocab_size: vocabularies (PAD = 0, BOS = 1, EOS = 2).
    embed_dim: E. hidden: F, the decoder state size (and the encoder's; a bidirectional encoder
      uses F / 2 per direction so that its outputs and final state are F wide).
    cell: a name in CELLS ('lstm', 'lstm_unfused', 'gru').
    bidirectional: bidirectional encoder (final states of both directions concatenated).
    peeky: feed the encoder summary to every decoder step and to the read-out.
    score: 'none' (no attention) or a score name in SCORES ('additive', 'concat', 'dot', ...).
    style: a name in STYLES ('bahdanau', 'luong'): where the attention sits in the step.
    kernel: attention kernel name ('dense', 'chunked', 'fused'); score_dim: additive/concat A.
    dropout_rate: dropout on embeddings and read-out input (train mode only).
    capture_weights: sow the teacher-forced alignment [B, T, S] as nnx.Intermediate
      'attention_weights' on this module (read it with nnx.capture(model, nnx.Intermediate)).
  """

  def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, embed_dim: int = 32,
               hidden: int = 128, cell: str = 'lstm', bidirectional: bool = False,
               peeky: bool = False, score: str = 'none', style: str = 'luong',
               kernel: str = 'dense', score_dim: int | None = None, dropout_rate: float = 0.0,
               capture_weights: bool = False, rngs: nnx.Rngs):
    spec = choose(CELLS, cell, 'cell')  # ValueError listing the names
    step_class = choose(STYLES, style, 'attention style')
    if bidirectional and hidden % 2:
      raise ValueError(f'seq2seq: bidirectional=True needs an even hidden size, got {hidden}')
    self.score_name = None if score in (None, 'none') else score
    if self.score_name is None:
      self.decoder_step = NoAttention(hidden)
    else:
      SCORES.get(self.score_name)  # ValueError listing the scores
      self.decoder_step = step_class(hidden, hidden, score=self.score_name, kernel=kernel,
                                     score_dim=score_dim, rngs=rngs)
    self.spec, self.hidden, self.peeky = spec, hidden, peeky
    self.bidirectional, self.capture_weights = bidirectional, capture_weights
    self.tgt_vocab_size = tgt_vocab_size
    enc_hidden = hidden // 2 if bidirectional else hidden
    self.src_embed = nnx.Embed(src_vocab_size, embed_dim, rngs=rngs)
    self.tgt_embed = nnx.Embed(tgt_vocab_size, embed_dim, rngs=rngs)
    self.encoder = spec.make(embed_dim, enc_hidden, rngs=rngs)
    self.encoder_bwd = spec.make(embed_dim, enc_hidden, rngs=rngs) if bidirectional else None
    peek = hidden if peeky else 0
    self.decoder = spec.make(embed_dim + peek + self.decoder_step.cell_extra, hidden, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.readout = nnx.Linear(self.decoder_step.feature_dim + peek, tgt_vocab_size, rngs=rngs)

  def encode(self, source: jax.Array, *, deterministic: bool | None = None
             ) -> dict[str, jax.Array]:
    """source [B, S] int -> {'carry': decoder initial state, 'summary' [B, F] (encoder's final
    output), 'keys' [B, S, F] (encoder outputs), 'mask' [B, 1, 1, S] (True = real token),
    'projected' (the keys as the attention score reads them)}.

    deterministic=True turns dropout off whatever the mode (used by `generate`).
    """
    batch = source.shape[0]
    valid = source != PAD  # [B, S]
    x = self.dropout(self.src_embed(source), deterministic=deterministic)  # [B, S, E]
    h = self.hidden // 2 if self.bidirectional else self.hidden
    zero = lambda: (self.spec.zero_carry(batch, h), jnp.zeros((batch, h)))
    carry, summary, keys = run_cell(self.encoder, *zero(), x, valid)  # keys [B, S, F or F/2]
    if self.bidirectional:
      carry_b, summary_b, keys_b = run_cell(self.encoder_bwd, *zero(), x, valid, reverse=True)
      join = lambda a, b: jnp.concatenate([a, b], axis=-1)
      carry, summary, keys = jax.tree.map(join, carry, carry_b), join(summary, summary_b), join(
          keys, keys_b)  # [B, F], [B, F], [B, S, F]
    return {'carry': carry, 'summary': summary, 'keys': keys, 'mask': padding_mask(valid),
            'projected': self.decoder_step.project(keys)}  # [B, S, A]: once, not at every step

  def _step(self, enc: dict[str, jax.Array], carry: Any, h_prev: jax.Array, x: jax.Array,
            want_weights: bool):
    """One decoder step: x [B, E] (embedded y_{t-1}) -> (carry, h [B, F], read-out features
    [B, feature_dim], weights [B, S] | None); the features are the read-out input before dropout.
    """
    if self.peeky:
      x = jnp.concatenate([x, enc['summary']], axis=-1)  # [B, E + F]
    carry, h, feats, w = self.decoder_step.step(self.decoder, carry, h_prev, x, enc, want_weights)
    if self.peeky:
      feats = jnp.concatenate([feats, enc['summary']], axis=-1)  # [B, feature_dim + F]
    return carry, h, feats, w

  def decode(self, enc: dict[str, jax.Array], target_in: jax.Array) -> jax.Array:
    """Teacher forcing: target_in [B, T] (BOS + y) -> logits [B, T, V]."""
    x = self.dropout(self.tgt_embed(target_in))  # [B, T, E]
    want = self.capture_weights and self.score_name is not None

    def body(state, x_t):
      carry, h = state
      carry, h, feats, w = self._step(enc, carry, h, x_t, want)
      return (carry, h), (feats, w)

    _, (feats, weights) = jax.lax.scan(body, (enc['carry'], enc['summary']),
                                       jnp.swapaxes(x, 0, 1))  # feats [T, B, feature_dim]
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
  state = {'enc': enc, 'carry': enc['carry'], 'h': enc['summary']}
  if return_weights:
    state['weights'] = jnp.zeros((batch, max_len, src_len))  # [B, T, S]

  def step_fn(state, tokens, t):
    carry, h, feats, w = model._step(state['enc'], state['carry'], state['h'],
                                     model.tgt_embed(tokens), return_weights)
    new = dict(state, carry=carry, h=h)
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

