"""Transformer models: encoder-decoder ('transformer'), decoder-only LM, encoder classifier.

Vaswani et al. (2017), "Attention Is All You Need". The blocks (norm placement, layers, stacks)
live in transformer_blocks.py; attention itself is attention_zoo.attention.MultiHeadAttention, so
score ('scaled_dot', 'additive', ...), kernel and combine ('residual', 'gate') are options.
Every constructor takes the options of its layers once, as `**block` -> BlockOptions, which
checks them and holds their defaults (dtype and param_dtype among them: models/precision.py).

Shapes: B batch, S source length, T target length, L length, P prompt length, F features
(`d_model`, the paper's name for the stream's width), V vocabulary, N heads.
Token conventions (attention_zoo.specials): PAD = 0 (masked as keys), BOS = 1, EOS = 2.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.attention.capture import captured
from attention_zoo.attention.masks import padding_mask
from attention_zoo.models import decoding
from attention_zoo.models.registry import options_from, register_model
from attention_zoo.models.transformer_blocks import (BlockOptions, DecoderStack, Embedder,
                                                     EncoderStack)
from attention_zoo.registry import choose
from attention_zoo.specials import BOS, EOS, PAD


class EncoderDecoder(nnx.Module):
  """The Transformer of Vaswani et al. (2017): model(source [B, S], target_in [B, T]) -> [B, T, V].

  Args:
    src_vocab_size, tgt_vocab_size: the vocabularies of source and target.
    share_embeddings: tie source, target and output embeddings (sec. 3.4; needs equal
      vocabularies). tie_output: tie only the target embedding and the output projection.
    max_len: the longest source / target the positions cover (and `generate`'s limit).
    **block: the layers' options, BlockOptions' fields (d_model F, num_heads N, num_layers,
      ffn_dim, dropout_rate, norm, positional, score, kernel, combine, ...), checked there.
  """

  def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *,
               share_embeddings: bool = False, tie_output: bool = False, max_len: int = 256,
               rngs: nnx.Rngs, **block: Any):
    opts = options_from(BlockOptions, dict(block, max_len=max_len), 'Transformer')
    if share_embeddings and src_vocab_size != tgt_vocab_size:
      raise ValueError(f'share_embeddings=True needs src_vocab_size == tgt_vocab_size, got '
                       f'{src_vocab_size} and {tgt_vocab_size}; use tie_output=True to share '
                       'only the target and output embeddings')
    dtypes = opts.parts.dtypes
    self.tgt_embed = Embedder(tgt_vocab_size, opts.d_model, **dtypes, rngs=rngs)
    self.src_embed = (self.tgt_embed if share_embeddings
                      else Embedder(src_vocab_size, opts.d_model, **dtypes, rngs=rngs))
    self.encoder = EncoderStack(opts, rngs=rngs)
    self.decoder = DecoderStack(opts, cross=True, rngs=rngs)
    tied = share_embeddings or tie_output
    self.out = None if tied else nnx.Linear(opts.d_model, tgt_vocab_size, **dtypes, rngs=rngs)
    self.max_len = max_len

  def encode(self, source: jax.Array) -> tuple[jax.Array, jax.Array]:
    # source [B, S] int -> memory [B, S, F], valid [B, S] bool (False at PAD)
    valid = source != PAD  # [B, S]
    return self.encoder(self.src_embed(source), padding_mask(valid)), valid

  def _logits(self, h: jax.Array) -> jax.Array:
    return self.tgt_embed.attend(h) if self.out is None else self.out(h)  # [B, T, V]

  def decode(self, target_in: jax.Array, memory: jax.Array, valid: jax.Array) -> jax.Array:
    # target_in [B, T], memory [B, S, F], valid [B, S] -> logits [B, T, V]
    h = self.decoder(self.tgt_embed(target_in), memory, padding_mask(valid))  # [B, T, F]
    return self._logits(h)  # [B, T, V]

  def __call__(self, source: jax.Array, target_in: jax.Array) -> jax.Array:
    # source [B, S], target_in [B, T] -> logits [B, T, V]
    memory, valid = self.encode(source)
    return self.decode(target_in, memory, valid)

  def start_decoding(self, source: jax.Array, max_len: int, *, cross_cache: bool = True) -> dict:
    """Decoder state for `step` (leaves with leading dim B): 'cache' (per-layer self-attention
    caches), 'valid' [B, S] (False at PAD) and the encoded source as the steps read it: 'cross',
    every layer's source-target keys and values projected once here (DecoderStack.project_memory,
    the counterpart of seq2seq's project_keys), or with cross_cache=False 'memory' [B, S, F],
    projected again at every step (the reference the cached path is tested against).
    """
    if max_len > self.max_len:
      raise ValueError(f'max_len {max_len} exceeds the model max_len {self.max_len}')
    memory, valid = self.encode(source)
    state = {'cache': self.decoder.init_cache(source.shape[0], max_len),
             'valid': valid}
    if cross_cache:
      state['cross'] = self.decoder.project_memory(memory)  # per layer {'key', 'value'}
    else:
      state['memory'] = memory  # [B, S, F]
    return state

  def step(self, state: dict, tokens: jax.Array, t: jax.Array) -> tuple[jax.Array, dict]:
    """One decoder step: tokens [B] at position t -> (logits [B, V], new state)."""
    x = self.tgt_embed(tokens[:, None])  # [B, 1, F]
    h, cache = self.decoder.decode_step(x, t, state['cache'], state.get('memory'),
                                        padding_mask(state['valid']),
                                        projected=state.get('cross'))
    return self._logits(h)[:, 0], {**state, 'cache': cache}  # [B, V]

  def generate(self, source: jax.Array, max_len: int, beam_size: int = 1,
               length_penalty: float = 0.6, return_weights: bool = False,
               cross_cache: bool = True):
    """Greedy (beam_size=1) or beam search decoding, jit-compiled once per shape and option.

    Runs in evaluation mode (no dropout) whatever the model's mode. The source-target keys and
    values are projected once per source (cross_cache=False: at every step, the slower reference
    for tests and benchmarks; same tokens).
    Returns tokens [B, max_len] int32 (no BOS, PAD after EOS); with return_weights=True also the
    attention weights of the teacher-forced pass over the generated tokens, by module path:
    {'decoder/layers/0/cross_attn/attention_weights': [B, N, T, S], ...} (attention.captured).
    """
    source = jnp.asarray(source, jnp.int32)
    tokens = _generate(self, source, max_len=max_len, beam_size=beam_size,
                       length_penalty=length_penalty, cross_cache=cross_cache)
    if not return_weights:
      return tokens
    target_in = jnp.concatenate([jnp.full_like(tokens[:, :1], BOS), tokens[:, :-1]], axis=1)
    return tokens, _weights(self, source, target_in)


def decoder_step_fn(model: EncoderDecoder, source: jax.Array, *, max_len: int,
                    beam_size: int = 1, cross_cache: bool = True):
  """The decoding problem of `source` [B, S] for decoding.py: (step_fn, initial state, bos [B]).

  step_fn(state, tokens, t) -> (logits, state) runs one decoder step. The source as the steps
  read it (every layer's projected keys and values, and the PAD mask) is computed once here and
  closed over by step_fn, tiled once to B * beam_size rows (row b * beam + j, the order of
  decoding.beam_search): every beam of an example reads the same source, so it stays out of the
  state that beam search reorders each step, which is then the self-attention caches alone.
  With cross_cache=False, the previous scheme: the state is model.start_decoding's, with the
  encoder output re-projected at every step (and reordered with the beams).
  """
  state = model.start_decoding(source, max_len, cross_cache=cross_cache)
  bos = jnp.full((source.shape[0],), BOS, jnp.int32)  # [B]
  if not cross_cache:
    return model.step, state, bos
  source_read = {'cross': state['cross'], 'valid': state['valid']}  # read by every step
  if beam_size > 1:
    source_read = decoding.tile_beams(source_read, beam_size)  # [B * beam, ...]

  def step_fn(cache, tokens, t):
    logits, new = model.step({**source_read, 'cache': cache}, tokens, t)
    return logits, new['cache']

  return step_fn, state['cache'], bos


@functools.partial(decoding.eval_mode_jit,
                   static_argnames=('max_len', 'beam_size', 'length_penalty', 'cross_cache'))
def _generate(model: EncoderDecoder, source, *, max_len, beam_size, length_penalty, cross_cache):
  step_fn, state, bos = decoder_step_fn(model, source, max_len=max_len, beam_size=beam_size,
                                        cross_cache=cross_cache)
  if beam_size == 1:
    return decoding.greedy_decode(step_fn, state, bos, max_len=max_len, eos_id=EOS)
  tokens, _ = decoding.beam_search(step_fn, state, bos, max_len=max_len, eos_id=EOS,
                                   beam_size=beam_size, length_penalty=length_penalty)
  return tokens


@decoding.eval_mode_jit
def _weights(model: EncoderDecoder, source, target_in):
  model.set_attributes(capture_weights=True, raise_if_not_found=False)
  return captured(model, source, target_in)[1]


class TransformerLM(nnx.Module):
  """Decoder-only language model: model(inputs [B, L]) -> logits [B, L, V] (causal).

  Args:
    vocab_size: V. tie_output: tie the embedding and the output.
    max_len: the longest context the positions cover (prompt and generated tokens together).
    **block: the layers' options, BlockOptions' fields (d_model F, num_heads N, num_layers,
      ffn_dim, dropout_rate, norm, positional, score, kernel, combine, ...), checked there.
  """

  def __init__(self, vocab_size: int, *, tie_output: bool = False, max_len: int = 256,
               rngs: nnx.Rngs, **block: Any):
    opts = options_from(BlockOptions, dict(block, max_len=max_len), 'Transformer')
    dtypes = opts.parts.dtypes
    self.embed = Embedder(vocab_size, opts.d_model, **dtypes, rngs=rngs)
    self.decoder = DecoderStack(opts, cross=False, rngs=rngs)
    self.out = None if tie_output else nnx.Linear(opts.d_model, vocab_size, **dtypes, rngs=rngs)
    self.max_len = max_len

  def _logits(self, h: jax.Array) -> jax.Array:
    return self.embed.attend(h) if self.out is None else self.out(h)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    # inputs [B, L] int -> logits [B, L, V]
    return self._logits(self.decoder(self.embed(inputs)))  # causal self-attention

  def init_cache(self, batch_size: int, max_len: int, dtype=None) -> list:
    """The decoder's self-attention caches, of `dtype` (None: the model's computation dtype)."""
    if max_len > self.max_len:
      raise ValueError(f'max_len {max_len} exceeds the model max_len {self.max_len}')
    return self.decoder.init_cache(batch_size, max_len, dtype)

  def step(self, cache: list, tokens: jax.Array, t: jax.Array) -> tuple[jax.Array, list]:
    """tokens [B] at position t -> (logits [B, V] for position t + 1, new cache)."""
    h, cache = self.decoder.decode_step(self.embed(tokens[:, None]), t, cache)
    return self._logits(h)[:, 0], cache  # [B, V]

  def generate(self, prompt: jax.Array, max_len: int) -> jax.Array:
    """Greedy continuation of prompt [B, P] (no PAD inside) -> tokens [B, max_len] after it.

    Evaluation mode, jit-compiled once per shape; PAD after EOS.
    """
    if prompt.shape[1] - 1 + max_len > self.max_len:
      raise ValueError(f'prompt length {prompt.shape[1]} + max_len {max_len} exceeds the model '
                       f'max_len {self.max_len}')
    return _lm_generate(self, jnp.asarray(prompt, jnp.int32), max_len=max_len)


@functools.partial(decoding.eval_mode_jit, static_argnames=('max_len',))
def _lm_generate(model: TransformerLM, prompt, *, max_len):
  batch, plen = prompt.shape
  cache = model.init_cache(batch, plen - 1 + max_len)

  def feed(t, cache):  # the prompt but its last token goes into the cache
    return model.step(cache, prompt[:, t], t)[1]

  cache = jax.lax.fori_loop(0, plen - 1, feed, cache)
  step = lambda cache, tokens, t: model.step(cache, tokens, t + plen - 1)
  return decoding.greedy_decode(step, cache, prompt[:, -1], max_len=max_len, eos_id=EOS)


class ClsPooling(nnx.Module):
  """A learned [CLS] vector prepended at position 0; its final state is the summary (BERT)."""

  def __init__(self, d_model: int, *, dtype: Any = None, param_dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    del dtype  # the vector is cast to the stream's dtype where it joins it
    self.cls = nnx.Param(jax.random.normal(rngs.params(), (d_model,), param_dtype))

  def prepare(self, h: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    # h [B, L, F], valid [B, L] -> [B, L + 1, F], [B, L + 1]
    cls = jnp.broadcast_to(self.cls[...].astype(h.dtype), (h.shape[0], 1, h.shape[2]))
    return (jnp.concatenate([cls, h], axis=1),
            jnp.concatenate([jnp.ones_like(valid[:, :1]), valid], axis=1))

  def pool(self, h: jax.Array, valid: jax.Array) -> jax.Array:
    return h[:, 0]  # [B, F]


class MeanPooling(nnx.Module):
  """Mean of the final states over the non-PAD positions (summed in float32: jnp.sum upcasts)."""

  def __init__(self, d_model: int, *, dtype: Any = None, param_dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    del d_model, dtype, param_dtype, rngs

  def prepare(self, h: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    return h, valid

  def pool(self, h: jax.Array, valid: jax.Array) -> jax.Array:
    # h [B, L, F], valid [B, L] -> [B, F]
    w = valid.astype(h.dtype)[..., None]  # [B, L, 1]
    return jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


POOLINGS = {'cls': ClsPooling, 'mean': MeanPooling}


class TransformerClassifier(nnx.Module):
  """Encoder + pooling + linear: model(tokens [B, L]) -> logits [B, classes].

  Args:
    vocab_size: V. num_classes: classes. pooling: a name in POOLINGS ('cls', 'mean').
    max_len: the longest input the positions cover ([CLS] included).
    **block: the layers' options, BlockOptions' fields (d_model F, num_heads N, num_layers,
      ffn_dim, dropout_rate, norm, positional, score, kernel, combine, ...), checked there.
  """

  def __init__(self, vocab_size: int, num_classes: int, *, pooling: str = 'cls',
               max_len: int = 512, rngs: nnx.Rngs, **block: Any):
    opts = options_from(BlockOptions, dict(block, max_len=max_len), 'Transformer')
    dtypes = opts.parts.dtypes
    self.embed = Embedder(vocab_size, opts.d_model, **dtypes, rngs=rngs)
    self.pooling = choose(POOLINGS, pooling, 'pooling')(opts.d_model, **dtypes, rngs=rngs)
    self.encoder = EncoderStack(opts, rngs=rngs)
    self.head = nnx.Linear(opts.d_model, num_classes, **dtypes, rngs=rngs)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    # inputs [B, L] int tokens (PAD = 0 masked) -> logits [B, classes]
    if inputs.ndim != 2:
      raise ValueError(f'transformer_classifier expects tokens [B, L], got shape {inputs.shape}')
    h, valid = self.pooling.prepare(self.embed(inputs), inputs != PAD)  # [B, L', F], [B, L']
    h = self.encoder(h, padding_mask(valid))  # [B, L', F]
    return self.head(self.pooling.pool(h, valid))  # [B, classes]


register_model('transformer')(EncoderDecoder)
register_model('transformer_lm')(TransformerLM)
register_model('transformer_classifier')(TransformerClassifier)
