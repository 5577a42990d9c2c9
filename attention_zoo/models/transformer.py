"""Transformer models: encoder-decoder ('transformer'), decoder-only LM, encoder classifier.

Vaswani et al. (2017), "Attention Is All You Need". The blocks (positions, norm placement, layers)
live in transformer_blocks.py; attention itself is attention_zoo.attention.MultiHeadAttention, so
score ('scaled_dot', 'additive', ...), kernel and combine ('residual', 'gate', ...) are options.

Shapes: B batch, S source length, T target length, L length, D d_model, V vocabulary, H heads.
Token conventions (attention_zoo.data.base): PAD = 0 (masked as keys), BOS = 1, EOS = 2.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.attention.masks import padding_mask
from attention_zoo.data.base import BOS, EOS, PAD
from attention_zoo.models import decoding
from attention_zoo.models.registry import register_model
from attention_zoo.models.transformer_blocks import BlockOptions, Embedder, Stack
from attention_zoo.registry import Registry

POOLINGS: Registry = Registry('pooling')


def _opts(d_model, num_heads, ffn_dim, dropout_rate, attention_dropout_rate, norm, positional,
          score, kernel, combine, max_len, capture_weights, score_dim) -> BlockOptions:
  return BlockOptions(d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim,
                      dropout_rate=dropout_rate, attention_dropout_rate=attention_dropout_rate,
                      norm=norm, positional=positional, score=score, kernel=kernel,
                      combine=combine, max_len=max_len, capture_weights=capture_weights,
                      score_dim=score_dim)


def captured_weights(fn, *args) -> tuple[Any, dict[str, jax.Array]]:
  """Runs fn(*args) (a bound model method) and collects every sown attention weight.

  Returns (fn's output, {'decoder/layers/0/cross_attn': weights, ...}) with the module path
  joined by '/'; weights are [B, H, Q, K]. The MHAs must be built with capture_weights=True.
  """
  out, inter = nnx.capture(fn, nnx.Intermediate)(*args)
  weights = {}
  for path, value in nnx.to_flat_state(inter):
    keys = [str(p) for p in path]
    if 'attention_weights' not in keys:
      continue
    name = '/'.join(keys[:keys.index('attention_weights')])
    value = value.get_value() if hasattr(value, 'get_value') else value
    weights[name] = value[-1] if isinstance(value, tuple) else value
  return out, weights


class EncoderDecoder(nnx.Module):
  """The Transformer of Vaswani et al. (2017): model(source [B, S], target_in [B, T]) -> [B, T, V].

  share_embeddings ties source, target and output embeddings (sec. 3.4; needs equal vocabularies);
  tie_output ties only the target embedding and the output projection.
  """

  def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, d_model: int = 128,
               num_heads: int = 4, num_layers: int = 2, ffn_dim: int = 256,
               dropout_rate: float = 0.1, attention_dropout_rate: float = 0.0,
               norm: str = 'post', positional: str = 'sinusoidal', score: str = 'scaled_dot',
               kernel: str = 'dense', combine: str = 'residual', share_embeddings: bool = False,
               tie_output: bool = False, max_len: int = 256, capture_weights: bool = False,
               score_dim: int | None = None, rngs: nnx.Rngs):
    opts = _opts(d_model, num_heads, ffn_dim, dropout_rate, attention_dropout_rate, norm,
                 positional, score, kernel, combine, max_len, capture_weights, score_dim)
    if share_embeddings and src_vocab_size != tgt_vocab_size:
      raise ValueError(f'share_embeddings=True needs src_vocab_size == tgt_vocab_size, got '
                       f'{src_vocab_size} and {tgt_vocab_size}; use tie_output=True to share '
                       'only the target and output embeddings')
    self.tgt_embed = Embedder(tgt_vocab_size, d_model, rngs=rngs)
    self.src_embed = (self.tgt_embed if share_embeddings
                      else Embedder(src_vocab_size, d_model, rngs=rngs))
    self.encoder = Stack(opts, num_layers, cross=None, rngs=rngs)
    self.decoder = Stack(opts, num_layers, cross=True, rngs=rngs)
    tied = share_embeddings or tie_output
    self.out = None if tied else nnx.Linear(d_model, tgt_vocab_size, rngs=rngs)
    self.max_len = max_len

  def encode(self, source: jax.Array) -> tuple[jax.Array, jax.Array]:
    # source [B, S] int -> memory [B, S, D], valid [B, S] bool (False at PAD)
    valid = source != PAD  # [B, S]
    return self.encoder(self.src_embed(source), padding_mask(valid)), valid

  def _logits(self, h: jax.Array) -> jax.Array:
    return self.tgt_embed.attend(h) if self.out is None else self.out(h)  # [B, T, V]

  def decode(self, target_in: jax.Array, memory: jax.Array, valid: jax.Array) -> jax.Array:
    # target_in [B, T], memory [B, S, D], valid [B, S] -> logits [B, T, V]
    h = self.decoder(self.tgt_embed(target_in), None, memory, padding_mask(valid))  # [B, T, D]
    return self._logits(h)  # [B, T, V]

  def __call__(self, source: jax.Array, target_in: jax.Array) -> jax.Array:
    # source [B, S], target_in [B, T] -> logits [B, T, V]
    memory, valid = self.encode(source)
    return self.decode(target_in, memory, valid)

  def start_decoding(self, source: jax.Array, max_len: int) -> dict:
    """Decoder state for `step`: per-layer caches and the encoded source (leading dim B)."""
    if max_len > self.max_len:
      raise ValueError(f'max_len {max_len} exceeds the model max_len {self.max_len}')
    memory, valid = self.encode(source)
    return {'cache': self.decoder.init_cache(source.shape[0], max_len, memory.dtype),
            'memory': memory, 'valid': valid}

  def step(self, state: dict, tokens: jax.Array, t: jax.Array) -> tuple[jax.Array, dict]:
    """One decoder step: tokens [N] at position t -> (logits [N, V], new state)."""
    x = self.tgt_embed(tokens[:, None])  # [N, 1, D]
    h, cache = self.decoder.decode_step(x, t, state['cache'], state['memory'],
                                        padding_mask(state['valid']))
    return self._logits(h)[:, 0], {**state, 'cache': cache}  # [N, V]

  def generate(self, source: jax.Array, max_len: int, beam_size: int = 1,
               length_penalty: float = 0.6, return_weights: bool = False):
    """Greedy (beam_size=1) or beam search decoding, jit-compiled once per shape and option.

    Runs in evaluation mode (no dropout) whatever the model's mode.
    Returns tokens [B, max_len] int32 (no BOS, PAD after EOS); with return_weights=True also the
    attention weights of the teacher-forced pass over the generated tokens (see captured_weights).
    """
    graphdef, state = nnx.split(self)
    tokens = _generate(graphdef, state, jnp.asarray(source, jnp.int32), max_len=max_len,
                       beam_size=beam_size, length_penalty=length_penalty)
    if not return_weights:
      return tokens
    target_in = jnp.concatenate([jnp.full_like(tokens[:, :1], BOS), tokens[:, :-1]], axis=1)
    return tokens, _weights(graphdef, state, jnp.asarray(source, jnp.int32), target_in)


@functools.partial(jax.jit, static_argnames=('graphdef', 'max_len', 'beam_size', 'length_penalty'))
def _generate(graphdef, state, source, *, max_len, beam_size, length_penalty):
  model = nnx.merge(graphdef, state)
  model.eval()
  dec_state = model.start_decoding(source, max_len)
  bos = jnp.full((source.shape[0],), BOS, jnp.int32)  # [B]
  if beam_size == 1:
    return decoding.greedy_decode(model.step, dec_state, bos, max_len=max_len, eos_id=EOS)
  tokens, _ = decoding.beam_search(model.step, dec_state, bos, max_len=max_len, eos_id=EOS,
                                   beam_size=beam_size, length_penalty=length_penalty)
  return tokens


@functools.partial(jax.jit, static_argnames=('graphdef',))
def _weights(graphdef, state, source, target_in):
  model = nnx.merge(graphdef, state)
  model.eval()
  model.set_attributes(capture_weights=True, raise_if_not_found=False)
  return captured_weights(model, source, target_in)[1]


class TransformerLM(nnx.Module):
  """Decoder-only language model: model(inputs [B, L]) -> logits [B, L, V] (causal)."""

  def __init__(self, vocab_size: int, *, d_model: int = 128, num_heads: int = 4,
               num_layers: int = 2, ffn_dim: int = 256, dropout_rate: float = 0.1,
               attention_dropout_rate: float = 0.0, norm: str = 'post',
               positional: str = 'sinusoidal', score: str = 'scaled_dot', kernel: str = 'dense',
               combine: str = 'residual', tie_output: bool = False, max_len: int = 256,
               capture_weights: bool = False, score_dim: int | None = None,
               rngs: nnx.Rngs):
    opts = _opts(d_model, num_heads, ffn_dim, dropout_rate, attention_dropout_rate, norm,
                 positional, score, kernel, combine, max_len, capture_weights, score_dim)
    self.embed = Embedder(vocab_size, d_model, rngs=rngs)
    self.decoder = Stack(opts, num_layers, cross=False, rngs=rngs)
    self.out = None if tie_output else nnx.Linear(d_model, vocab_size, rngs=rngs)
    self.max_len = max_len

  def _logits(self, h: jax.Array) -> jax.Array:
    return self.embed.attend(h) if self.out is None else self.out(h)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    # inputs [B, L] int -> logits [B, L, V]
    return self._logits(self.decoder(self.embed(inputs)))  # causal self-attention

  def init_cache(self, batch_size: int, max_len: int, dtype=jnp.float32) -> list:
    if max_len > self.max_len:
      raise ValueError(f'max_len {max_len} exceeds the model max_len {self.max_len}')
    return self.decoder.init_cache(batch_size, max_len, dtype)

  def step(self, cache: list, tokens: jax.Array, t: jax.Array) -> tuple[jax.Array, list]:
    """tokens [N] at position t -> (logits [N, V] for position t + 1, new cache)."""
    h, cache = self.decoder.decode_step(self.embed(tokens[:, None]), t, cache)
    return self._logits(h)[:, 0], cache  # [N, V]

  def generate(self, prompt: jax.Array, max_len: int) -> jax.Array:
    """Greedy continuation of prompt [B, P] (no PAD inside) -> tokens [B, max_len] after it.

    Evaluation mode, jit-compiled once per shape; PAD after EOS.
    """
    if prompt.shape[1] - 1 + max_len > self.max_len:
      raise ValueError(f'prompt length {prompt.shape[1]} + max_len {max_len} exceeds the model '
                       f'max_len {self.max_len}')
    graphdef, state = nnx.split(self)
    return _lm_generate(graphdef, state, jnp.asarray(prompt, jnp.int32), max_len=max_len)


@functools.partial(jax.jit, static_argnames=('graphdef', 'max_len'))
def _lm_generate(graphdef, state, prompt, *, max_len):
  model = nnx.merge(graphdef, state)
  model.eval()
  batch, plen = prompt.shape
  cache = model.init_cache(batch, plen - 1 + max_len)

  def feed(t, cache):  # the prompt but its last token goes into the cache
    return model.step(cache, prompt[:, t], t)[1]

  cache = jax.lax.fori_loop(0, plen - 1, feed, cache)
  step = lambda cache, tokens, t: model.step(cache, tokens, t + plen - 1)
  return decoding.greedy_decode(step, cache, prompt[:, -1], max_len=max_len, eos_id=EOS)


@POOLINGS.register('cls')
class ClsPooling(nnx.Module):
  """A learned [CLS] vector prepended at position 0; its final state is the summary (BERT)."""

  def __init__(self, d_model: int, *, rngs: nnx.Rngs):
    self.cls = nnx.Param(jax.random.normal(rngs.params(), (d_model,)))

  def prepare(self, h: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    # h [B, L, D], valid [B, L] -> [B, L + 1, D], [B, L + 1]
    cls = jnp.broadcast_to(self.cls[...].astype(h.dtype), (h.shape[0], 1, h.shape[2]))
    return (jnp.concatenate([cls, h], axis=1),
            jnp.concatenate([jnp.ones_like(valid[:, :1]), valid], axis=1))

  def pool(self, h: jax.Array, valid: jax.Array) -> jax.Array:
    return h[:, 0]  # [B, D]


@POOLINGS.register('mean')
class MeanPooling(nnx.Module):
  """Mean of the final states over the non-PAD positions."""

  def __init__(self, d_model: int, *, rngs: nnx.Rngs):
    del d_model, rngs

  def prepare(self, h: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    return h, valid

  def pool(self, h: jax.Array, valid: jax.Array) -> jax.Array:
    # h [B, L, D], valid [B, L] -> [B, D]
    w = valid.astype(h.dtype)[..., None]  # [B, L, 1]
    return jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


class TransformerClassifier(nnx.Module):
  """Encoder + pooling ('cls' or 'mean') + linear: model(tokens [B, L]) -> [B, num_classes]."""

  def __init__(self, vocab_size: int, num_classes: int, *, pooling: str = 'cls',
               d_model: int = 128, num_heads: int = 4, num_layers: int = 2, ffn_dim: int = 256,
               dropout_rate: float = 0.1, attention_dropout_rate: float = 0.0,
               norm: str = 'post', positional: str = 'sinusoidal', score: str = 'scaled_dot',
               kernel: str = 'dense', combine: str = 'residual', max_len: int = 512,
               capture_weights: bool = False, score_dim: int | None = None,
               rngs: nnx.Rngs):
    opts = _opts(d_model, num_heads, ffn_dim, dropout_rate, attention_dropout_rate, norm,
                 positional, score, kernel, combine, max_len, capture_weights, score_dim)
    self.embed = Embedder(vocab_size, d_model, rngs=rngs)
    self.pooling = POOLINGS.get(pooling)(d_model, rngs=rngs)
    self.encoder = Stack(opts, num_layers, cross=None, rngs=rngs)
    self.head = nnx.Linear(d_model, num_classes, rngs=rngs)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    # inputs [B, L] int tokens (PAD = 0 masked) -> logits [B, num_classes]
    if inputs.ndim != 2:
      raise ValueError(f'transformer_classifier expects tokens [B, L], got shape {inputs.shape}')
    h, valid = self.pooling.prepare(self.embed(inputs), inputs != PAD)  # [B, L', D], [B, L']
    h = self.encoder(h, padding_mask(valid))  # [B, L', D]
    return self.head(self.pooling.pool(h, valid))  # [B, num_classes]


register_model('transformer')(EncoderDecoder)
register_model('transformer_lm')(TransformerLM)
register_model('transformer_classifier')(TransformerClassifier)
