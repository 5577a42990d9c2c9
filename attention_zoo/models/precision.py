"""Mixed precision: the computation dtype and the parameter dtype of a model, by name.

Every model family takes `dtype` (the computation: activations, matmuls, attention) and
`param_dtype` (the stored parameters), the two dtypes of flax's own modules (flax examples/wmt's
TransformerConfig, MaxText's `dtype` / `weight_dtype`). The config fields are `model.dtype` and
`model.param_dtype`; both default to float32, which computes exactly what a model without them
computed. With dtype='bfloat16' and param_dtype='float32' (mixed precision) the parameters, the
optimizer state built on them and the gradients stay float32; each layer casts its float32
parameters to bfloat16 where it uses them, and the gradient flows back through that cast into
float32. What stays float32 under a bfloat16 computation, whatever the model:
  - softmax statistics: the max m and the normalizer Σ e^{s - m} (log-sum-exp) of every attention
    kernel (attention.kernels.dense upcasts the logits; attention.flash accumulates its running
    m, l and output in float32), and the logits' log-softmax of the loss (train.steps);
  - normalization statistics: LayerNorm and BatchNorm mean and variance (flax computes them in at
    least float32 whatever `dtype` is);
  - the recurrent state of the seq2seq cells (models/seq2seq.py: it accumulates over every step).
tests/test_mixed_precision.py checks these on the traced train step (jaxpr).

This module is the one place that names the dtypes a model may take and checks them: the options
dataclasses (transformer_blocks.BlockOptions, seq2seq.Seq2SeqOptions) and the constructors of
MemN2N and the ResNets call `resolve`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from attention_zoo.registry import choose

# name -> dtype. float16 is left out: without loss scaling its gradients underflow (bfloat16 has
# float32's exponent range, so it needs none).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
DEFAULT = 'float32'  # both dtypes' default: the float32 model


@dataclasses.dataclass(frozen=True)
class Precision:
  """The resolved pair: `dtype` computes, `param_dtype` stores the parameters."""

  dtype: Any  # a jnp dtype of DTYPES
  param_dtype: Any  # a jnp dtype of DTYPES

  @property
  def kwargs(self) -> dict[str, Any]:
    """dtype= and param_dtype=, the keywords of flax's layers (and of this package's)."""
    return {'dtype': self.dtype, 'param_dtype': self.param_dtype}


def resolve(dtype: str = DEFAULT, param_dtype: str = DEFAULT) -> Precision:
  """The dtypes named `dtype` and `param_dtype` (names in DTYPES); an unknown name raises
  ValueError naming the field, the nearest name and the valid ones."""
  return Precision(choose(DTYPES, dtype, 'dtype (model.dtype)'),
                   choose(DTYPES, param_dtype, 'param_dtype (model.param_dtype)'))

