"""End-to-end memory network (Sukhbaatar, Szlam, Weston, Fergus 2015, "End-To-End Memory Networks").

Per hop k = 1..hops (section 2.1-2.2), with story sentences x_i (memory slot i, row 0 = the most
recent) and state u^k:
  m_i = Σ_j l_j ⊙ A^k x_ij + T_A^k(i)        input memory   (eq. 1 with PE and TE, section 4.1)
  c_i = Σ_j l_j ⊙ C^k x_ij + T_C^k(i)        output memory
  p_i = softmax_i(u^kᵀ m_i)                 eq. (1): dot-score attention over the memories
  o^k = Σ_i p_i c_i                         eq. (2)
  u^{k+1} = u^k + o^k                       section 2.2 (layer-wise tying: u^{k+1} = H u^k + o^k)
  u^1 = Σ_j l_j ⊙ B q_j,   â = softmax(W u^{hops+1})   eq. (3); the model returns the logits
Encodings (section 4.1): 'bow' l_j = 1; 'position' l_kj = (1 - j/J) - (k/d)(1 - 2j/J), the
paper's formula, J = words in the sentence, d = E = embed_dim, word j and feature k from 1;
'position_matlab' l_kj = 1 + 4(k - (d+1)/2)(j - (J+1)/2)/(dJ), J = the padded width W, the form
of the authors' MATLAB code (build_model.m), which produced the paper's tables. They differ in
results: on bAbI task 16 (3 hops, LS, one seed) the paper's formula ends near chance (51%
test error) and the code's at 0.3% (paper: 1.3%). PAD words (the paper's null symbol, whose
embedding is zero) count for nothing in either.
Temporal encoding (TE): learned T_A, T_C [M, E]; slot i gets row t_i (t_i = i, "sentences ago",
unless the time-shift noise below moves it).

Slots that hold no sentence (the story is shorter than M), `empty_slots`:
  'masked': out of the softmax;
  'zero':   zero memories m_i = c_i = 0 (no TE either) that take part in the softmax with score
            0, as in the authors' code (their nil words embed to 0).

Random noise (RN, section 4.1: "at training time we can randomly add 10% of empty memories to
the stories"; train mode only), `noise`:
  'time_shift' (the authors' code, train.m): a story of n sentences gets n_blank ~ U{0, ..,
    ceil(n · random_noise) - 1} blanks: its sentences take n distinct time indices drawn
    uniformly from 0..n + n_blank - 1, in order (the most recent the smallest), capped at M - 1.
    The blanks hold no slot; only the TE rows move. (A story of n <= 10 sentences gets none.)
  'empty_slots' (the paper's sentence read literally): before each real sentence an empty memory
    is inserted with probability `random_noise`, so the sentences move to older slots (those
    moved past M fall out). An inserted memory is a slot like any other: m_i = T_A(i),
    c_i = T_C(i), and it takes part in the softmax (`insert_empty_memories`).

Linear start (LS, section 4.2): with `linear_start=True` the model begins without the memory
softmax, p_i = u^kᵀ m_i on the non-empty slots, until the training loop ends its start phase
(config.train.start_phase: when the validation loss stops falling). The switch is the model's
`start_phase`, a bool nnx.Variable that is not a parameter: it is checkpointed with the model's
other state, and the choice linear / softmax is a traced `jnp.where`, so the switch needs no
recompilation. Evaluation follows it (linear while the start phase is on).

Precision (models/precision.py): `dtype` computes (the tables are cast to it where they are
read), `param_dtype` stores the tables and matrices; the memory softmax's statistics stay float32
(attention.kernels.dense).

Shapes: B batch, M memory slots, W words per sentence, E embedding dim (the paper's d), V
vocabulary; hops and classes are written in full.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_zoo.attention import get_kernel, make_score
from attention_zoo.attention.masks import padding_mask
from attention_zoo.models import precision as precision_lib
from attention_zoo.models.registry import register_model
from attention_zoo.registry import choose
from attention_zoo.specials import PAD


def bag_of_words(tokens: jax.Array, embed_dim: int) -> jax.Array:
  """l_j = 1 for real words, 0 for PAD: tokens [..., W] -> weights [..., W, 1]."""
  del embed_dim
  return (tokens != PAD).astype(jnp.float32)[..., None]


def position_encoding(tokens: jax.Array, embed_dim: int) -> jax.Array:
  """l_kj = (1 - j/J) - (k/d)(1 - 2j/J), J = real words: tokens [..., W] -> weights [..., W, E]."""
  real = (tokens != PAD).astype(jnp.float32)  # [..., W]
  n_words = jnp.maximum(real.sum(-1, keepdims=True), 1.0)[..., None]  # J [..., 1, 1]
  j = jnp.arange(1, tokens.shape[-1] + 1, dtype=jnp.float32)[:, None]  # [W, 1]
  k = jnp.arange(1, embed_dim + 1, dtype=jnp.float32)[None, :]  # [1, E]
  l = (1 - j / n_words) - (k / embed_dim) * (1 - 2 * j / n_words)  # [..., W, E]
  return l * real[..., None]


def position_encoding_matlab(tokens: jax.Array, embed_dim: int) -> jax.Array:
  """l_kj = 1 + 4(k - (d+1)/2)(j - (J+1)/2)/(dJ), J = the padded width W (the authors' code):
  tokens [..., W] -> weights [..., W, E]."""
  real = (tokens != PAD).astype(jnp.float32)  # [..., W]
  width = tokens.shape[-1]
  j = jnp.arange(1, width + 1, dtype=jnp.float32)[:, None]  # [W, 1]
  k = jnp.arange(1, embed_dim + 1, dtype=jnp.float32)[None, :]  # [1, E]
  l = 1 + 4 * (k - (embed_dim + 1) / 2) * (j - (width + 1) / 2) / (embed_dim * width)  # [W, E]
  return l * real[..., None]


ENCODINGS = {'bow': bag_of_words, 'position': position_encoding,
             'position_matlab': position_encoding_matlab}


def insert_empty_memories(story: jax.Array, inserted: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Random noise: story [B, M, W] (row 0 = most recent), inserted [B, M] bool (an empty memory
  goes right before real sentence r, i.e. on its more recent side, where inserted[:, r]; ignored
  on empty rows) -> (story [B, M, W] with the sentences moved to older slots, valid [B, M]).

  Sentence r moves to slot r + Σ_{r' <= r} inserted[r'] (dropped past M); valid is True on the
  moved sentences and on the inserted empty memories: the slots a softmax reads.
  """
  batch, memory_size = inserted.shape
  real = jnp.any(story != PAD, axis=-1)  # [B, M]
  inserted = inserted & real
  target = jnp.arange(memory_size) + jnp.cumsum(inserted, axis=1)  # [B, M] new slot of row r
  rows = jnp.arange(batch)[:, None]  # [B, 1]
  to = jnp.where(real, target, memory_size)  # [B, M]; M: dropped
  moved = jnp.zeros_like(story).at[rows, to].set(story, mode='drop')  # [B, M, W]
  valid = jnp.zeros((batch, memory_size), bool).at[rows, to].set(True, mode='drop')
  empty = jnp.where(inserted, target - 1, memory_size)  # [B, M] slot of each inserted memory
  return moved, valid.at[rows, empty].set(True, mode='drop')


def shifted_times(key: jax.Array, valid: jax.Array, rate: float) -> jax.Array:
  """Time-shift noise (the authors' train.m): valid [B, M] bool (the real sentences, rows 0..n-1)
  -> time indices [B, M] int32: n distinct indices drawn from 0..n + n_blank - 1, n_blank ~
  U{0, .., ceil(n · rate) - 1}, increasing with the row, capped at M - 1 (rows >= n: their row).
  """
  batch, memory_size = valid.shape
  n = valid.sum(axis=1, keepdims=True)  # [B, 1]
  key_blank, key_pick = jax.random.split(key)
  most = jnp.ceil(n * rate).astype(jnp.int32)  # [B, 1] exclusive bound of n_blank (>= 1 if n)
  blank = jnp.floor(jax.random.uniform(key_blank, n.shape) * jnp.maximum(most, 1))
  width = memory_size + int(np.ceil(memory_size * rate))  # room for n + n_blank indices
  span = n + blank.astype(jnp.int32)  # [B, 1] indices to draw from
  draw = jax.random.uniform(key_pick, (batch, width))
  draw = jnp.where(jnp.arange(width) < span, draw, 2.0)  # out-of-range indices last
  picked = jnp.argsort(draw, axis=1)  # [B, width]: a uniform random order of 0..span-1 first
  rank = jnp.arange(width) < n  # [B, width] the first n of them are the picked indices
  times = jnp.sort(jnp.where(rank, picked, width), axis=1)[:, :memory_size]  # [B, M] increasing
  times = jnp.minimum(times, memory_size - 1)
  return jnp.where(valid, times, jnp.arange(memory_size)).astype(jnp.int32)


def _time_shift(key, story, valid, times, rate):
  del times
  return story, valid, shifted_times(key, valid, rate)


def _empty_slots(key, story, valid, times, rate):
  del valid
  inserted = jax.random.bernoulli(key, rate, story.shape[:2])
  return (*insert_empty_memories(story, inserted), times)


# noise(key, story, valid, times, rate) -> (story, valid, times) with RN
NOISES = {'time_shift': _time_shift, 'empty_slots': _empty_slots}
EMPTY_SLOTS = {'masked': False, 'zero': True}  # name -> whether empty slots are zero memories


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], dtype: Any) -> nnx.Param:
  """N(0, 0.1²) initialization, as in the paper (section 4.2), stored as `dtype`."""
  return nnx.Param((0.1 * jax.random.normal(rngs.params(), shape)).astype(dtype))


