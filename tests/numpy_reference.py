"""Hand-written numpy references for the attention tests (float64; no JAX in the references).

One reference per registered score and combine, in registries keyed like
attention_zoo.attention.SCORES and COMBINES: a new score registers its reference next to itself
(here, or in a test-only module, with SCORE_REFERENCES.override for the duration of a test).
A reference reads the module's parameters by path ('w_q/kernel', 'temperature': see `params_of`)
and must read every one of them: `score_logits` and `combine` fail otherwise, so that no
parameter escapes the gradient checks.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from attention_zoo.registry import Registry

# name -> (q [B, Q, N, Dq], k [B, K, N, Dk], params) -> logits [B, N, Q, K]
SCORE_REFERENCES: Registry[Callable[..., np.ndarray]] = Registry('score reference')
# name -> (x [..., F], fx [..., F], params) -> y [..., F] (evaluation mode: no dropout)
COMBINE_REFERENCES: Registry[Callable[..., np.ndarray]] = Registry('combine reference')


class Params(dict):
  """A module's parameters by path, as float64 arrays; remembers which ones were read."""

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.read: set[str] = set()

  def __getitem__(self, path: str) -> np.ndarray:
    self.read.add(path)
    return super().__getitem__(path)


def params_of(module) -> Params:
  """Every nnx.Param of `module` (a score, a combine, ...) by its path joined with '/', as float64
  numpy arrays: the references' parameters, whatever the module names them."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  return Params({'/'.join(map(str, path)): np.asarray(leaf.get_value(), np.float64)
                 for path, leaf in nnx.to_flat_state(nnx.state(module, nnx.Param))})


def _read_all(kind: str, name: str, reference: Callable, params: dict, *args) -> np.ndarray:
  """reference(*args, params), failing when it leaves one of the module's parameters unread."""
  params = Params(params)  # the same arrays (numerical_grad changes them in place)
  out = reference(*args, params)
  unread = sorted(set(params) - params.read)
  if unread:
    raise AssertionError(f'the numpy reference of {kind} {name!r} does not read the parameter(s) '
                         f'{unread} of its module: it cannot check them (nor their gradients)')
  return out


@SCORE_REFERENCES.register('dot')
def _dot(q, k, params):
  return np.einsum('bqnd,bknd->bnqk', q, k)


@SCORE_REFERENCES.register('scaled_dot')
def _scaled_dot(q, k, params):
  return np.einsum('bqnd,bknd->bnqk', q, k) / np.sqrt(q.shape[-1])


@SCORE_REFERENCES.register('general')
def _general(q, k, params):
  return np.einsum('bqnd,de,bkne->bnqk', q, params['w/kernel'], k)


@SCORE_REFERENCES.register('additive')
def _additive(q, k, params):
  a = q @ params['w_q/kernel']  # [B, Q, N, A]
  c = k @ params['w_k/kernel']  # [B, K, N, A]
  hidden = np.tanh(a[:, :, None] + c[:, None])  # [B, Q, K, N, A]
  return np.einsum('bqkna,a->bnqk', hidden, params['v/kernel'][:, 0])


@SCORE_REFERENCES.register('concat')
def _concat(q, k, params):
  b, nq, n, dq = q.shape
  nk = k.shape[1]
  qq = np.broadcast_to(q[:, :, None], (b, nq, nk, n, dq))
  kk = np.broadcast_to(k[:, None], (b, nq, nk, n, k.shape[-1]))
  hidden = np.tanh(np.concatenate([qq, kk], -1) @ params['w/kernel'])  # literal W [q; k]
  return np.einsum('bqkna,a->bnqk', hidden, params['v/kernel'][:, 0])


def score_logits(name: str, q: np.ndarray, k: np.ndarray, params: dict) -> np.ndarray:
  """q [B, Q, N, Dq], k [B, K, N, Dk] -> logits [B, N, Q, K], written from the papers' formulas;
  params: params_of(score), every one of which the reference must read."""
  return _read_all('score', name, SCORE_REFERENCES.get(name), params, q, k)


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


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


@COMBINE_REFERENCES.register('residual')
def _residual(x, fx, params):
  return x + fx


@COMBINE_REFERENCES.register('gate')
def _gate(x, fx, params):
  g = _sigmoid(np.concatenate([x, fx], -1) @ params['w_g/kernel'] + params['w_g/bias'])
  return x + g * fx


def combine(name: str, x: np.ndarray, fx: np.ndarray, params: dict) -> np.ndarray:
  """The combine `name` of stream x and branch fx [..., F] in evaluation mode; params:
  params_of(combine), every one of which the reference must read."""
  return _read_all('combine', name, COMBINE_REFERENCES.get(name), params, x, fx)


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
  s = _sigmoid(np.maximum(z @ w1 + b1, 0) @ w2 + b2)  # [B, C]
  return x * s.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)), s
