"""Tiled dot-product attention with its own backward pass, for the chunked kernel's dot and
scaled-dot scores (FlashAttention: Dao et al. 2022, alg. 1-2; Dao 2023, sec. 3.1).

Forward, per query tile, a scan over key tiles (online softmax, Milakov & Gimelshein 2018):
  s = c · q kᵀ,  m' = max(m, max_k s),  l' = l·e^{m-m'} + Σ_k e^{s-m'},
  o' = o·e^{m-m'} + e^{s-m'} v
  out = o / l,  lse = m + log l                      (saved: q, k, v, out, lse: O(length) memory)
Backward, per key tile, a scan over query tiles, from the saved lse instead of replaying the
online softmax (what jax.checkpoint of the forward scan does):
  p = e^{s - lse},  dv += pᵀ do,  dp = do vᵀ,  ds = p ∘ (dp - δ) with δ = rowsum(do ∘ out),
  dq += c · ds k,  dk += c · dsᵀ q
Seven tile matmuls per tile pair (2 forward, 5 backward) against ten for autodiff through the
checkpointed scan. Masked keys get p = 0; a query with no key left gets out = 0 and zero grads.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from attention_zoo.attention.masks import block_mask


def _tiles(x: jax.Array, size: int) -> jax.Array:
  """[B, N, L, D] -> [L / size, B, N, size, D] (L a multiple of size)."""
  b, n, length, d = x.shape
  return x.reshape(b, n, length // size, size, d).transpose(2, 0, 1, 3, 4)


def _untile(x: jax.Array) -> jax.Array:
  """[T, B, N, size, D] -> [B, N, T · size, D]."""
  t, b, n, size, d = x.shape
  return x.transpose(1, 2, 0, 3, 4).reshape(b, n, t * size, d)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def flash_attention(q, k, v, mask, scale: float, causal: bool, q_block: int, k_block: int,
                    k_len: int) -> jax.Array:
  """softmax(scale · q kᵀ | mask, causal) v over tiles; q [B, N, Qp, D], k, v [B, N, Kp, D] padded
  to multiples of q_block / k_block, `mask` padded likewise (or None); keys >= k_len are padding.
  -> out [B, N, Qp, Dv] (float32)."""
  return _forward(q, k, v, mask, scale, causal, q_block, k_block, k_len)[0]


def _forward(q, k, v, mask, scale, causal, qb, kb, k_len):
  k_tiles, v_tiles = _tiles(k, kb), _tiles(v, kb)
  b, n, _, dv = v.shape

  def query_tile(qi, q_tile):  # q_tile [B, N, Qc, D]
    q_pos = qi * qb + jnp.arange(qb)

    def step(carry, tile):
      m, l, o = carry  # [B, N, Qc], [B, N, Qc], [B, N, Qc, Dv]
      ki, k_tile, v_tile = tile
      valid = block_mask(mask, causal, q_pos, ki * kb + jnp.arange(kb), k_len)
      s = jnp.where(valid, scale * jnp.einsum('bnqd,bnkd->bnqk', q_tile, k_tile,
                                              preferred_element_type=jnp.float32), -jnp.inf)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
      p = jnp.exp(s - m_safe[..., None])  # masked -> 0
      correction = jnp.exp(jnp.where(jnp.isfinite(m), m, m_safe) - m_safe)
      l = l * correction + jnp.sum(p, axis=-1)
      o = o * correction[..., None] + jnp.einsum('bnqk,bnkd->bnqd', p, v_tile.astype(p.dtype))
      return (m_new, l, o), None

    init = (jnp.full((b, n, qb), -jnp.inf, jnp.float32), jnp.zeros((b, n, qb), jnp.float32),
            jnp.zeros((b, n, qb, dv), jnp.float32))
    (m, l, o), _ = jax.lax.scan(step, init, (jnp.arange(k.shape[2] // kb), k_tiles, v_tiles))
    out = o / jnp.where(l == 0, 1.0, l)[..., None]
    lse = jnp.where(l == 0, -jnp.inf, m + jnp.log(jnp.where(l == 0, 1.0, l)))  # [B, N, Qc]
    return out, lse

  outs, lses = jax.lax.map(lambda x: query_tile(*x), (jnp.arange(q.shape[2] // qb),
                                                     _tiles(q, qb)))
  out = _untile(outs)  # [B, N, Qp, Dv]
  lse = _untile(lses[..., None])[..., 0]  # [B, N, Qp]
  return out, lse


def _fwd(q, k, v, mask, scale, causal, qb, kb, k_len):
  out, lse = _forward(q, k, v, mask, scale, causal, qb, kb, k_len)
  return out, (q, k, v, mask, out, lse)


def _bwd(scale, causal, qb, kb, k_len, res, d_out):
  q, k, v, mask, out, lse = res
  delta = jnp.sum(d_out * out, axis=-1)  # [B, N, Qp]
  lse_safe = jnp.where(jnp.isfinite(lse), lse, 0.0)
  q_tiles, do_tiles = _tiles(q, qb), _tiles(d_out, qb)
  lse_tiles, delta_tiles = _tiles(lse_safe[..., None], qb), _tiles(delta[..., None], qb)
  nq = q.shape[2] // qb

  def key_tile(d_q, tile):  # d_q [B, N, Qp, D] accumulates over key tiles
    ki, k_tile, v_tile = tile  # [B, N, Kc, D]
    k_pos = ki * kb + jnp.arange(kb)

    def step(carry, qt):
      d_k, d_v, d_q = carry
      qi, q_tile, do_tile, lse_t, delta_t = qt
      valid = block_mask(mask, causal, qi * qb + jnp.arange(qb), k_pos, k_len)
      s = scale * jnp.einsum('bnqd,bnkd->bnqk', q_tile, k_tile,
                             preferred_element_type=jnp.float32)
      p = jnp.where(valid, jnp.exp(s - lse_t), 0.0)  # [B, N, Qc, Kc]
      d_v = d_v + jnp.einsum('bnqk,bnqd->bnkd', p, do_tile)
      d_p = jnp.einsum('bnqd,bnkd->bnqk', do_tile, v_tile.astype(jnp.float32))
      d_s = p * (d_p - delta_t) * scale
      d_k = d_k + jnp.einsum('bnqk,bnqd->bnkd', d_s, q_tile.astype(jnp.float32))
      d_q_tile = jax.lax.dynamic_slice_in_dim(d_q, qi * qb, qb, axis=2)
      d_q = jax.lax.dynamic_update_slice_in_dim(
          d_q, d_q_tile + jnp.einsum('bnqk,bnkd->bnqd', d_s, k_tile.astype(jnp.float32)),
          qi * qb, axis=2)
      return (d_k, d_v, d_q), None

    init = (jnp.zeros(k_tile.shape, jnp.float32), jnp.zeros(v_tile.shape, jnp.float32), d_q)
    (d_k, d_v, d_q), _ = jax.lax.scan(
        step, init, (jnp.arange(nq), q_tiles, do_tiles, lse_tiles, delta_tiles))
    return d_q, (d_k, d_v)

  d_q, (d_k, d_v) = jax.lax.scan(
      key_tile, jnp.zeros(q.shape, jnp.float32),
      (jnp.arange(k.shape[2] // kb), _tiles(k, kb), _tiles(v, kb)))
  return (d_q.astype(q.dtype), _untile(d_k).astype(k.dtype), _untile(d_v).astype(v.dtype),
          None)  # the mask: no gradient


flash_attention.defvjp(_fwd, _bwd)
