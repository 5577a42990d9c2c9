"""End-to-end memory network (Sukhbaatar, Szlam, Weston, Fergus 2015, "End-To-End Memory Networks").

Per hop k = 1..hops, with story sentences x_i (memory slot i, row 0 = most recent), state u^k:
  m_i = Σ_j l_j ⊙ A^k x_ij + T_A^k(i)        input memory   (section 2.1, 4.1)
  c_i = Σ_j l_j ⊙ C^k x_ij + T_C^k(i)        output memory
  p_i = softmax_i(u^kᵀ m_i)                 dot-score attention over the non-empty slots
  o^k = Σ_i p_i c_i,    u^{k+1} = u^k + o^k   (layer-wise tying: u^{k+1} = H u^k + o^k)
  u^1 = Σ_j l_j ⊙ B q_j,    answer logits = W u^{hops+1}
Encodings: 'bow' l_j = 1; 'position' l_kj = (1 - j/J) - (k/d)(1 - 2j/J) (the paper's eq. in
section 4.1: J = words in the sentence, d = E = embed_dim, word j and feature k from 1). PAD
words (0) count for nothing.
Temporal encoding (TE): learned T_A, T_C [M, E] rows added per slot. Random noise (RN, train mode
only): before each slot an empty memory is inserted with probability `random_noise`, shifting
the temporal index of the older slots (slots shifted past M fall out of memory).
Linear start (LS, section 4.2): for the first `linear_start_steps` training steps the softmax is
removed (p_i = u^kᵀ m_i on non-empty slots). The model counts its own train-mode calls (one per
training step) in `steps_seen`, an nnx.Variable that is not a parameter: it is checkpointed with
the model's other state, and the choice linear / softmax is a traced `jnp.where`, so the switch
needs no recompilation. Evaluation follows the latest training step (linear during linear start).

Shapes: B batch, M memory slots, W words per sentence, E embedding dim (the paper's d), V
vocabulary; hops and classes are written in full.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.attention import get_kernel, make_score
from attention_zoo.attention.masks import padding_mask
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


ENCODINGS = {'bow': bag_of_words, 'position': position_encoding}


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...]) -> nnx.Param:
  """N(0, 0.1²) initialization, as in the paper (section 4.2)."""
  return nnx.Param(0.1 * jax.random.normal(rngs.params(), shape))


class AdjacentTying(nnx.Module):
  """A^{k+1} = C^k, B = A^1, W = C^Kᵀ (when num_classes == vocab_size; else W is its own matrix).

  Embedding tables T_0..T_hops: A^k = T_{k-1}, C^k = T_k (likewise the temporal tables).
  """

  def __init__(self, vocab_size, num_classes, memory_size, embed_dim, hops, temporal, *, rngs):
    self.words = _normal(rngs, (hops + 1, vocab_size, embed_dim))  # [hops + 1, V, E]
    self.times = _normal(rngs, (hops + 1, memory_size, embed_dim)) if temporal else None
    tie = num_classes == vocab_size
    self.out = None if tie else nnx.Linear(embed_dim, num_classes, use_bias=False, rngs=rngs)

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
    return self.out(u) if self.out is not None else u @ self.words[-1].T


class LayerwiseTying(nnx.Module):
  """A^1 = ... = A^hops, C^1 = ... = C^hops, separate B and W, and u^{k+1} = H u^k + o^k."""

  def __init__(self, vocab_size, num_classes, memory_size, embed_dim, hops, temporal, *, rngs):
    del hops
    self.words = _normal(rngs, (3, vocab_size, embed_dim))  # A, C, B [3, V, E]
    self.times = _normal(rngs, (2, memory_size, embed_dim)) if temporal else None  # T_A, T_C
    self.h = nnx.Linear(embed_dim, embed_dim, use_bias=False, rngs=rngs)
    self.out = nnx.Linear(embed_dim, num_classes, use_bias=False, rngs=rngs)

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


class StepCount(nnx.Variable):
  """A count the model keeps of itself (not a parameter, never trained)."""


@register_model('memn2n')
class MemN2N(nnx.Module):
  """End-to-end memory network for bAbI: model(story [B, M, W], query [B, W]) -> [B, classes].

  Args:
    vocab_size, num_classes, memory_size, sentence_len: task sizes (V, classes, M, W).
    embed_dim: E, the paper's d (20 in its bAbI experiments). hops: 3 in the paper.
    tying: a name in TYING ('adjacent', 'layerwise').
    encoding: a name in ENCODINGS ('bow', 'position').
    temporal: add the learned temporal encodings T_A, T_C.
    linear_start_steps: training steps without the memory softmax (linear start; 0 = off).
    random_noise: fraction of empty memories inserted in train mode (rng stream 'noise').
    capture_weights: sow the per-hop weights [B, hops, M] as nnx.Intermediate
      'attention_weights'.
  """

  def __init__(self, vocab_size: int, num_classes: int, memory_size: int, sentence_len: int, *,
               embed_dim: int = 20, hops: int = 3, tying: str = 'adjacent',
               encoding: str = 'position', temporal: bool = True, linear_start_steps: int = 0,
               random_noise: float = 0.1, capture_weights: bool = False, rngs: nnx.Rngs):
    if hops < 1:
      raise ValueError(f'memn2n: hops must be >= 1, got {hops}')
    if not 0.0 <= random_noise < 1.0:
      raise ValueError(f'memn2n: random_noise must be in [0, 1), got {random_noise}')
    if linear_start_steps < 0:
      raise ValueError(f'memn2n: linear_start_steps must be >= 0, got {linear_start_steps}')
    self.encode = choose(ENCODINGS, encoding, 'sentence encoding')
    self.tying = choose(TYING, tying, 'tying')(vocab_size, num_classes, memory_size, embed_dim,
                                               hops, temporal, rngs=rngs)
    self.score = make_score('dot', embed_dim, embed_dim, rngs=rngs)
    self.kernel = get_kernel('dense')
    self.memory_size, self.sentence_len, self.embed_dim = memory_size, sentence_len, embed_dim
    self.hops, self.temporal, self.random_noise = hops, temporal, random_noise
    self.linear_start_steps, self.capture_weights = linear_start_steps, capture_weights
    self.deterministic = False  # train mode, like nnx.Dropout; model.eval() sets True
    self.noise_rngs = rngs['noise'].fork()
    self.steps_seen = StepCount(jnp.zeros((), jnp.int32))  # train-mode calls so far

  def _linear(self) -> jax.Array | None:
    """Counts a train-mode call; -> is this call in linear start? (a traced bool; None when
    linear start is off). Training step s (from 0) is linear iff s < linear_start_steps;
    evaluation follows the latest training step (the first one before any)."""
    seen = self.steps_seen[...]
    if not self.deterministic:
      self.steps_seen[...] = seen + 1
    if self.linear_start_steps == 0:
      return None
    step = jnp.maximum(seen - 1, 0) if self.deterministic else seen
    return step < self.linear_start_steps

  def _embed(self, tokens: jax.Array, table: jax.Array) -> jax.Array:
    # tokens [..., W], table [V, E] -> Σ_j l_j ⊙ table[x_j]  [..., E]
    return jnp.sum(self.encode(tokens, self.embed_dim) * table[tokens], axis=-2)

  def _time_index(self, batch: int) -> tuple[jax.Array, jax.Array]:
    """Temporal index of each slot [B, M] and whether it is still in memory [B, M] (RN)."""
    index = jnp.broadcast_to(jnp.arange(self.memory_size), (batch, self.memory_size))
    if self.deterministic or self.random_noise == 0.0:
      return index, jnp.ones(index.shape, bool)
    inserted = jax.random.bernoulli(self.noise_rngs(), self.random_noise, index.shape)  # [B, M]
    index = index + jnp.cumsum(inserted, axis=1)
    return jnp.minimum(index, self.memory_size - 1), index < self.memory_size

  def __call__(self, story: jax.Array, query: jax.Array) -> jax.Array:
    """story [B, M, W], query [B, W] int (PAD = 0) -> answer logits [B, classes]."""
    batch = story.shape[0]
    if story.shape[1:] != (self.memory_size, self.sentence_len) or query.shape != (
        batch, self.sentence_len):
      raise ValueError(f'memn2n: expected story [B, {self.memory_size}, {self.sentence_len}] and '
                       f'query [B, {self.sentence_len}], got {story.shape} and {query.shape}')
    time_index, kept = self._time_index(batch)  # [B, M]
    valid = jnp.any(story != PAD, axis=-1) & kept  # [B, M]: non-empty slots
    mask = padding_mask(valid)  # [B, 1, 1, M]
    linear = self._linear()  # None, or a traced bool
    u = self._embed(query, self.tying.query_table())  # [B, E]
    hop_weights = []
    for k in range(self.hops):
      table_a, table_c, time_a, time_c = self.tying.memory_tables(k)
      m = self._embed(story, table_a)  # [B, M, E]
      c = self._embed(story, table_c)  # [B, M, E]
      if self.temporal:
        m, c = m + time_a[time_index], c + time_c[time_index]  # [B, M, E]
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

