"""Hand-written numpy references for the attention tests (float64; no JAX)."""

from __future__ import annotations

import numpy as np


def score_logits(name: str, q: np.ndarray, k: np.ndarray, params: dict) -> np.ndarray:
  """q [B, Q, H, Dq], k [B, K, H, Dk] -> logits [B, H, Q, K], written from the papers' formulas."""
  if name == 'dot':
    return np.einsum('bqhd,bkhd->bhqk', q, k)
  if name == 'scaled_dot':
    return np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  if name == 'general':
    return np.einsum('bqhd,de,bkhe->bhqk', q, params['w'], k)
  if name == 'additive':
    a = q @ params['w_q']  # [B, Q, H, A]
    c = k @ params['w_k']  # [B, K, H, A]
    hidden = np.tanh(a[:, :, None] + c[:, None])  # [B, Q, K, H, A]
    return np.einsum('bqkha,a->bhqk', hidden, params['v'][:, 0])
  if name == 'concat':
    b, nq, h, dq = q.shape
    nk = k.shape[1]
    qq = np.broadcast_to(q[:, :, None], (b, nq, nk, h, dq))
    kk = np.broadcast_to(k[:, None], (b, nq, nk, h, k.shape[-1]))
    hidden = np.tanh(np.concatenate([qq, kk], -1) @ params['w'])  # literal W [q; k]
    return np.einsum('bqkha,a->bhqk', hidden, params['v'][:, 0])
  raise KeyError(name)


def attention(name, q, k, v, mask, params):
  """softmax over unmasked keys, zero for a query with none; -> (out [B, Q, H, Dv], weights)."""
  logits = score_logits(name, q, k, params)
  mask = np.broadcast_to(mask, logits.shape)
  masked = np.where(mask, logits, -np.inf)
  top = masked.max(-1, keepdims=True)
  e = np.where(mask, np.exp(masked - np.where(np.isfinite(top), top, 0)), 0.0)
  total = e.sum(-1, keepdims=True)
  out_w = np.where(total > 0, e / np.where(total > 0, total, 1), 0.0)
  out = np.einsum('bhqk,bkhd->bqhd', out_w, v)
  return out, out_w


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
  """Central differences of the scalar f at x (float64)."""
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    old = x[idx]
    x[idx] = old + eps
    up = f()
    x[idx] = old - eps
    down = f()
    x[idx] = old
    g[idx] = (up - down) / (2 * eps)
  return g


def squeeze_excite(x, w1, b1, w2, b2):
  z = x.reshape(x.shape[0], -1, x.shape[-1]).mean(1)  # [B, C]
  s = 1 / (1 + np.exp(-(np.maximum(z @ w1 + b1, 0) @ w2 + b2)))  # [B, C]
  return x * s.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)), s
