"""Positional information: sinusoidal (Vaswani), learned and rotary (RoPE) positions.

One class per kind, each `positions(x, pos) -> x with its positions` (x's dtype kept), built as
cls(max_len, dim, *, dtype, param_dtype, rngs) and found by name in POSITIONS:
  sinusoidal: x + PE[pos], a fixed table (Vaswani et al. 2017, sec. 3.5).
  learned:    x + E[pos], a learned table of max_len rows (Gehring et al. 2017; BERT).
  rotary:     x unchanged; every attention rotates its queries and keys instead (`apply_rotary`,
              Su et al. 2021); the class says so with `rotary = True`.

Shapes: B batch, L length, F features (the stream's width), N heads, D head dim.
"""

from __future__ import annotations

from typing import Any

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


class SinusoidalPositions(nnx.Module):
  """x + PE[pos], PE[pos, 2i] = sin(pos / 10000^(2i/F)), PE[pos, 2i+1] = cos(...) (sec. 3.5)."""

  rotary = False

  def __init__(self, max_len: int, dim: int, *, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    del dtype, param_dtype, rngs  # a constant table, added in x's dtype
    self.max_len, self.dim = max_len, dim

  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    # x [B, L, F], positions [L] int -> [B, L, F]
    table = sinusoidal(self.max_len, self.dim)  # [max_len, F], constant under jit
    return x + table[positions][None].astype(x.dtype)


class LearnedPositions(nnx.Module):
  """x + E[pos], E a learned [max_len, F] table, N(0, 0.02²) at init (Gehring et al. 2017)."""

  rotary = False

  def __init__(self, max_len: int, dim: int, *, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.max_len = max_len
    self.embed = nnx.Embed(max_len, dim, embedding_init=nnx.initializers.normal(0.02),
                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    # x [B, L, F], positions [L] int -> [B, L, F]
    return x + self.embed(positions)[None].astype(x.dtype)


class RotaryPositions(nnx.Module):
  """Rotary positions (Su et al. 2021): nothing is added here; every attention rotates q and k."""

  rotary = True

  def __init__(self, max_len: int, dim: int, *, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    del max_len, dim, dtype, param_dtype, rngs

  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    del positions
    return x


POSITIONS = {'sinusoidal': SinusoidalPositions, 'learned': LearnedPositions,
             'rotary': RotaryPositions}


def apply_rotary(x: jax.Array, positions: jax.Array, *, base: float = 10_000.0) -> jax.Array:
  """Rotates feature pairs (x_i, x_{i+D/2}) by angle pos · base^(-2i/D).

  x [B, L, N, D], positions [L] or [B, L] -> [B, L, N, D]. The dot product of a rotated query at
  position m and a rotated key at position n depends only on m - n. The rotation computes in
  float32 (angles of positions up to max_len need its mantissa) and returns x's dtype.
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
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)  # [B, L, N, D/2] each
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)
