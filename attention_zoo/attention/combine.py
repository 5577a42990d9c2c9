"""Combine: how an attention output f(x) meets the stream x it reads from.

  residual: x + f(x)              (He et al. 2016; the Transformer, Vaswani et al. 2017)
  gate:     x ⊙ σ(f(x))           (multiplicative gating, as in SE blocks, Hu et al. 2018)
  concat:   tanh(W_c [c; h])      (Luong et al. 2015, eq. (5): the attentional hidden state)

Every combine is a module `combine(x, fx) -> y`; make_combine(name, dim, rngs=...) builds one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.registry import Registry

COMBINES: Registry = Registry('combine')


@COMBINES.register('residual')
class Residual(nnx.Module):
  """y = x + f(x)."""

  def __init__(self, dim: int | None = None, *, rngs: nnx.Rngs | None = None):
    del dim, rngs

  def __call__(self, x: jax.Array, fx: jax.Array) -> jax.Array:
    return x + fx


@COMBINES.register('gate')
class Gate(nnx.Module):
  """y = x ⊙ σ(f(x))."""

  def __init__(self, dim: int | None = None, *, rngs: nnx.Rngs | None = None):
    del dim, rngs

  def __call__(self, x: jax.Array, fx: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(fx)


@COMBINES.register('concat')
class Concat(nnx.Module):
  """Luong's attentional state h̃ = tanh(W_c [c; h]).

  context c [..., c_dim], state h [..., h_dim] -> [..., out_dim].
  """

  def __init__(self, c_dim: int, h_dim: int | None = None, out_dim: int | None = None, *,
               rngs: nnx.Rngs):
    h_dim = c_dim if h_dim is None else h_dim
    out_dim = h_dim if out_dim is None else out_dim
    self.w_c = nnx.Linear(c_dim + h_dim, out_dim, use_bias=False, rngs=rngs)

  def __call__(self, h: jax.Array, c: jax.Array) -> jax.Array:
    # Called as combine(x=h, fx=c) like the others.
    return jnp.tanh(self.w_c(jnp.concatenate([c, h], axis=-1)))


def make_combine(name: str, dim: int, *, rngs: nnx.Rngs) -> nnx.Module:
  """The combine registered as `name` for a stream of width `dim` (ValueError if unknown)."""
  return COMBINES.get(name)(dim, rngs=rngs)
