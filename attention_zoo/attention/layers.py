"""The two attention layers every model is built from.

  Attention:          seq2seq attention (Bahdanau 2014, Luong 2015): a decoder state queries the
                      encoder states; one head, any score.
  MultiHeadAttention: Vaswani et al. (2017), section 3.2: N heads of any score over projected
                      queries, keys and values; self-attention or source-target attention;
                      grouped key/value heads (Ainslie et al. 2023); an incremental decode cache.

Shapes: B batch, Q query positions, K key positions, F features, N query heads, G key/value
heads, D head dim (Dq / Dk / Dv of query / key / value in one-head Attention), A score dim.
Masks are bool, True = may attend, broadcastable to [B, N, Q, K].
Precision, as in flax's own layers: `dtype` computes (the projections, scores and kernel inputs
are cast to it; None: as the inputs and parameters promote), `param_dtype` stores the parameters.
The kernels keep the softmax statistics in float32 whatever `dtype` is (attention.kernels).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.attention import kernels as kernels_lib
from attention_zoo.attention import masks as masks_lib
from attention_zoo.attention import positional
from attention_zoo.attention import scores as scores_lib


def _key_mask(mask, batch: int, k_len: int):
  """Accepts a [B, K] key-validity mask or a rank-4 mask; returns a rank-4 mask (or None)."""
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  if mask.ndim == 2:
    if mask.shape != (batch, k_len):
      raise ValueError(f'mask [B, K] must have shape {(batch, k_len)}, got {mask.shape}')
    return masks_lib.padding_mask(mask)
  return mask


def _projects_keys(score: scores_lib.Score) -> bool:
  """Does the score read the keys through a projection of its own (additive, concat)?"""
  return type(score).project_keys is not scores_lib.Score.project_keys


class Attention(nnx.Module):
  """Seq2seq attention: context = Σ_k softmax_k(s(query, key_k)) · value_k.

  Args:
    query_dim, key_dim: feature dims of the decoder state and of the encoder states.
    score: a name in SCORES ('additive' = Bahdanau, 'dot' / 'general' / 'concat' = Luong, ...),
      or the class it names (make_score).
    kernel: a name in KERNELS ('dense', 'chunked', 'fused'), or the kernel it names.
    score_dim: hidden size A of the additive / concat scores (default key_dim).
    capture_weights: sow the weights [B, 1, Q, K] as nnx.Intermediate 'attention_weights'.
    dtype / param_dtype: computation / parameter dtype (module doc); query, keys and values are
      cast to `dtype`.

  Call: query [B, Dq] or [B, Q, Dq], keys [B, K, Dk], values [B, K, Dv] (default keys),
    mask [B, K] (True = real key) or rank 4, projected_keys = project_keys(keys) when computed
    once for many calls -> context [B, Dv] or [B, Q, Dv];
    with return_weights=True -> (context, weights [B, K] or [B, Q, K]), for use inside lax loops
    where sowing is not possible.
  """

  def __init__(self, query_dim: int, key_dim: int, *, score: str | Callable = 'general',
               kernel: str | Callable = 'dense', score_dim: int | None = None,
               capture_weights: bool = False, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.query_dim, self.key_dim = query_dim, key_dim
    self.dtype = dtype
    self.score = scores_lib.make_score(score, query_dim, key_dim, score_dim=score_dim,
                                       dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.kernel = kernels_lib.get_kernel(kernel)
    self.capture_weights = capture_weights

  def project_keys(self, keys: jax.Array) -> jax.Array:
    """keys [B, K, Dk] -> what the score reads of them [B, K, A] (e.g. W_k k of the additive
    score), to pass as `projected_keys` when many queries read the same keys."""
    return self.score.project_keys(self._cast(keys)[:, :, None])[:, :, 0]

  def _cast(self, x: jax.Array | None) -> jax.Array | None:
    return x if x is None or self.dtype is None else x.astype(self.dtype)

  def __call__(self, query: jax.Array, keys: jax.Array, values: jax.Array | None = None,
               mask: jax.Array | None = None, *, return_weights: bool = False,
               projected_keys: jax.Array | None = None):
    values = keys if values is None else values
    query, keys, values = self._cast(query), self._cast(keys), self._cast(values)
    projected_keys = self._cast(projected_keys)
    single = query.ndim == 2
    q = query[:, None] if single else query  # [B, Q, Dq]
    if q.ndim != 3 or q.shape[-1] != self.query_dim:
      raise ValueError(f'Attention: query must be [B, {self.query_dim}] or [B, Q, '
                       f'{self.query_dim}], got shape {query.shape}')
    if keys.ndim != 3 or keys.shape[-1] != self.key_dim or keys.shape[0] != q.shape[0]:
      raise ValueError(f'Attention: keys must be [B={q.shape[0]}, K, {self.key_dim}], got shape '
                       f'{keys.shape}')
    if values.shape[:2] != keys.shape[:2]:
      raise ValueError(f'Attention: values {values.shape} must match keys {keys.shape} on [B, K]')
    mask = _key_mask(mask, keys.shape[0], keys.shape[1])
    score, k = self.score, keys[:, :, None]  # [B, K, 1, Dk]
    if projected_keys is not None:
      k = projected_keys[:, :, None]  # [B, K, 1, A]; the keys themselves for a dot-product score
      if _projects_keys(self.score):
        score = scores_lib.OnProjected(self.score)  # (a dot-product score stays fusable)
    out, weights = self.kernel(score, q[:, :, None], k, values[:, :, None], mask,
                               return_weights=self.capture_weights or return_weights)
    if self.capture_weights:
      self.sow(nnx.Intermediate, 'attention_weights', weights)  # [B, 1, Q, K]
    out = out[:, :, 0]  # [B, Q, Dv]
    if single:
      out, weights = out[:, 0], (None if weights is None else weights[:, 0, 0])  # [B, Dv], [B, K]
    elif weights is not None:
      weights = weights[:, 0]  # [B, Q, K]
    return (out, weights) if return_weights else out


class MultiHeadAttention(nnx.Module):
  """Multi-head attention: concat_n(attn(x W_q^n, c W_k^n, c W_v^n)) W_o.

  Args:
    num_heads: N, query heads.
    in_features: F of the queries' input x (and of the context, unless kv_features is given).
    qkv_features: N · D (default in_features); must be divisible by num_heads.
    out_features: output width (default in_features).
    num_kv_heads: G key/value heads (default N); N must be a multiple of G (grouped-query).
    score / kernel: names in SCORES / KERNELS, or what they name (make_score, get_kernel); the
      score is built for N heads of D features (scores.ScoreDims).
    dropout_rate: dropout on the attention weights in training (`model.train()`).
    rotary: rotate queries and keys by position (RoPE) in self-attention.
    capture_weights: sow the weights [B, N, Q, K] as nnx.Intermediate 'attention_weights'.
    dtype / param_dtype: computation / parameter dtype (module doc): the projections compute in
      `dtype`, so the kernel reads queries, keys and values of `dtype`.

  Call: x [B, Q, F], context [B, K, Fc] (None: self-attention), mask rank 4 or [B, K],
    causal=True adds the causal mask in-kernel -> [B, Q, out_features]; or, for source-target
    attention read by many calls, projected_context = project_context(context) instead of context.
  Decoding: init_cache(B, max_len) then decode_step(x_t [B, 1, F], cache) per step.
  Head ablation: set `layer.head_mask` to a tuple of N multipliers (1 keeps a head, 0 masks it)
  to scale each head's output before the output projection (the mask ξ_h of Michel et al. 2019);
  None (the default) leaves the layer as it is.
  """

  def __init__(self, num_heads: int, in_features: int, *, qkv_features: int | None = None,
               out_features: int | None = None, kv_features: int | None = None,
               num_kv_heads: int | None = None, score: str | Callable = 'scaled_dot',
               kernel: str | Callable = 'dense', score_dim: int | None = None,
               dropout_rate: float = 0.0, use_bias: bool = True, rotary: bool = False,
               capture_weights: bool = False, deterministic: bool = True, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    qkv_features = in_features if qkv_features is None else qkv_features
    out_features = in_features if out_features is None else out_features
    kv_features = in_features if kv_features is None else kv_features
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if qkv_features % num_heads:
      raise ValueError(f'MultiHeadAttention: qkv_features={qkv_features} is not divisible by '
                       f'num_heads={num_heads}')
    if num_heads % num_kv_heads:
      raise ValueError(f'MultiHeadAttention: num_heads={num_heads} is not a multiple of '
                       f'num_kv_heads={num_kv_heads}')
    head_dim = qkv_features // num_heads
    self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
    self.in_features, self.kv_features = in_features, kv_features
    self.dtype = dtype
    precision = dict(dtype=dtype, param_dtype=param_dtype)
    proj = lambda fin, heads: nnx.LinearGeneral(fin, (heads, head_dim), use_bias=use_bias,
                                                **precision, rngs=rngs)
    self.query = proj(in_features, num_heads)  # [F] -> [N, D]
    self.key = proj(kv_features, num_kv_heads)  # [Fc] -> [G, D]
    self.value = proj(kv_features, num_kv_heads)  # [Fc] -> [G, D]
    self.out = nnx.LinearGeneral((num_heads, head_dim), out_features, axis=(-2, -1),
                                 use_bias=use_bias, **precision, rngs=rngs)  # [N, D] -> [F_out]
    self.score = scores_lib.make_score(score, head_dim, head_dim, num_heads=num_heads,
                                       score_dim=score_dim, **precision, rngs=rngs)
    self.kernel = kernels_lib.get_kernel(kernel)
    self.dropout_rate = dropout_rate
    self.deterministic = deterministic
    self.rngs = rngs['dropout'].fork() if dropout_rate > 0 else None
    self.rotary = rotary
    self.capture_weights = capture_weights
    self.head_mask: tuple[float, ...] | None = None  # see the class docstring: head ablation

  def _attend(self, q, k, v, mask, causal, score=None):
    dropout_rng = None
    if self.dropout_rate > 0 and not self.deterministic:
      dropout_rng = self.rngs()
    score = self.score if score is None else score
    out, weights = self.kernel(score, q, k, v, mask, causal=causal,
                               return_weights=self.capture_weights,
                               dropout_rate=self.dropout_rate, dropout_rng=dropout_rng)
    if self.capture_weights:
      self.sow(nnx.Intermediate, 'attention_weights', weights)  # [B, N, Q, K]
    if self.head_mask is not None:  # [N] multipliers of the heads' outputs
      out = out * jnp.asarray(self.head_mask, out.dtype)[:, None]  # [B, Q, N, D]
    return self.out(out)  # [B, Q, N, D] -> [B, Q, F_out]

  def _check(self, x, width, name):
    if x.ndim != 3 or x.shape[-1] != width:
      raise ValueError(f'MultiHeadAttention: {name} must be [B, L, {width}], got shape {x.shape}')

  def project_context(self, context: jax.Array) -> dict[str, jax.Array]:
    """What source-target attention reads of a context, computed once when many calls read it
    (the steps of a decoder; the multi-head counterpart of Attention.project_keys):
    context [B, K, Fc] -> {'key': [B, K, G, D] as the score reads it ([B, K, G, A] for a score
    that projects its keys, e.g. W_k k of the additive score), 'value': [B, K, G, D]}.
    Pass it as `projected_context`.
    """
    self._check(context, self.kv_features, 'context')
    key = self.key(context)  # [B, K, G, D]
    if _projects_keys(self.score):
      key = self.score.project_keys(key)  # [B, K, G, A]
    return {'key': key, 'value': self.value(context)}

  def _attend_projected(self, x, projected, mask, causal):
    # x [B, Q, F], projected = project_context(context) -> [B, Q, F_out]
    k, v = projected['key'], projected['value']  # [B, K, G, D | A], [B, K, G, D]
    if k.shape[0] != x.shape[0]:
      raise ValueError(f'MultiHeadAttention: x {x.shape} and projected_context key {k.shape} '
                       'differ in batch')
    score = scores_lib.OnProjected(self.score) if _projects_keys(self.score) else None
    return self._attend(self.query(x), k, v, _key_mask(mask, x.shape[0], k.shape[1]), causal,
                        score)

  def __call__(self, x: jax.Array, context: jax.Array | None = None,
               mask: jax.Array | None = None, *, causal: bool = False,
               projected_context: dict[str, jax.Array] | None = None) -> jax.Array:
    self._check(x, self.in_features, 'x')
    if projected_context is not None:
      if context is not None:
        raise ValueError('MultiHeadAttention: give context or projected_context, not both')
      return self._attend_projected(x, projected_context, mask, causal)
    self_attention = context is None
    context = x if self_attention else context
    self._check(context, self.kv_features, 'context')
    if context.shape[0] != x.shape[0]:
      raise ValueError(f'MultiHeadAttention: x {x.shape} and context {context.shape} differ '
                       'in batch')
    q = self.query(x)  # [B, Q, N, D]
    k, v = self.key(context), self.value(context)  # [B, K, G, D]
    if self.rotary and self_attention:
      positions = jnp.arange(x.shape[1])
      q, k = positional.apply_rotary(q, positions), positional.apply_rotary(k, positions)
    mask = _key_mask(mask, x.shape[0], context.shape[1])
    return self._attend(q, k, v, mask, causal)

  def init_cache(self, batch_size: int, max_len: int, dtype=None) -> dict[str, jax.Array]:
    """An empty self-attention cache: key/value [B, max_len, G, D] of `dtype` (None: the
    layer's dtype, float32 without one), index [B] (next position)."""
    if dtype is None:
      dtype = jnp.float32 if self.dtype is None else self.dtype
    shape = (batch_size, max_len, self.num_kv_heads, self.head_dim)
    return {'key': jnp.zeros(shape, dtype), 'value': jnp.zeros(shape, dtype),
            'index': jnp.zeros((batch_size,), jnp.int32)}

  def decode_step(self, x: jax.Array, cache: dict[str, jax.Array],
                  mask: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One causal self-attention step: x [B, 1, F] at position cache['index'] -> ([B, 1, F_out],
    cache).

    Attends to every cached position <= index (and to `mask`, rank 4 over [B, N, 1, max_len]);
    step-by-step outputs equal the causal full forward.
    """
    self._check(x, self.in_features, 'x')
    if x.shape[1] != 1:
      raise ValueError(f'decode_step takes one position, x [B, 1, F]; got shape {x.shape}')
    index = cache['index'][0]  # all batch rows decode in lockstep
    q = self.query(x)  # [B, 1, N, D]
    k, v = self.key(x), self.value(x)  # [B, 1, G, D]
    if self.rotary:
      q, k = positional.apply_rotary(q, index[None]), positional.apply_rotary(k, index[None])
    keys = jax.lax.dynamic_update_slice_in_dim(cache['key'], k.astype(cache['key'].dtype), index, 1)
    values = jax.lax.dynamic_update_slice_in_dim(cache['value'], v.astype(cache['value'].dtype),
                                                 index, 1)
    max_len = keys.shape[1]
    seen = (jnp.arange(max_len) <= index)[None, None, None, :]  # [1, 1, 1, max_len]
    mask = masks_lib.combine_masks(seen, _key_mask(mask, x.shape[0], max_len))
    y = self._attend(q, keys, values, mask, causal=False)
    return y, {'key': keys, 'value': values, 'index': cache['index'] + 1}
