"""Squeeze-and-Excitation: channel attention as a gate (Hu, Shen, Sun 2018, eq. (2)-(4)).

  z = mean over space of x                  squeeze        [B, C]
  s = σ(W_2 ReLU(W_1 z)),  W_1: C -> C/r    excitation     [B, C]
  y = x ⊙ s                                 scale          same shape as x
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


class SqueezeExcite(nnx.Module):
  """SE block for x [B, height, width, C] (images) or [B, L, C] (sequences); reduction ratio r.

  Parameters: C·C/r + C/r (W_1 and bias) + C/r·C + C (W_2 and bias).
  With capture_weights=True the channel weights s [B, C] are sown as 'se_weights'.
  dtype / param_dtype: computation / parameter dtype of W_1, W_2 (flax's); the squeeze (a mean)
  accumulates in float32 (jnp.mean upcasts bfloat16).
  """

  def __init__(self, channels: int, reduction: int = 16, *, capture_weights: bool = False,
               dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if not isinstance(reduction, int) or reduction < 1:
      raise ValueError(f'SqueezeExcite: reduction must be a positive int, got {reduction!r}')
    if reduction > channels:
      raise ValueError(f'SqueezeExcite: reduction r={reduction} is larger than channels '
                       f'C={channels}; need 1 <= r <= C')
    if channels % reduction:
      raise ValueError(f'SqueezeExcite: reduction r={reduction} does not divide channels '
                       f'C={channels}; choose r among the divisors of {channels}')
    self.channels = channels
    self.capture_weights = capture_weights
    precision = dict(dtype=dtype, param_dtype=param_dtype)
    self.reduce = nnx.Linear(channels, channels // reduction, **precision, rngs=rngs)
    self.expand = nnx.Linear(channels // reduction, channels, **precision, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim not in (3, 4) or x.shape[-1] != self.channels:
      raise ValueError(f'SqueezeExcite({self.channels}) expects [B, height, width, '
                       f'{self.channels}] or [B, L, {self.channels}], got shape {x.shape}')
    z = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))  # [B, C]
    s = jax.nn.sigmoid(self.expand(jax.nn.relu(self.reduce(z))))  # [B, C]
    if self.capture_weights:
      self.sow(nnx.Intermediate, 'se_weights', s)  # [B, C]
    return x * s.reshape(s.shape[:1] + (1,) * (x.ndim - 2) + s.shape[1:]).astype(x.dtype)