class AdjacentTying(nnx.Module):
  """A^{k+1} = C^k, B = A^1, W = C^Kᵀ (when num_classes == vocab_size; else W is its own matrix).

  Embedding tables T_0..T_hops: A^k = T_{k-1}, C^k = T_k (likewise the temporal tables).
  """

  def __init__(self, vocab_size, num_classes, memory_size, embed_dim, hops, temporal, *, dtype,
               param_dtype, rngs):
    self.words = _normal(rngs, (hops + 1, vocab_size, embed_dim), param_dtype)  # [hops + 1, V, E]
    self.times = (_normal(rngs, (hops + 1, memory_size, embed_dim), param_dtype) if temporal
                  else None)
    tie = num_classes == vocab_size
    self.out = None if tie else nnx.Linear(embed_dim, num_classes, use_bias=False, dtype=dtype,
                                           param_dtype=param_dtype, rngs=rngs)

  def memory_tables(self, k: int):
    """-> A, C [V, E] and T_A, T_C [M, E] (None without TE) of hop k (0-based)."""
    if self.times is None:
      return self.words[k], self.words[k + 1], None, None
    return self.words[k], self.words[k + 1], self.times[k], self.times[k + 1]

  def query_table(self) -> jax.Array:
    return self.words[0]  # B = A^1

  def next_state(self, u: jax.Array, o: jax.Array) -> jax.Array:
    return u + o

  def answer(self, u: jax.Array) -> jax.Array:
    # u [B, E] -> [B, classes]
    return self.out(u) if self.out is not None else u @ self.words[-1].T.astype(u.dtype)


