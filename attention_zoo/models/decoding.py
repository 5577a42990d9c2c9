"""Autoregressive decoding for any model that exposes one decoder step.

A model hands the decoders a `step_fn(state, tokens [B] int32, t) -> (logits [B, V], new_state)`
and an initial `state` (a pytree whose array leaves have leading dim B). Everything runs under
`jax.lax.while_loop`, so both decoders can sit inside `jax.jit`; the loop stops early once every
sequence (every beam) has emitted EOS. `eval_mode_jit` is how every model compiles its
`generate`.

Shapes: B batch, T max_len (decode steps), V vocabulary; beam (in full) is the beam size.
Token conventions follow attention_zoo.specials: PAD = 0; a sequence that emitted EOS keeps
emitting PAD.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.specials import PAD

StepFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]

# Log-probability of an impossible hypothesis (finite, so sums and divisions never give NaN).
NEG_INF = -1e9


def eval_mode_jit(fn: Callable[..., Any], static_argnames: tuple[str, ...] = ()
                  ) -> Callable[..., Any]:
  """The one jit pattern of generation: fn(model, *arrays, **static) under jax.jit.

  Returns call(model, *arrays, **static): it splits the model into (graphdef, state) and runs a
  jax.jit function of them (graphdef and `static_argnames` static) that merges a copy of the
  model, puts the copy in evaluation mode (no dropout, no noise) and calls fn. So it compiles once
  per graphdef, array shapes and static options, works inside an outer jax.jit (the training
  loop's), and leaves the caller's model and its mode as they are. `call.jitted` is the jax.jit
  function (its `_cache_size()` counts the compilations).
  """
  @functools.partial(jax.jit, static_argnames=('graphdef',) + tuple(static_argnames))
  def jitted(graphdef, state, *arrays, **static):
    model = nnx.merge(graphdef, state)
    model.eval()
    return fn(model, *arrays, **static)

  @functools.wraps(fn)
  def call(model, *arrays, **static):
    graphdef, state = nnx.split(model)
    return jitted(graphdef, state, *arrays, **static)

  call.jitted = jitted
  return call


def gnmt_length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT length penalty lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016, eq. 14)."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def greedy_decode(step_fn: StepFn, state: Any, bos: jax.Array, *, max_len: int, eos_id: int,
                  return_state: bool = False):
  """Greedy decoding: y_t = argmax_v p(v | y_<t, x).

  Args:
    step_fn: (state, tokens [B] int32, t int32 scalar) -> (logits [B, V], new_state).
    state: pytree of the decoder state, leaves with leading dim B.
    bos: [B] int32, the first input token of every sequence.
    max_len: number of tokens to emit, T.
    eos_id: end-of-sequence id; after it a sequence emits PAD.
    return_state: also return the final state (e.g. a buffer a step_fn filled per step).

  Returns:
    tokens [B, T] int32 (no BOS), or (tokens, final_state) with return_state=True.
  """
  batch = bos.shape[0]
  tokens = jnp.full((batch, max_len), PAD, jnp.int32)  # [B, T]

  def cond(carry):
    t, _, _, done, _ = carry
    return (t < max_len) & ~jnp.all(done)

  def body(carry):
    t, prev, state, done, tokens = carry
    logits, state = step_fn(state, prev, t)  # [B, V]
    nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B]
    nxt = jnp.where(done, PAD, nxt)  # [B]
    tokens = tokens.at[:, t].set(nxt)  # [B, T]
    return t + 1, nxt, state, done | (nxt == eos_id), tokens

  init = (jnp.int32(0), bos.astype(jnp.int32), state, jnp.zeros((batch,), bool), tokens)
  _, _, state, _, tokens = jax.lax.while_loop(cond, body, init)
  return (tokens, state) if return_state else tokens


def tile_beams(tree: Any, k: int) -> Any:
  """Repeats every leaf k times along dim 0: [B, ...] -> [B * beam, ...] (row b * k + j), the
  rows of beam_search's state (e.g. for what a step_fn reads of the source alone)."""
  return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), tree)


def _gather_beams(tree: Any, beam_idx: jax.Array, batch: int, k: int) -> Any:
  """Picks rows by beam: leaves [B * beam, ...], beam_idx [B, beam] -> [B * beam, ...]."""
  def gather(x):
    x = x.reshape((batch, k) + x.shape[1:])  # [B, beam, ...]
    x = jnp.take_along_axis(x, beam_idx.reshape((batch, k) + (1,) * (x.ndim - 2)), axis=1)
    return x.reshape((batch * k,) + x.shape[2:])
  return jax.tree.map(gather, tree)


