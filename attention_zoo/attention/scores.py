"""Attention scores: how a query and a key become a logit.

The interface every score keeps (Score), so that each kernel, layer and model takes it:
  built:  cls(dims: ScoreDims, *, rngs) where ScoreDims holds all a score may need (Dq, Dk, the
          heads N it is called on, A), and registered by name: @SCORES.register('name').
  called: score(q, k) -> logits, on blocks,
            q [B, Q, N, Dq], k [B, K, N, Dk] -> logits [B, N, Q, K],
          so that a kernel may call it on the whole sequence (dense) or on blocks of queries and
          keys (chunked). A score acts on each head's features; its parameters act on the
          feature axis, shared across heads, or hold one value per head ([N, ...], e.g. a
          temperature per head).
  finite: logits, and their gradients with respect to q, k and every parameter, are finite for
          every input, zero vectors included. The chunked kernel pads queries and keys with zeros
          to whole blocks and masks the padded logits afterwards: a NaN there (0 / 0 in a norm,
          say) is masked in the forward pass but not in the backward pass, where it reaches
          every gradient. tests/test_attention_kernels.py checks it for every registered score.
A new score is one class registered here (or anywhere imported before use) and its numpy
reference in tests/numpy_reference.py (README.md, "Adding a score").

Shapes: B batch, Q query positions, K key positions, N heads, Dq / Dk query / key features,
A score dim.
Precision: a score computes in the dtype of its inputs, its parameters stored in
ScoreDims.param_dtype and cast to ScoreDims.dtype (flax's `dtype` / `param_dtype`); its logits
may be bfloat16 (the kernels upcast them to float32 before the softmax, as flax's and
jax.nn.dot_product_attention's XLA paths do).
References:
  additive:   Bahdanau, Cho, Bengio (2014), eq. (6): vᵀ tanh(W_q q + W_k k).
  concat:     Luong, Pham, Manning (2015), eq. (8): vᵀ tanh(W [q; k]).
  dot:        Luong et al. (2015): qᵀ k.
  general:    Luong et al. (2015): qᵀ W k.
  scaled_dot: Vaswani et al. (2017), eq. (1): qᵀ k / √D.
`additive` and `concat` are the same function class under two parametrizations, kept as documented
aliases: W [q; k] = W_q q + W_k k with W = [W_q; W_k] (W_q, W_k the row blocks of W). They differ
only in initialization: concat's one W has fan-in Dq + Dk where additive's W_q and W_k have Dq and
Dk (lecun normal), so concat's pre-tanh sum starts with less variance (half when Dq = Dk and q, k
have equal variance). What differs between Bahdanau and Luong is which decoder state queries
(s_{t-1} or h_t, models/seq2seq.py), not the score.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.registry import Registry

SCORES: Registry = Registry('score')


# From this many logits B·N·Q·K on, the tanh scores loop over the score dim A (see _tanh_score).
TANH_LOOP_FROM = 1 << 16


def _tanh_score(hq: jax.Array, hk: jax.Array, v: nnx.Linear) -> jax.Array:
  """vᵀ tanh(hq + hk): hq [B, Q, N, A], hk [B, K, N, A], v: Linear A -> 1 -> [B, N, Q, K].

  Small blocks materialize the hidden layer [B, Q, K, N, A] and apply v. From TANH_LOOP_FROM
  logits on, a scan over a = 1..A accumulates v_a tanh(hq_a + hk_a) [B, N, Q, K]: XLA on CPU
  computes a product with v broadcast along the minor axis 4-10x slower than with a scalar v_a
  (measured on one [4, 128, 128, 8, 64] tile: 204 ms against 37 ms). The same sum, in another
  order (float rounding apart).
  """
  b, q_len, n, _ = hq.shape
  if b * n * q_len * hk.shape[1] < TANH_LOOP_FROM:
    hidden = jnp.tanh(hq[:, :, None] + hk[:, None])  # [B, Q, K, N, A]
    return jnp.einsum('bqkn->bnqk', v(hidden)[..., 0])  # [B, N, Q, K]
  by_a = lambda x: jnp.moveaxis(x, -1, 0).swapaxes(2, 3)  # [B, L, N, A] -> [A, B, N, L]
  return _tanh_loop(by_a(hq), by_a(hk), v.kernel[...][:, 0].astype(jnp.result_type(hq, hk)))


@jax.custom_vjp
def _tanh_loop(hq: jax.Array, hk: jax.Array, w: jax.Array) -> jax.Array:
  """Σ_a w_a tanh(hq_a[..., :, None] + hk_a[..., None, :]): hq [A, B, N, Q], hk [A, B, N, K],
  w [A] -> [B, N, Q, K], a scan over a. Its backward pass is a scan too, recomputing each t_a
  (autodiff would store all A of them):
    g_a = ds · w_a · (1 - t_a²),  dhq_a = Σ_k g_a,  dhk_a = Σ_q g_a,  dw_a = Σ ds · t_a."""

  def add_one(total, x):
    w_a, hq_a, hk_a = x  # [], [B, N, Q], [B, N, K]
    return total + w_a * jnp.tanh(hq_a[..., :, None] + hk_a[..., None, :]), None

  total = jnp.zeros(hq.shape[1:] + hk.shape[-1:], jnp.result_type(hq, hk))
  return jax.lax.scan(add_one, total, (w, hq, hk))[0]


def _tanh_loop_bwd(res, d_s):
  hq, hk, w = res

  def one(_, x):
    w_a, hq_a, hk_a = x
    t = jnp.tanh(hq_a[..., :, None] + hk_a[..., None, :])  # [B, N, Q, K]
    g = d_s * w_a * (1 - t * t)
    return None, (jnp.sum(g, -1), jnp.sum(g, -2), jnp.sum(d_s * t))

  _, (d_hq, d_hk, d_w) = jax.lax.scan(one, None, (w, hq, hk))
  return d_hq.astype(hq.dtype), d_hk.astype(hk.dtype), d_w.astype(w.dtype)


_tanh_loop.defvjp(lambda hq, hk, w: (_tanh_loop(hq, hk, w), (hq, hk, w)), _tanh_loop_bwd)


def _dot(q: jax.Array, k: jax.Array) -> jax.Array:
  # q [B, Q, N, D], k [B, K, N, D] -> [B, N, Q, K], a [B, N] batched matmul (fast on XLA CPU)
  return jnp.matmul(jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2).swapaxes(-1, -2))


def _precision(dims: ScoreDims) -> dict[str, Any]:
  """The dtype keywords of the score's flax layers."""
  return dict(dtype=dims.dtype, param_dtype=dims.param_dtype)