class LayerwiseTying(nnx.Module):
  """A^1 = ... = A^hops, C^1 = ... = C^hops, separate B and W, and u^{k+1} = H u^k + o^k."""

  def __init__(self, vocab_size, num_classes, memory_size, embed_dim, hops, temporal, *, dtype,
               param_dtype, rngs):
    del hops
    dtypes = dict(dtype=dtype, param_dtype=param_dtype)
    self.words = _normal(rngs, (3, vocab_size, embed_dim), param_dtype)  # A, C, B [3, V, E]
    self.times = (_normal(rngs, (2, memory_size, embed_dim), param_dtype) if temporal
                  else None)  # T_A, T_C
    self.h = nnx.Linear(embed_dim, embed_dim, use_bias=False, **dtypes, rngs=rngs)
    self.out = nnx.Linear(embed_dim, num_classes, use_bias=False, **dtypes, rngs=rngs)

  def memory_tables(self, k: int):
    del k
    if self.times is None:
      return self.words[0], self.words[1], None, None
    return self.words[0], self.words[1], self.times[0], self.times[1]

  def query_table(self) -> jax.Array:
    return self.words[2]

  def next_state(self, u: jax.Array, o: jax.Array) -> jax.Array:
    return self.h(u) + o

  def answer(self, u: jax.Array) -> jax.Array:
    return self.out(u)  # [B, classes]


