"""Hand-written numpy references for the attention tests (float64; no JAX)."""

from __future__ import annotations

import numpy as np


def _additive(q, k, params):
  a = q @ params['w_q']  # [B, Q, N, A]
  c = k @ params['w_k']  # [B, K, N, A]
  hidden = np.tanh(a[:, :, None] + c[:, None])  # [B, Q, K, N, A]
  return np.einsum('bqkna,a->bnqk', hidden, params['v'][:, 0])


def _concat(q, k, params):
  b, nq, n, dq = q.shape
  nk = k.shape[1]
  qq = np.broadcast_to(q[:, :, None], (b, nq, nk, n, dq))
  kk = np.broadcast_to(k[:, None], (b, nq, nk, n, k.shape[-1]))
  hidden = np.tanh(np.concatenate([qq, kk], -1) @ params['w'])  # literal W [q; k]
  return np.einsum('bqkna,a->bnqk', hidden, params['v'][:, 0])


SCORE_LOGITS = {  # name -> (q [B, Q, N, Dq], k [B, K, N, Dk], params) -> logits [B, N, Q, K]
    'dot': lambda q, k, params: np.einsum('bqnd,bknd->bnqk', q, k),
    'scaled_dot': lambda q, k, params: np.einsum('bqnd,bknd->bnqk', q, k) / np.sqrt(q.shape[-1]),
    'general': lambda q, k, params: np.einsum('bqnd,de,bkne->bnqk', q, params['w'], k),
    'additive': _additive,
    'concat': _concat,
}


def score_logits(name: str, q: np.ndarray, k: np.ndarray, params: dict) -> np.ndarray:
  """q [B, Q, N, Dq], k [B, K, N, Dk] -> logits [B, N, Q, K], written from the papers' formulas."""
  return SCORE_LOGITS[name](q, k, params)


def attention(name, q, k, v, mask, params):
  """softmax over unmasked keys, zero for a query with none; -> (out [B, Q, N, Dv], weights)."""
  logits = score_logits(name, q, k, params)
  mask = np.broadcast_to(mask, logits.shape)
  masked = np.where(mask, logits, -np.inf)
  top = masked.max(-1, keepdims=True)
  e = np.where(mask, np.exp(masked - np.where(np.isfinite(top), top, 0)), 0.0)
  total = e.sum(-1, keepdims=True)
  out_w = np.where(total > 0, e / np.where(total > 0, total, 1), 0.0)
  out = np.einsum('bnqk,bknd->bqnd', out_w, v)
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
