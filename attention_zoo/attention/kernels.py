"""Attention kernels: how logits become outputs. Engineering only; all give the same numbers.

  out[b, q, n] = Σ_k softmax_k(s(q, k) | mask)[b, n, q, k] · v[b, k, n]

One signature for every kernel:
  kernel(score, q, k, v, mask=None, *, causal=False, return_weights=False,
         dropout_rate=0.0, dropout_rng=None, implementation='auto')
    -> (out [B, Q, N, Dv], weights [B, N, Q, K] | None)

  q [B, Q, N, Dq], k [B, K, G, Dk], v [B, K, G, Dv]; N must be a multiple of G (grouped
  key/value heads: query head n reads key/value head n // (N / G)).
  mask: bool, True = may attend, rank 4, broadcastable to [B, N, Q, K]. `causal=True` adds the
  mask key <= query in-kernel (so no [Q, K] array needs to exist). A query with no key left gets
  zero output and zero weights, never NaN, forward and backward.

  dense:   materializes logits and weights [B, N, Q, K] (Bahdanau / Luong / Vaswani as written).
  chunked: online softmax over key blocks, queries in blocks (Milakov & Gimelshein 2018;
           Rabe & Staats 2021, "Self-attention does not need O(n²) memory"); each block is
           rematerialized in the backward pass (jax.checkpoint), so memory is O(length). Works for
           every score, additive included (the [B, Qc, Kc, N, A] block is the largest tensor).
           Without attention dropout it runs attention.flash: the same tiles with their own
           backward pass from the saved log-sum-exp (FlashAttention), which recomputes each
           tile's scores once (7 tile matmuls per tile pair for dot scores instead of 10).
  fused:   jax.nn.dot_product_attention's XLA path; dot and scaled_dot scores only.

implementation: which code runs the kernel on the platform the program is lowered for
(attention.implementations): 'xla' (the kernel's own jax code, above), 'native' (the CPU custom
call, attention.native; chunked and fused), 'cudnn', 'pallas' (Triton on cuda, Mosaic on tpu),
or 'auto' (the default: per lowering platform, the fastest that takes the call; every score that
is not a dot product runs as xla). A combination that cannot run is refused with a ValueError
naming the valid ones.

A new kernel is one function of this signature registered here (@KERNELS.register('name')): the
tests run every registered kernel against the one numpy reference of attention
(tests/numpy_reference.py), for every registered score it takes.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.attention import flash, implementations
from attention_zoo.attention import masks as masks_lib
from attention_zoo.registry import Registry

KERNELS: Registry = Registry('kernel')


def _check_shapes(q, k, v, mask):
  """Validates ranks and dims; returns (B, Q, K, N, G)."""
  for name, x in (('q', q), ('k', k), ('v', v)):
    if x.ndim != 4:
      raise ValueError(f'{name} must be [B, L, N, D], got shape {x.shape}')
  b, q_len, n, _ = q.shape
  _, k_len, g, _ = k.shape
  if k.shape[:3] != v.shape[:3]:
    raise ValueError(f'k {k.shape} and v {v.shape} must agree on [B, K, G]')
  if k.shape[0] != b:
    raise ValueError(f'q {q.shape} and k {k.shape} must have the same batch size')
  if n % g:
    raise ValueError(f'query heads ({n}) must be a multiple of key/value heads ({g}); '
                     f'q {q.shape}, k {k.shape}')
  masks_lib.check_mask(mask, (b, n, q_len, k_len))
  return b, q_len, k_len, n, g


def _repeat_kv(x: jax.Array, heads: int) -> jax.Array:
  # [B, K, G, D] -> [B, K, N, D]
  return x if x.shape[2] == heads else jnp.repeat(x, heads // x.shape[2], axis=2)


def _mask_value(dtype):
  return jnp.asarray(-jnp.inf, dtype)


def _dropout(p: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  if rate == 0.0 or rng is None:
    return p
  keep = jax.random.bernoulli(rng, 1.0 - rate, p.shape)
  return jnp.where(keep, p / (1.0 - rate), 0.0)


def _masked_softmax(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Softmax over the last axis where mask; rows with no True get all-zero weights, never NaN."""
  if mask is not None:
    logits = jnp.where(mask, logits, _mask_value(logits.dtype))
  m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  e = jnp.exp(logits - m)  # masked entries: exp(-inf) = 0
  denom = jnp.sum(e, axis=-1, keepdims=True)
  return e / jnp.where(denom == 0, 1.0, denom)