def beam_search(step_fn: StepFn, state: Any, bos: jax.Array, *, max_len: int, eos_id: int,
                beam_size: int, length_penalty: float = 0.6):
  """Beam search with the GNMT length penalty; returns the best beam per example.

  A hypothesis Y is scored s(Y) = log p(Y | x) / lp(|Y|), lp(L) = ((5 + L) / 6)^alpha, where
  |Y| counts the emitted tokens including EOS (max_len for one that never emitted EOS).
  Each step, the k beams compete with all their one-token extensions: a finished beam (one that
  emitted EOS) is one candidate that stays as it is (PAD appended), an unfinished beam gives V
  candidates of length t + 1; the k best by s(Y) survive. With k = 1 this is exactly greedy
  decoding (all candidates share the length t + 1, so s ranks them as the logits do), and with
  k at least the number of possible hypotheses it is exhaustive search (k = beam_size).

  Args:
    step_fn: (state, tokens [B * beam] int32, t) -> (logits [B * beam, V], new_state). The
      state leaves are tiled to [B * beam, ...] and reordered by beam every step.
    state: pytree, leaves with leading dim B.
    bos: [B] int32.
    max_len: T.
    eos_id: end-of-sequence id.
    beam_size: k >= 1.
    length_penalty: alpha (0 = raw log-probability).

  Returns:
    tokens [B, T] int32 (the best hypothesis, PAD after EOS) and its score s(Y) [B] float32.

  Reference: Wu et al. (2016), Google's Neural Machine Translation System, section 7.
  """
  if beam_size < 1:
    raise ValueError(f'beam_size must be >= 1, got {beam_size}')
  batch, k = bos.shape[0], beam_size
  state = tile_beams(state, k)
  logp = jnp.full((batch, k), NEG_INF).at[:, 0].set(0.0)  # [B, beam]: only beam 0 is real at t=0

  def score(logp_, length):
    return logp_ / gnmt_length_penalty(length, length_penalty)

  def cond(carry):
    t, finished = carry[0], carry[5]
    return (t < max_len) & ~jnp.all(finished)

  def body(carry):
    t, prev, state, seqs, logp, finished, length = carry
    logits, state = step_fn(state, prev.reshape(-1), t)  # [B * beam, V]
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, k, vocab)
    grow = jnp.where(finished[..., None], NEG_INF, logp[..., None] + log_probs)  # [B, beam, V]
    stay = jnp.where(finished, logp, NEG_INF)  # [B, beam]
    cand_logp = jnp.concatenate([grow.reshape(batch, k * vocab), stay], axis=1)  # [B, beam(V+1)]
    cand_len = jnp.concatenate(
        [jnp.full((batch, k * vocab), t + 1, jnp.int32), length], axis=1)  # [B, beam(V+1)]
    _, pick = jax.lax.top_k(score(cand_logp, cand_len), k)  # [B, beam]
    is_grow = pick < k * vocab  # [B, beam]
    beam_idx = jnp.where(is_grow, pick // vocab, pick - k * vocab)  # [B, beam]
    token = jnp.where(is_grow, pick % vocab, PAD).astype(jnp.int32)  # [B, beam]
    seqs = jnp.take_along_axis(seqs, beam_idx[..., None], axis=1)  # [B, beam, T]
    seqs = seqs.at[:, :, t].set(token)  # [B, beam, T]
    finished = jnp.take_along_axis(finished, beam_idx, axis=1) | (is_grow & (token == eos_id))
    state = _gather_beams(state, beam_idx, batch, k)
    return (t + 1, token, state, seqs, jnp.take_along_axis(cand_logp, pick, axis=1), finished,
            jnp.take_along_axis(cand_len, pick, axis=1))

  init = (jnp.int32(0), jnp.repeat(bos.astype(jnp.int32)[:, None], k, axis=1), state,
          jnp.full((batch, k, max_len), PAD, jnp.int32), logp, jnp.zeros((batch, k), bool),
          jnp.zeros((batch, k), jnp.int32))
  _, _, _, seqs, logp, _, length = jax.lax.while_loop(cond, body, init)
  final = score(logp, length)  # [B, beam]
  best = jnp.argmax(final, axis=1)  # [B]
  tokens = jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0]  # [B, T]
  return tokens, jnp.take_along_axis(final, best[:, None], axis=1)[:, 0]