def _same_dims(name: str, dims: ScoreDims):
  if dims.query_dim != dims.key_dim:
    raise ValueError(f'score {name!r} needs query_dim == key_dim, got query_dim={dims.query_dim}, '
                     f'key_dim={dims.key_dim}; use score="general", "additive" or "concat"')


@dataclasses.dataclass(frozen=True)
class ScoreDims:
  """What a score is built for; every score's constructor takes one, so that a score needing
  something new reads a new field here and no other score's signature changes."""

  query_dim: int  # Dq
  key_dim: int  # Dk
  num_heads: int = 1  # N, the heads the score is called on (one-head seq2seq attention: 1)
  score_dim: int | None = None  # A of a score with a hidden layer (None: the score's default)
  dtype: Any = None  # computation dtype of its layers (None: as inputs and parameters promote)
  param_dtype: Any = jnp.float32  # dtype of its parameters


class Score(nnx.Module):
  """Base class of the interface in the module doc. `fused_scale` is the logit scale when the
  score is a plain scaled dot product (so the fused kernel may compute it), None otherwise."""

  fused_scale: float | None = None

  def __call__(self, q: jax.Array, k: jax.Array) -> jax.Array:
    raise NotImplementedError

  def project_keys(self, k: jax.Array) -> jax.Array:
    """The part of the score that reads the keys alone (here: the keys themselves), computed once
    when many queries read the same keys (the steps of a seq2seq decoder)."""
    return k

  def from_projected(self, q: jax.Array, pk: jax.Array) -> jax.Array:
    """s(q, k) from pk = project_keys(k)."""
    return self(q, pk)


class OnProjected(Score):
  """A score applied to projected keys: OnProjected(s)(q, s.project_keys(k)) == s(q, k)."""

  def __init__(self, score: Score):
    self.score = score

  def __call__(self, q, pk):
    return self.score.from_projected(q, pk)


@SCORES.register('dot')
class DotScore(Score):
  """Luong dot score: s(q, k) = qᵀ k."""

  def __init__(self, dims: ScoreDims, *, rngs: nnx.Rngs):
    del rngs  # no parameters
    _same_dims('dot', dims)
    self.fused_scale = 1.0

  def __call__(self, q, k):
    return _dot(q, k)  # [B, N, Q, K]


