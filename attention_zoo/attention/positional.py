"""Positional information: sinusoidal (Vaswani), learned, rotary (RoPE) and ALiBi.

Shapes: B batch, L length, H heads, D head dim, F model dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def sinusoidal(length: int, dim: int, *, base: float = 10_000.0) -> jax.Array:
  """PE[pos, 2i] = sin(pos / base^(2i/F)), PE[pos, 2i+1] = cos(...) -> [L, F].

  Reference: Vaswani et al. (2017), section 3.5.
  """
  if dim % 2:
    raise ValueError(f'sinusoidal positions need an even dim, got {dim}')
  pos = np.arange(length)[:, None]  # [L, 1]
  inv = base ** (-np.arange(0, dim, 2) / dim)  # [F/2]
  pe = np.zeros((length, dim), np.float32)
  pe[:, 0::2] = np.sin(pos * inv)
  pe[:, 1::2] = np.cos(pos * inv)
  return jnp.asarray(pe)


class LearnedPositional(nnx.Module):
  """A learned embedding per position (Gehring et al. 2017; BERT): positions [..] -> [.., F]."""

  def __init__(self, max_len: int, dim: int, *, rngs: nnx.Rngs):
    self.max_len = max_len
    self.embed = nnx.Embed(max_len, dim, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)

  def __call__(self, positions: jax.Array) -> jax.Array:
    return self.embed(positions)


def apply_rotary(x: jax.Array, positions: jax.Array, *, base: float = 10_000.0) -> jax.Array:
  """Rotates feature pairs (x_i, x_{i+D/2}) by angle pos · base^(-2i/D).

  x [B, L, H, D], positions [L] or [B, L] -> [B, L, H, D]. The dot product of a rotated query at
  position m and a rotated key at position n depends only on m - n.
  Reference: Su et al. (2021), RoFormer, eq. (34) (half-split pairing, as in GPT-NeoX).
  """
  d = x.shape[-1]
  if d % 2:
    raise ValueError(f'rotary positions need an even head dim, got x shape {x.shape}')
  inv = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)  # [D/2]
  positions = jnp.asarray(positions, jnp.float32)
  if positions.ndim == 1:
    positions = positions[None]
  angle = positions[:, :, None, None] * inv  # [B|1, L, 1, D/2]
  sin, cos = jnp.sin(angle), jnp.cos(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)  # [B, L, H, D/2] each
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def alibi_slopes(num_heads: int) -> jax.Array:
  """Head slopes 2^(-8h/H), h = 1..H (Press et al. 2022, ALiBi) -> [H]."""
  return jnp.asarray(2.0 ** (-8.0 * np.arange(1, num_heads + 1) / num_heads), jnp.float32)


def alibi_bias(num_heads: int, q_len: int, k_len: int) -> jax.Array:
  """ALiBi logit bias -slope_h · |q - k| -> [1, H, Q, K] (add it to the logits)."""
  dist = jnp.abs(jnp.arange(q_len)[:, None] - jnp.arange(k_len)[None, :])  # [Q, K]
  return -alibi_slopes(num_heads)[None, :, None, None] * dist[None, None]
