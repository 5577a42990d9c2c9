"""Transformer building blocks: norm placement, FFN, encoder/decoder layers and stacks.

Vaswani et al. (2017), "Attention Is All You Need", sec. 3: each sublayer f (self-attention,
source-target attention, position-wise FFN) meets its input stream x through
  post-norm (the paper):  y = LayerNorm(combine(x, f(x)))
  pre-norm (option):      y = combine(x, f(LayerNorm(x))), plus a final LayerNorm,
where combine (attention.combine.COMBINES) is 'residual', x + dropout(f) (the paper, sec. 3.1 and
5.4), or 'gate', x + dropout(σ(W_g [x; f]) ⊙ f). The combine owns the branch's dropout and applies
it after its gate, so a dropped unit leaves y = x.
Embeddings are scaled by sqrt(d_model) and get positions from attention.positional.POSITIONS
(sec. 3.4, 3.5).
Precision (models/precision.py): every layer computes in BlockOptions.dtype with parameters of
BlockOptions.param_dtype; LayerNorm statistics and the softmax statistics stay float32.

Shapes: B batch, S source length, T target length, L length, F features (d_model, the paper's
name for the stream's width), V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.attention.combine import COMBINES, make_combine
from attention_zoo.attention.kernels import with_implementation
from attention_zoo.attention.layers import MultiHeadAttention
from attention_zoo.attention.positional import POSITIONS
from attention_zoo.attention.scores import SCORES
from attention_zoo.models import precision as precision_lib
from attention_zoo.registry import choose

PRE_NORM = {'post': False, 'pre': True}  # norm -> is the LayerNorm before the sublayer?


@dataclasses.dataclass(frozen=True)
class Parts:
  """What BlockOptions' names stand for, looked up once (BlockOptions.parts)."""

  score: Callable[..., nnx.Module]  # a class of attention.scores.SCORES
  kernel: Callable  # a function of attention.kernels.KERNELS, bound to its implementation
  combine: Callable[..., nnx.Module]  # a class of attention.combine.COMBINES
  positions: Callable[..., nnx.Module]  # a class of attention.positional.POSITIONS
  pre_norm: bool  # PRE_NORM[norm]
  precision: precision_lib.Precision  # dtype and param_dtype as jnp dtypes

  @property
  def dtypes(self) -> dict[str, Any]:
    """dtype= and param_dtype= for the layers (flax's keywords)."""
    return self.precision.kwargs


@dataclasses.dataclass(frozen=True)
class BlockOptions:
  """The options every Transformer layer shares, and their defaults: the one place that checks
  them. An unknown option (models.registry.options_from), a bad value or an unknown name (score,
  kernel, ...) fails here, before any layer is built; the layers then take `parts`, what the
  names stand for."""

  max_len: int  # the longest sequence the positions cover: each model passes its own default
  d_model: int = 128
  num_heads: int = 4
  num_layers: int = 2  # layers per stack (an encoder-decoder: encoder layers, as many decoder)
  ffn_dim: int = 256
  dropout_rate: float = 0.1  # on embeddings, and on each sublayer's branch inside its combine
  attention_dropout_rate: float = 0.0
  norm: str = 'post'  # 'post' | 'pre': where the LayerNorm sits (PRE_NORM)
  positional: str = 'sinusoidal'  # a name in attention.positional.POSITIONS
  score: str = 'scaled_dot'  # a name in attention.scores.SCORES
  kernel: str = 'dense'  # a name in attention.kernels.KERNELS
  implementation: str = 'auto'  # how the kernel runs per platform: attention.implementations
  combine: str = 'residual'  # 'residual' | 'gate': a name in attention.combine.COMBINES
  capture_weights: bool = False
  score_dim: int | None = None  # A of the additive / concat score per head (None: head dim)
  dtype: str = precision_lib.DEFAULT  # computation dtype: a name in models.precision.DTYPES
  param_dtype: str = precision_lib.DEFAULT  # parameter dtype: a name in precision.DTYPES
  parts: Parts = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    if self.num_heads < 1 or self.d_model % self.num_heads:
      raise ValueError(f'num_heads ({self.num_heads}) must divide d_model ({self.d_model})')
    sizes = (('d_model', self.d_model), ('num_layers', self.num_layers),
             ('ffn_dim', self.ffn_dim), ('max_len', self.max_len),
             ('score_dim', 1 if self.score_dim is None else self.score_dim))
    for name, value in sizes:
      if value < 1:
        raise ValueError(f'{name} must be >= 1, got {value}')
    for name in ('dropout_rate', 'attention_dropout_rate'):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f'{name} must be in [0, 1), got {getattr(self, name)}')
    parts = Parts(score=SCORES.get(self.score),
                  kernel=with_implementation(self.kernel, self.implementation),
                  combine=COMBINES.get(self.combine),
                  positions=choose(POSITIONS, self.positional, 'positional encoding'),
                  pre_norm=choose(PRE_NORM, self.norm, 'norm placement'),
                  precision=precision_lib.resolve(self.dtype, self.param_dtype))
    object.__setattr__(self, 'parts', parts)  # frozen: set once, here

  @property
  def rotary(self) -> bool:
    return self.parts.positions.rotary