@KERNELS.register('dense')
def dense(score, q, k, v, mask=None, *, causal=False, return_weights=False, dropout_rate=0.0,
          dropout_rng=None, implementation: str = 'auto'):
  """Materializes logits and weights [B, N, Q, K]; returns the weights when asked.

  Its xla implementation is the one written here; 'auto' keeps it on CPU and, where the weights
  are not asked for and there is no attention dropout, takes cudnn or pallas on an accelerator
  (attention.implementations: the same numbers without the [B, N, Q, K] arrays). With
  return_weights it runs as xla on every platform (the weights are its point).
  """
  b, q_len, k_len, n, _ = _check_shapes(q, k, v, mask)
  dropout = dropout_rate > 0.0 and dropout_rng is not None
  xla = lambda q, k, v, mask: _dense(score, q, k, v, mask, causal, False, dropout_rate,
                                     dropout_rng)[0]
  call = implementations.Call('dense', score, q, _repeat_kv(k, n), _repeat_kv(v, n), mask,
                              causal, dropout, xla)
  if return_weights:
    implementations.run_xla(call, implementation)
    return _dense(score, q, k, v, mask, causal, True, dropout_rate, dropout_rng)
  return implementations.attend(call, implementation), None


def _dense(score, q, k, v, mask, causal, return_weights, dropout_rate, dropout_rng):
  b, q_len, k_len, n, _ = _check_shapes(q, k, v, mask)
  k, v = _repeat_kv(k, n), _repeat_kv(v, n)
  logits = score(q, k).astype(jnp.float32)  # [B, N, Q, K]
  if causal:
    mask = masks_lib.combine_masks(mask, masks_lib.causal_mask(q_len, k_len))
  weights = _masked_softmax(logits, mask)  # [B, N, Q, K]
  dropped = _dropout(weights, dropout_rate, dropout_rng)
  out = jnp.matmul(dropped.astype(v.dtype), jnp.swapaxes(v, 1, 2))  # [B, N, Q, Dv]
  return jnp.swapaxes(out, 1, 2), (weights if return_weights else None)


@KERNELS.register('chunked')
def chunked(score, q, k, v, mask=None, *, causal=False, return_weights=False, dropout_rate=0.0,
            dropout_rng=None, q_block: int = 512, k_block: int = 1024,
            implementation: str = 'auto'):
  """Online-softmax attention over [q_block x k_block] tiles; O(length) memory fwd and bwd.

  Per query block, a scan over key blocks keeps a running max m, normalizer l and output acc:
    m' = max(m, max_k s),  l' = l·e^{m-m'} + Σ_k e^{s-m'},  acc' = acc·e^{m-m'} + e^{s-m'} v.
  Without attention dropout this is attention.flash (its own backward pass). With it, the same
  scan (flash.online_softmax) differentiated through jax.checkpoint: dropout drops entries of
  e^{s-m'} in acc but not in l, which equals dropout on the normalized weights; each tile's
  dropout mask comes from fold_in(rng, tile index).
  Default tiles of 512 queries x 1024 keys: the fastest fwd+bwd of those measured at L = 1024 and
  4096 on a 2-core CPU (B=4, N=8, D=64; smaller tiles lose to per-iteration overhead).
  implementation: see the module docstring; q_block and k_block tile the xla path (the others
  have their own tiles).
  """
  b, q_len, k_len, n, _ = _check_shapes(q, k, v, mask)
  k, v = _repeat_kv(k, n), _repeat_kv(v, n)
  dropout = dropout_rate > 0.0 and dropout_rng is not None
  xla = functools.partial(_chunked_xla, score, causal=causal, q_block=q_block, k_block=k_block,
                          dropout_rate=dropout_rate if dropout else 0.0, dropout_rng=dropout_rng)
  call = implementations.Call('chunked', score, q, k, v, mask, causal, dropout, xla)
  out = implementations.attend(call, implementation)
  return _with_weights(out, return_weights, score, q, k, v, mask, causal, q_len, k_len)


