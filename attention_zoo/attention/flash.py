"""Tiled attention with its own backward pass, for the chunked kernel (FlashAttention: Dao et al.
2022, alg. 1-2; Dao 2023, sec. 3.1), for any score s(q, k).

Forward, per query tile, a scan over key tiles (online softmax, Milakov & Gimelshein 2018):
  s = score(q, k),  m' = max(m, max_k s),  l' = l·e^{m-m'} + Σ_k e^{s-m'},
  o' = o·e^{m-m'} + e^{s-m'} v;   out = o / l,  lse = m + log l
Saved: the inputs, out and lse, O(length) memory. Backward, per key tile, a scan over query
tiles, from the saved lse instead of replaying the online softmax (what autodiff of a
jax.checkpoint-ed forward scan does):
  p = e^{s - lse},  dv += pᵀ do,  dp = do vᵀ,  ds = p ∘ (dp - δ) with δ = rowsum(do ∘ out),
  (dq, dk, dθ) += the score's vector-Jacobian product of ds (jax.vjp of one tile)
For a dot-product score that is 7 tile matmuls per tile pair (2 forward, 5 backward) instead of
10; for the additive score, one tanh of [B, N, Qc, Kc, A] in the backward instead of two.
Masked keys get p = 0; a query with no key left gets out = 0 and zero gradients.

Precision: whatever the dtype of q, k, v (bfloat16 under mixed precision), the statistics m, l,
lse and δ, the running output o and the gradient sums dq, dk, dv, dθ are float32. The tile
products (P V forward; P dO and dO Vᵀ backward) take their operands in v's dtype and accumulate
in float32 (`preferred_element_type`), as FlashAttention-2 casts P to the input dtype for P V.
In float32 every cast is the identity.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from attention_zoo.attention.masks import block_mask

# score_fn(params, q [B, Qc, N, Dq], k [B, Kc, N, Dk]) -> logits [B, N, Qc, Kc]
ScoreFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def _tiles(x: jax.Array, size: int) -> jax.Array:
  """[B, L, ...] -> [L / size, B, size, ...] (L a multiple of size)."""
  b, length = x.shape[:2]
  return jnp.swapaxes(x.reshape(b, length // size, size, *x.shape[2:]), 0, 1)


def _dot_f32(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
  """einsum(spec, a, b) with both operands cast to `dtype` (the inputs' dtype) and float32
  accumulation and result."""
  return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _rows(x: jax.Array) -> jax.Array:
  """Per-query values of the tiles [T, B, N, size] -> [B, N, T · size]."""
  t, b, n, size = x.shape
  return x.transpose(1, 2, 0, 3).reshape(b, n, t * size)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 6, 7, 8, 9))
def flash_attention(score_fn: ScoreFn, params, q, k, v, mask, causal: bool, q_block: int,
                    k_block: int, k_len: int) -> jax.Array:
  """softmax(score_fn(params, q, k) | mask, causal) v over tiles.

  q [B, Qp, N, Dq], k [B, Kp, N, Dk], v [B, Kp, N, Dv], padded to multiples of q_block / k_block
  (`mask`, bool [B|1, N|1, Qp|1, Kp|1] or None, likewise); keys >= k_len are padding.
  -> out [B, Qp, N, Dv] float32.
  """
  return online_softmax(score_fn, params, q, k, v, mask, causal, q_block, k_block, k_len)[0]


def online_softmax(score_fn: ScoreFn, params, q, k, v, mask, causal: bool, qb: int, kb: int,
                   k_len: int, drop: Callable[[jax.Array, jax.Array], jax.Array] | None = None):
  """The forward scan (shapes as in `flash_attention`) -> (out [B, Qp, N, Dv] f32, lse [B, N, Qp]).

  drop(p, tile index): attention dropout on e^{s-m'} in o but not in l (which equals dropout on
  the normalized weights); the tile index qi · (tiles of keys) + ki seeds it. With `drop`, each
  step and each query tile is a jax.checkpoint, so that autodiff of this scan (instead of
  `flash_attention`'s backward pass) keeps O(length) memory; lse is then not meaningful.
  """
  b, q_pad, n, _ = q.shape
  dv, nk = v.shape[-1], k.shape[1] // kb

  def query_tile(qi, q_tile):  # q_tile [B, Qc, N, Dq]
    q_pos = qi * qb + jnp.arange(qb)

    def step(carry, tile):
      m, l, o = carry  # [B, N, Qc], [B, N, Qc], [B, N, Qc, Dv]
      ki, k_tile, v_tile = tile
      valid = block_mask(mask, causal, q_pos, ki * kb + jnp.arange(kb), k_len)
      s = jnp.where(valid, score_fn(params, q_tile, k_tile).astype(jnp.float32), -jnp.inf)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
      p = jnp.exp(s - m_safe[..., None])  # [B, N, Qc, Kc]; masked -> 0
      correction = jnp.exp(jnp.where(jnp.isfinite(m), m, m_safe) - m_safe)
      l = l * correction + jnp.sum(p, axis=-1)
      if drop is not None:
        p = drop(p, qi * nk + ki)
      o = o * correction[..., None] + _dot_f32('bnqk,bknd->bnqd', p, v_tile, v.dtype)
      return (m_new, l, o), None

    init = (jnp.full((b, n, qb), -jnp.inf, jnp.float32), jnp.zeros((b, n, qb), jnp.float32),
            jnp.zeros((b, n, qb, dv), jnp.float32))
    (m, l, o), _ = jax.lax.scan(step if drop is None else jax.checkpoint(step), init,
                                (jnp.arange(nk), _tiles(k, kb), _tiles(v, kb)))
    some = l > 0
    out = o / jnp.where(some, l, 1.0)[..., None]  # [B, N, Qc, Dv]; no key -> 0
    lse = jnp.where(some, m + jnp.log(jnp.where(some, l, 1.0)), -jnp.inf)  # [B, N, Qc]
    return jnp.swapaxes(out, 1, 2), lse  # [B, Qc, N, Dv]

  tile_fn = query_tile if drop is None else jax.checkpoint(query_tile)
  outs, lses = jax.lax.map(lambda x: tile_fn(*x), (jnp.arange(q_pad // qb), _tiles(q, qb)))
  out = jnp.swapaxes(outs, 0, 1).reshape(b, q_pad, n, dv)  # [B, Qp, N, Dv]
  return out, _rows(lses)  # lse [B, N, Qp]


def _fwd(score_fn, params, q, k, v, mask, causal, qb, kb, k_len):
  out, lse = online_softmax(score_fn, params, q, k, v, mask, causal, qb, kb, k_len)
  return out, (params, q, k, v, mask, out, lse)


def _bwd(score_fn, causal, qb, kb, k_len, res, d_out):
  params, q, k, v, mask, out, lse = res
  b, q_pad, n, _ = q.shape
  per_query = lambda x: x.reshape(b, n, q_pad // qb, qb).transpose(2, 0, 1, 3)  # [nq, B, N, Qc]
  delta = per_query(jnp.einsum('bqnd,bqnd->bnq', d_out, out))  # δ = rowsum(do ∘ out)
  lse = per_query(jnp.where(jnp.isfinite(lse), lse, 0.0))
  f32 = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), tree)

  def key_tile(carry, tile):
    d_q, d_params = carry  # d_q [B, Qp, N, Dq] f32, accumulated over key tiles
    ki, k_tile, v_tile = tile
    k_pos = ki * kb + jnp.arange(kb)

    def step(carry, q_side):
      d_k, d_v, d_q, d_params = carry
      qi, q_tile, do_tile, lse_t, delta_t = q_side
      valid = block_mask(mask, causal, qi * qb + jnp.arange(qb), k_pos, k_len)
      s, pull = jax.vjp(lambda p, qx, kx: score_fn(p, qx, kx).astype(jnp.float32), params,
                        q_tile, k_tile)
      p = jnp.where(valid, jnp.exp(s - lse_t[..., None]), 0.0)  # [B, N, Qc, Kc]
      d_v = d_v + _dot_f32('bnqk,bqnd->bknd', p, do_tile, v.dtype)
      d_p = _dot_f32('bqnd,bknd->bnqk', do_tile, v_tile, v.dtype)
      g_params, g_q, g_k = pull(p * (d_p - delta_t[..., None]))
      d_q_tile = jax.lax.dynamic_slice_in_dim(d_q, qi * qb, qb, axis=1) + g_q
      d_q = jax.lax.dynamic_update_slice_in_dim(d_q, d_q_tile, qi * qb, axis=1)
      d_params = jax.tree.map(lambda a, g: a + g, d_params, g_params)
      return (d_k + g_k, d_v, d_q, d_params), None

    init = (f32(k_tile), f32(v_tile), d_q, d_params)
    (d_k, d_v, d_q, d_params), _ = jax.lax.scan(
        step, init, (jnp.arange(q_pad // qb), _tiles(q, qb), _tiles(d_out, qb), lse, delta))
    return (d_q, d_params), (d_k, d_v)

  (d_q, d_params), (d_k, d_v) = jax.lax.scan(
      key_tile, (f32(q), f32(params)), (jnp.arange(k.shape[1] // kb), _tiles(k, kb),
                                        _tiles(v, kb)))
  untile = lambda x, like: jnp.swapaxes(x, 0, 1).reshape(like.shape).astype(like.dtype)
  d_params = jax.tree.map(lambda g, x: g.astype(x.dtype), d_params, params)
  return d_params, d_q.astype(q.dtype), untile(d_k, k), untile(d_v, v), None  # mask: none


flash_attention.defvjp(_fwd, _bwd)