@SCORES.register('scaled_dot')
class ScaledDotScore(Score):
  """Vaswani scaled dot product: s(q, k) = qᵀ k / √D."""

  def __init__(self, dims: ScoreDims, *, rngs: nnx.Rngs):
    del rngs  # no parameters
    _same_dims('scaled_dot', dims)
    self.fused_scale = 1.0 / math.sqrt(dims.query_dim)

  def __call__(self, q, k):
    return _dot(q * jnp.asarray(self.fused_scale, q.dtype), k)  # [B, N, Q, K]


@SCORES.register('general')
class GeneralScore(Score):
  """Luong general score: s(q, k) = qᵀ W k, W [Dq, Dk]."""

  def __init__(self, dims: ScoreDims, *, rngs: nnx.Rngs):
    self.w = nnx.Linear(dims.query_dim, dims.key_dim, use_bias=False, **_precision(dims),
                        rngs=rngs)

  def __call__(self, q, k):
    return _dot(self.w(q), k)  # (q W) [B, Q, N, Dk] . k -> [B, N, Q, K]


@SCORES.register('additive')
class AdditiveScore(Score):
  """Bahdanau score: s(q, k) = vᵀ tanh(W_q q + W_k k). The same function class as `concat` (see
  the module doc): W_q, W_k are concat's W split into its query and key rows."""

  def __init__(self, dims: ScoreDims, *, rngs: nnx.Rngs):
    score_dim, precision = dims.score_dim or dims.key_dim, _precision(dims)
    self.w_q = nnx.Linear(dims.query_dim, score_dim, use_bias=False, **precision, rngs=rngs)
    self.w_k = nnx.Linear(dims.key_dim, score_dim, use_bias=False, **precision, rngs=rngs)
    self.v = nnx.Linear(score_dim, 1, use_bias=False, **precision, rngs=rngs)

  def project_keys(self, k):
    return self.w_k(k)  # [B, K, N, A]; Bahdanau et al. precompute U_a h_j the same way

  def from_projected(self, q, wk):
    return _tanh_score(self.w_q(q), wk, self.v)  # [B, N, Q, K]

  def __call__(self, q, k):
    return self.from_projected(q, self.project_keys(k))


@SCORES.register('concat')
class ConcatScore(Score):
  """Luong concat score: s(q, k) = vᵀ tanh(W [q; k]), W [(Dq + Dk), A]. The same function class
  as `additive` (see the module doc); it differs only by initializing W as one matrix.

  W [q; k] is computed as W[:Dq]ᵀ q + W[Dq:]ᵀ k, which is the same number without building the
  [B, Q, K, N, Dq + Dk] concatenation.
  """

  def __init__(self, dims: ScoreDims, *, rngs: nnx.Rngs):
    score_dim, precision = dims.score_dim or dims.key_dim, _precision(dims)
    self.query_dim = dims.query_dim
    self.w = nnx.Linear(dims.query_dim + dims.key_dim, score_dim, use_bias=False, **precision,
                        rngs=rngs)
    self.v = nnx.Linear(score_dim, 1, use_bias=False, **precision, rngs=rngs)

  def project_keys(self, k):
    return k @ self.w.kernel[self.query_dim:].astype(k.dtype)  # [B, K, N, A]

  def from_projected(self, q, wk):
    wq = q @ self.w.kernel[:self.query_dim].astype(q.dtype)  # [B, Q, N, A]
    return _tanh_score(wq, wk, self.v)  # [B, N, Q, K]

  def __call__(self, q, k):
    return self.from_projected(q, self.project_keys(k))


def make_score(score: str | Callable[..., Score], query_dim: int, key_dim: int, *,
               num_heads: int = 1, score_dim: int | None = None, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs) -> Score:
  """Builds a score for queries of Dq = query_dim and keys of Dk = key_dim features, called on
  num_heads heads (A = score_dim where it has a hidden layer), computing in `dtype` with
  parameters of `param_dtype`.

  `score` is a name in SCORES (ValueError naming the nearest and the known ones otherwise) or
  the class a name stands for, looked up once before (e.g. by models.transformer_blocks'
  BlockOptions, for every layer it builds).
  """
  dims = ScoreDims(query_dim, key_dim, num_heads, score_dim, dtype, param_dtype)
  return SCORES.resolve(score)(dims, rngs=rngs)