TYING = {'adjacent': AdjacentTying, 'layerwise': LayerwiseTying}


class StartPhase(nnx.Variable):
  """True while the model is in its start phase (linear start); not a parameter, never trained:
  the training loop ends the phase (see attention_zoo.train.loop)."""


@register_model('memn2n')
class MemN2N(nnx.Module):
  """End-to-end memory network for bAbI: model(story [B, M, W], query [B, W]) -> [B, classes].

  Args:
    vocab_size, num_classes, memory_size, sentence_len: task sizes (V, classes, M, W).
    embed_dim: E, the paper's d (20 in its bAbI experiments, 50 for joint training).
    hops: 3 in the paper.
    tying: a name in TYING ('adjacent', 'layerwise').
    encoding: a name in ENCODINGS ('bow', 'position' (the paper's formula), 'position_matlab'
      (the authors' code's)).
    temporal: add the learned temporal encodings T_A, T_C.
    linear_start: begin without the memory softmax (LS); the model then has `start_phase`, which
      the training loop sets False when config.train.start_phase says (e.g. on a validation
      plateau). False: softmax from the start, and no `start_phase`.
    random_noise: RN's rate in train mode (the rng stream 'noise'): see `noise`.
    noise: 'time_shift' (the authors' code) | 'empty_slots' (see the module docstring).
    empty_slots: 'masked' | 'zero': slots without a sentence (see the module docstring).
    capture_weights: sow the per-hop weights [B, hops, M] as nnx.Intermediate
      'attention_weights'.
    dtype, param_dtype: computation and parameter dtype, names in models.precision.DTYPES
      ('float32', 'bfloat16').

  The defaults follow the paper's text where it speaks (its PE formula, RN as inserted empty
  memories); on slots without a sentence it is silent, and they are masked out of the softmax.
  configs/babi_memn2n.py selects the authors' code's forms instead ('position_matlab',
  'time_shift', 'zero'), which reproduce Table 1.
  """

  def __init__(self, vocab_size: int, num_classes: int, memory_size: int, sentence_len: int, *,
               embed_dim: int = 20, hops: int = 3, tying: str = 'adjacent',
               encoding: str = 'position', temporal: bool = True, linear_start: bool = False,
               random_noise: float = 0.1, noise: str = 'empty_slots', empty_slots: str = 'masked',
               capture_weights: bool = False, dtype: str = precision_lib.DEFAULT,
               param_dtype: str = precision_lib.DEFAULT, rngs: nnx.Rngs):
    precision = precision_lib.resolve(dtype, param_dtype)
    if hops < 1:
      raise ValueError(f'memn2n: hops must be >= 1, got {hops}')
    if not 0.0 <= random_noise < 1.0:
      raise ValueError(f'memn2n: random_noise must be in [0, 1), got {random_noise}')
    self.encode = choose(ENCODINGS, encoding, 'sentence encoding')
    self.tying = choose(TYING, tying, 'tying')(vocab_size, num_classes, memory_size, embed_dim,
                                               hops, temporal, **precision.kwargs, rngs=rngs)
    self.score = make_score('dot', embed_dim, embed_dim, rngs=rngs)
    self.dtype = precision.dtype
    self.kernel = get_kernel('dense')
    self.memory_size, self.sentence_len, self.embed_dim = memory_size, sentence_len, embed_dim
    self.hops, self.temporal, self.random_noise = hops, temporal, random_noise
    self.noise = choose(NOISES, noise, 'random noise')
    self.zero_empty = choose(EMPTY_SLOTS, empty_slots, 'empty_slots')
    self.capture_weights = capture_weights
    self.deterministic = False  # train mode, like nnx.Dropout; model.eval() sets True
    self.noise_rngs = rngs['noise'].fork()
    if linear_start:
      self.start_phase = StartPhase(jnp.asarray(True))  # True: no memory softmax yet

  def _embed(self, tokens: jax.Array, table: jax.Array) -> jax.Array:
    # tokens [..., W], table [V, E] -> Σ_j l_j ⊙ table[x_j]  [..., E] in the computation dtype
    weights = self.encode(tokens, self.embed_dim).astype(self.dtype)  # [..., W, 1 | E]
    return jnp.sum(weights * table.astype(self.dtype)[tokens], axis=-2)

  def _memories(self, story: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """-> (story [B, M, W], valid slots [B, M], time index of each slot [B, M]): as given in
    eval mode (slot i at time i); with RN in train mode."""
    valid = jnp.any(story != PAD, axis=-1)  # [B, M]
    times = jnp.broadcast_to(jnp.arange(self.memory_size), valid.shape)  # [B, M]
    if self.deterministic or self.random_noise == 0.0:
      return story, valid, times
    return self.noise(self.noise_rngs(), story, valid, times, self.random_noise)

  def __call__(self, story: jax.Array, query: jax.Array) -> jax.Array:
    """story [B, M, W], query [B, W] int (PAD = 0) -> answer logits [B, classes]."""
    batch = story.shape[0]
    if story.shape[1:] != (self.memory_size, self.sentence_len) or query.shape != (
        batch, self.sentence_len):
      raise ValueError(f'memn2n: expected story [B, {self.memory_size}, {self.sentence_len}] and '
                       f'query [B, {self.sentence_len}], got {story.shape} and {query.shape}')
    story, valid, times = self._memories(story)  # [B, M, W], [B, M], [B, M]
    mask = padding_mask(jnp.ones_like(valid) if self.zero_empty else valid)  # [B, 1, 1, M]
    linear = self.start_phase[...] if hasattr(self, 'start_phase') else None  # traced bool
    u = self._embed(query, self.tying.query_table())  # [B, E]
    hop_weights = []
    for k in range(self.hops):
      table_a, table_c, time_a, time_c = self.tying.memory_tables(k)
      m = self._embed(story, table_a)  # [B, M, E]
      c = self._embed(story, table_c)  # [B, M, E]
      if self.temporal:
        # slot i gets T(t_i): [B, M, E]
        m, c = m + time_a.astype(m.dtype)[times], c + time_c.astype(c.dtype)[times]
      if self.zero_empty:  # no sentence, no TE: a zero memory (it does take part in the softmax)
        m, c = jnp.where(valid[..., None], m, 0.0), jnp.where(valid[..., None], c, 0.0)
      q, keys, values = u[:, None, None], m[:, :, None], c[:, :, None]  # [B, 1|M, 1, E]
      o, p = self.kernel(self.score, q, keys, values, mask, return_weights=True)
      o, p = o[:, 0, 0], p[:, 0, 0]  # [B, E], [B, M]
      if linear is not None:  # linear start: p_i = u^kᵀ m_i, no softmax
        p_linear = jnp.where(mask, self.score(q, keys), 0.0)[:, 0, 0]  # [B, M]
        o_linear = jnp.einsum('bm,bme->be', p_linear, c)  # [B, E]
        o, p = jnp.where(linear, o_linear, o), jnp.where(linear, p_linear, p)
      hop_weights.append(p)
      u = self.tying.next_state(u, o)  # [B, E]
    if self.capture_weights:
      hop_weights = jnp.stack(hop_weights, axis=1)  # [B, hops, M]
      self.sow(nnx.Intermediate, 'attention_weights', hop_weights)
    return self.tying.answer(u)  # [B, classes]
