"""Combine: how a sublayer's output f meets the stream x it reads from.

Every combine keeps the identity path x with weight 1, so that the combine axis isolates adding
the branch against multiplying it by a learned gate before adding it:

  residual: y = x + dropout(f)                 (He et al. 2016; the Transformer, Vaswani et al.
                                                2017, sec. 3.1 and 5.4 "residual dropout")
  gate:     y = x + dropout(σ(W_g [x; f] + b_g) ⊙ f)
                                               a learned gate on the branch: highway networks
                                               (Srivastava et al. 2015) gate their transform,
                                               squeeze-and-excitation (Hu et al. 2018, fig. 3)
                                               scales its residual branch and keeps the addition

A combine that drops x (e.g. y = x ⊙ σ(f)) is a different architecture, not a point on this axis;
one may be added only under a name that says what it computes. Luong's h̃ = tanh(W_c [c; h]) is the
seq2seq decoder's read-out layer, not a stream combine: it lives in models/seq2seq.py.

Dropout: each combine owns the dropout of its branch and applies it to the branch as it is added,
after the gate, so a dropped unit adds exactly 0 (y = x there). Dropout on f before a gate that
reads f would change the gate of the kept units too. The rate is the block's `dropout_rate`; the
mode (train / eval) is the module's, as for nnx.Dropout.

Every combine is a module `combine(x, fx) -> y`, x, fx, y [..., F] (F the stream's width), built
as cls(dim, *, dropout_rate, dtype, param_dtype, rngs) (dtype / param_dtype: the computation and
parameter dtypes of its layers, as flax's) and registered by name (@COMBINES.register('name'));
make_combine(name, dim, dropout_rate=..., rngs=...) builds one. A new combine is one class here
and its numpy reference in tests/numpy_reference.py (COMBINE_REFERENCES).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.registry import Registry

COMBINES: Registry = Registry('combine')


@COMBINES.register('residual')
class Residual(nnx.Module):
  """y = x + dropout(f). No parameters."""

  def __init__(self, dim: int, *, dropout_rate: float = 0.0, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    del dim, dtype, param_dtype
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x: jax.Array, fx: jax.Array) -> jax.Array:
    # x, fx [..., F] -> [..., F]
    return x + self.dropout(fx)


@COMBINES.register('gate')
class Gate(nnx.Module):
  """y = x + dropout(g ⊙ f), g = σ(W_g [x; f] + b_g), W_g [2F, F], b_g [F].

  The gate is elementwise and per position, and reads both the stream and the branch. It is not
  exactly either paper's gate, by name: a highway layer (Srivastava et al. 2015, eq. 3) computes
  T(x) from x alone and scales its carry by 1 - T (y = T ⊙ H + (1 - T) ⊙ x), where here the carry
  keeps weight 1; SE (Hu et al. 2018, eq. 2-4) computes one gate per channel from the branch
  pooled over space. What this combine shares with both is the multiplicative gate on the branch.

  b_g starts at 0 (W_g at flax's default lecun normal), so g starts centred on σ(0) = 0.5 with no
  prior for or against the branch. Highway networks start b_T negative (-1 to -3) to favour the
  carry path, because there the carry and the branch compete (weights 1 - T and T); here the
  identity path always has weight 1, so a negative bias would only shrink the branch.
  Parameters: 2F·F + F.
  """

  def __init__(self, dim: int, *, dropout_rate: float = 0.0, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.w_g = nnx.Linear(2 * dim, dim, bias_init=nnx.initializers.zeros_init(), dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, fx: jax.Array) -> jax.Array:
    # x, fx [..., F] -> [..., F]
    g = jax.nn.sigmoid(self.w_g(jnp.concatenate([x, fx], axis=-1)))  # [..., F]
    return x + self.dropout(g * fx)


def make_combine(combine: str | Callable[..., nnx.Module], dim: int, *,
                 dropout_rate: float = 0.0, dtype: Any = None, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs) -> nnx.Module:
  """The combine registered as `combine` (or the class it names, when looked up once before)
  for a stream of width `dim` whose branch is dropped at `dropout_rate` in train mode, computing
  in `dtype` with parameters of `param_dtype` (ValueError naming the nearest and the known names
  if the name is unknown)."""
  return COMBINES.resolve(combine)(dim, dropout_rate=dropout_rate, dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)