def make_attention(opts: BlockOptions, *, rngs: nnx.Rngs) -> MultiHeadAttention:
  return MultiHeadAttention(opts.num_heads, opts.d_model, score=opts.parts.score,
                            kernel=opts.parts.kernel, score_dim=opts.score_dim,
                            dropout_rate=opts.attention_dropout_rate, rotary=opts.rotary,
                            capture_weights=opts.capture_weights, **opts.parts.dtypes,
                            rngs=rngs)


class FeedForward(nnx.Module):
  """FFN(x) = max(0, x W1 + b1) W2 + b2 (sec. 3.3); dtypes: flax's dtype= and param_dtype=."""

  def __init__(self, d_model: int, ffn_dim: int, *, rngs: nnx.Rngs, **dtypes: Any):
    self.w1 = nnx.Linear(d_model, ffn_dim, **dtypes, rngs=rngs)
    self.w2 = nnx.Linear(ffn_dim, d_model, **dtypes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    # x [B, L, F] -> [B, L, F]
    return self.w2(jax.nn.relu(self.w1(x)))  # hidden [B, L, ffn_dim]


class Sublayer(nnx.Module):
  """One sublayer's wiring: norm placement and combine, which drops out its branch (module doc)."""

  def __init__(self, opts: BlockOptions, *, rngs: nnx.Rngs):
    self.pre = opts.parts.pre_norm
    self.norm = nnx.LayerNorm(opts.d_model, **opts.parts.dtypes, rngs=rngs)
    self.combine = make_combine(opts.parts.combine, opts.d_model, dropout_rate=opts.dropout_rate,
                                **opts.parts.dtypes, rngs=rngs)

  def __call__(self, x: jax.Array, fn) -> tuple[jax.Array, Any]:
    """x [B, L, F]; fn(h [B, L, F]) -> (f(h) [B, L, F], aux) -> (y [B, L, F], aux)."""
    fx, aux = fn(self.norm(x) if self.pre else x)
    y = self.combine(x, fx)  # [B, L, F]
    return (y if self.pre else self.norm(y)), aux


class EncoderLayer(nnx.Module):
  """Self-attention then FFN, each wrapped by a Sublayer."""

  def __init__(self, opts: BlockOptions, *, rngs: nnx.Rngs):
    self.self_attn = make_attention(opts, rngs=rngs)
    self.ffn = FeedForward(opts.d_model, opts.ffn_dim, **opts.parts.dtypes, rngs=rngs)
    self.attn_sub = Sublayer(opts, rngs=rngs)
    self.ffn_sub = Sublayer(opts, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    # x [B, S, F], mask [B, 1, 1, S] -> [B, S, F]
    x, _ = self.attn_sub(x, lambda h: (self.self_attn(h, mask=mask), None))
    x, _ = self.ffn_sub(x, lambda h: (self.ffn(h), None))
    return x


class DecoderLayer(nnx.Module):
  """Masked self-attention, [source-target attention], FFN; `cross=False` for a decoder-only LM."""

  def __init__(self, opts: BlockOptions, *, cross: bool, rngs: nnx.Rngs):
    self.self_attn = make_attention(opts, rngs=rngs)
    self.self_sub = Sublayer(opts, rngs=rngs)
    if cross:
      self.cross_attn = make_attention(opts, rngs=rngs)
      self.cross_sub = Sublayer(opts, rngs=rngs)
    else:
      self.cross_attn = self.cross_sub = None
    self.ffn = FeedForward(opts.d_model, opts.ffn_dim, **opts.parts.dtypes, rngs=rngs)
    self.ffn_sub = Sublayer(opts, rngs=rngs)

  def _cross_and_ffn(self, x, memory, memory_mask, projected=None):
    if self.cross_attn is not None:
      x, _ = self.cross_sub(x, lambda h: (self.cross_attn(
          h, context=memory, mask=memory_mask, projected_context=projected), None))
    x, _ = self.ffn_sub(x, lambda h: (self.ffn(h), None))
    return x

  def project_memory(self, memory: jax.Array) -> dict[str, jax.Array] | None:
    """memory [B, S, F] -> the source-target keys and values of this layer (projected once per
    source, MultiHeadAttention.project_context); None without source-target attention."""
    return None if self.cross_attn is None else self.cross_attn.project_context(memory)

  def __call__(self, x: jax.Array, memory: jax.Array | None = None,
               memory_mask: jax.Array | None = None) -> jax.Array:
    # x [B, T, F], memory [B, S, F], memory_mask [B, 1, 1, S] -> [B, T, F]; causal self-attention
    x, _ = self.self_sub(x, lambda h: (self.self_attn(h, causal=True), None))
    return self._cross_and_ffn(x, memory, memory_mask)

  def decode_step(self, x: jax.Array, cache: Any, memory: jax.Array | None = None,
                  memory_mask: jax.Array | None = None, *,
                  projected: dict[str, jax.Array] | None = None) -> tuple[jax.Array, Any]:
    # x [B, 1, F], cache of self_attn -> (y [B, 1, F], new cache); the source is read from
    # `projected` (project_memory(memory), computed once) or else projected from memory here
    x, cache = self.self_sub(x, lambda h: self.self_attn.decode_step(h, cache))
    return self._cross_and_ffn(x, memory, memory_mask, projected), cache


class Embedder(nnx.Module):
  """Token embedding scaled by sqrt(d_model) (sec. 3.4); `attend` gives tied output logits.
  dtypes: flax's dtype= (of the embeddings and logits) and param_dtype=."""

  def __init__(self, vocab_size: int, d_model: int, *, rngs: nnx.Rngs, **dtypes: Any):
    self.vocab_size, self.scale = vocab_size, math.sqrt(d_model)
    self.embed = nnx.Embed(vocab_size, d_model, **dtypes, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    # tokens [B, L] int -> [B, L, F]
    return self.embed(tokens) * self.scale

  def attend(self, h: jax.Array) -> jax.Array:
    # h [B, L, F] -> logits [B, L, V] = h E^T
    return self.embed.attend(h)


class _Stack(nnx.Module):
  """What both stacks share: positions and dropout on the (already embedded) inputs,
  opts.num_layers layers, and the final LayerNorm of a pre-norm stack."""

  def __init__(self, opts: BlockOptions, make_layer: Callable[[], nnx.Module], *,
               rngs: nnx.Rngs):
    self.positions = opts.parts.positions(opts.max_len, opts.d_model, **opts.parts.dtypes,
                                          rngs=rngs)
    self.dropout = nnx.Dropout(opts.dropout_rate, rngs=rngs)
    self.max_len = opts.max_len
    self.layers = nnx.List([make_layer() for _ in range(opts.num_layers)])
    self.final_norm = (nnx.LayerNorm(opts.d_model, **opts.parts.dtypes, rngs=rngs)
                       if opts.parts.pre_norm else None)

  def _inputs(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    return self.dropout(self.positions(x, positions))  # [B, L, F]

  def _all_inputs(self, x: jax.Array) -> jax.Array:
    if x.shape[1] > self.max_len:
      raise ValueError(f'sequence length {x.shape[1]} exceeds max_len {self.max_len}')
    return self._inputs(x, jnp.arange(x.shape[1]))  # [B, L, F]

  def _out(self, x: jax.Array) -> jax.Array:
    return x if self.final_norm is None else self.final_norm(x)


class EncoderStack(_Stack):
  """opts.num_layers EncoderLayers: x [B, S, F] embedded source, mask [B, 1, 1, S] -> [B, S, F]."""

  def __init__(self, opts: BlockOptions, *, rngs: nnx.Rngs):
    super().__init__(opts, lambda: EncoderLayer(opts, rngs=rngs), rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = self._all_inputs(x)  # [B, S, F]
    for layer in self.layers:
      x = layer(x, mask)
    return self._out(x)


class DecoderStack(_Stack):
  """opts.num_layers DecoderLayers (causal self-attention; source-target attention if `cross`).

  Call: x [B, T, F] embedded targets, memory [B, S, F], memory_mask [B, 1, 1, S] -> [B, T, F];
  cross=False (a decoder-only LM) takes no memory. Decoding: init_cache (and project_memory,
  once per source), then decode_step.
  """

  def __init__(self, opts: BlockOptions, *, cross: bool, rngs: nnx.Rngs):
    super().__init__(opts, lambda: DecoderLayer(opts, cross=cross, rngs=rngs), rngs=rngs)

  def __call__(self, x: jax.Array, memory: jax.Array | None = None,
               memory_mask: jax.Array | None = None) -> jax.Array:
    x = self._all_inputs(x)  # [B, T, F]
    for layer in self.layers:
      x = layer(x, memory, memory_mask)
    return self._out(x)

  def init_cache(self, batch_size: int, max_len: int, dtype=None) -> list:
    """One self-attention cache per decoder layer (pytrees with leading dim B), of `dtype`
    (None: the layers' computation dtype)."""
    return [layer.self_attn.init_cache(batch_size, max_len, dtype) for layer in self.layers]

  def project_memory(self, memory: jax.Array) -> list:
    """memory [B, S, F] -> per layer, its source-target keys and values ({'key', 'value'},
    leading dim B): what every decoding step reads of the source, computed once per source."""
    return [layer.project_memory(memory) for layer in self.layers]

  def decode_step(self, x: jax.Array, t: jax.Array, cache: list, memory: jax.Array | None = None,
                  memory_mask: jax.Array | None = None, *,
                  projected: list | None = None) -> tuple[jax.Array, list]:
    # x [B, 1, F] embedded token of step t (int32 scalar) -> (y [B, 1, F], new caches);
    # projected = project_memory(memory) replaces memory (no per-step key / value projection)
    x = self._inputs(x, jnp.reshape(t, (1,)))  # [B, 1, F]
    projected = [None] * len(self.layers) if projected is None else projected
    new_cache = []
    for layer, layer_cache, layer_proj in zip(self.layers, cache, projected):
      x, layer_cache = layer.decode_step(x, layer_cache, memory, memory_mask,
                                         projected=layer_proj)
      new_cache.append(layer_cache)
    return self._out(x), new_cache