def _chunked_xla(score, q, k, v, mask, *, causal, q_block, k_block, dropout_rate, dropout_rng):
  """The chunked kernel's xla implementation (attention.flash): q [B, Q, N, Dq], k, v with N
  heads -> [B, Q, N, Dv]."""
  q_len, k_len = q.shape[1], k.shape[1]
  dropout = dropout_rate > 0.0
  qb, kb = min(q_block, q_len), min(k_block, k_len)
  nq, nk = -(-q_len // qb), -(-k_len // kb)
  pad = lambda x, n, axis: jnp.pad(x, [(0, n - x.shape[axis]) if a == axis else (0, 0)
                                       for a in range(x.ndim)])
  q = pad(q, nq * qb, 1)
  k, v = pad(k, nk * kb, 1), pad(v, nk * kb, 1)
  if mask is not None:
    mask = jnp.asarray(mask, bool)
    if mask.shape[2] > 1:
      mask = pad(mask, nq * qb, 2)
    if mask.shape[3] > 1:
      mask = pad(mask, nk * kb, 3)

  # Scores with parameters go through jax transforms as (graphdef, params) pairs.
  graphdef, params = nnx.split(score)
  score_fn = lambda p, qx, kx: nnx.merge(graphdef, p)(qx, kx)
  if not dropout:  # the tiles with their own backward pass (attention.flash)
    out = flash.flash_attention(score_fn, params, q, k, v, mask, causal, qb, kb, k_len)
  else:  # the same scan, rematerialized, under autodiff
    drop = lambda p, tile: _dropout(p, dropout_rate, jax.random.fold_in(dropout_rng, tile))
    out, _ = flash.online_softmax(score_fn, params, q, k, v, mask, causal, qb, kb, k_len, drop)
  return out[:, :q_len].astype(v.dtype)


def _with_weights(out, return_weights, score, q, k, v, mask, causal, q_len, k_len):
  """(out, the dense kernel's weights of the unpadded q, k, v, mask when asked, else None)."""
  weights = None
  if return_weights:  # for plots only: the [B, N, Q, K] matrix is what chunking avoids
    _, weights = _dense(score, q[:, :q_len], k[:, :k_len], v[:, :k_len],
                       None if mask is None else mask[:, :, :q_len if mask.shape[2] > 1 else 1,
                                                      :k_len if mask.shape[3] > 1 else 1],
                        causal, True, 0.0, None)
  return out, weights


@KERNELS.register('fused')
def fused(score, q, k, v, mask=None, *, causal=False, return_weights=False, dropout_rate=0.0,
          dropout_rng=None, implementation: str = 'auto'):
  """jax.nn.dot_product_attention (its XLA path as 'xla'; cudnn and pallas where they take the
  call, see the module docstring).

  Only for scores that are a scaled dot product (dot, scaled_dot); has no attention dropout.
  """
  scale = getattr(score, 'fused_scale', None)
  if scale is None:
    raise ValueError(f'kernel "fused" supports only the dot and scaled_dot scores, got '
                     f'{type(score).__name__}; use kernel="dense" or "chunked"')
  if dropout_rate > 0.0 and dropout_rng is not None:
    raise ValueError('kernel "fused" has no attention dropout: set dropout_rate=0 or use '
                     'kernel="dense" or "chunked"')
  b, q_len, k_len, n, _ = _check_shapes(q, k, v, mask)
  if v.shape[-1] != k.shape[-1]:
    raise ValueError(f'kernel "fused" needs value dim == key dim, got k {k.shape}, v {v.shape}')

  def xla(q, k, v, mask):  # [B, Q, N, D] -> [B, Q, N, Dv]
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=causal,
                                       implementation='xla')
    # A query with no key to attend gets zero output (XLA would average v over masked keys).
    any_key = _any_key(mask, causal, b, n, q_len, k_len)  # [B, Q, N, 1]
    return jnp.where(any_key, out, jnp.zeros((), out.dtype))

  k, v = _repeat_kv(k, n), _repeat_kv(v, n)
  out = implementations.attend(
      implementations.Call('fused', score, q, k, v, mask, causal, False, xla), implementation)
  weights = None
  if return_weights:
    _, weights = _dense(score, q, k, v, mask, causal, True, 0.0, None)
  return out, weights


def _any_key(mask, causal, b, n, q_len, k_len):
  """[B, Q, N, 1] bool: does query q of head n have at least one key it may attend?"""
  full = masks_lib.combine_masks(mask, masks_lib.causal_mask(q_len, k_len) if causal else None)
  if full is None:
    return jnp.ones((1, 1, 1, 1), bool)
  has = jnp.any(full, axis=-1)  # [B|1, N|1, Q|1]
  return jnp.swapaxes(has, 1, 2)[..., None]


def with_implementation(kernel: str, implementation: str = 'auto') -> Callable:
  """The kernel registered as `kernel`, run with `implementation` (the options dataclasses' one
  check of both names, before any layer is built): ValueError naming the valid ones for an
  unknown name, or for an implementation that does not implement the kernel."""
  fn = KERNELS.get(kernel)
  implementations.check_kernel(kernel, implementation)
  return fn if implementation == 'auto' else functools.partial(fn, implementation=implementation)


def get_kernel(kernel: str | Callable) -> Callable:
  """The kernel registered as `kernel` (ValueError naming the nearest and the known names
  otherwise); a kernel already looked up is returned as it is."""
  return KERNELS.resolve(kernel)
