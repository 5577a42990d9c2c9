"""A cosine score with a learned temperature per head, registered by tests only: what adding a
score takes (README.md, "Adding a score"): this one module, the score and its numpy reference.

  s(q, k) = g_n · cos(q, k) = g_n · qᵀk / (|q| |k|),   g [N], one temperature per head

`registered()` adds both to their registries for the duration of a `with` block; as a pytest
plugin (`python -m pytest -p tests.cosine_score ...`) the module registers them for the run.
Not a test module (pytest does not collect it).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_zoo.attention import scores
from tests import numpy_reference as ref

NAME = 'cosine'
EPS = 1e-6  # under the square root of |x|²: finite on the chunked kernel's zero padding


class CosineScore(scores.Score):
  """s(q, k) = g_n · qᵀk / (|q| |k|), with |x| = sqrt(xᵀx + EPS), g_n starting at √D."""

  eps = EPS

  def __init__(self, dims: scores.ScoreDims, *, rngs: nnx.Rngs):
    del rngs  # g starts at a constant
    if dims.query_dim != dims.key_dim:
      raise ValueError(f'score {NAME!r} needs query_dim == key_dim, got {dims.query_dim} and '
                       f'{dims.key_dim}')
    self.temperature = nnx.Param(jnp.full((dims.num_heads,), math.sqrt(dims.query_dim)))

  def __call__(self, q, k):
    # q [B, Q, N, D], k [B, K, N, D] -> [B, N, Q, K]
    unit = lambda x: x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + self.eps)
    cos = jnp.einsum('bqnd,bknd->bnqk', unit(q), unit(k))
    return cos * self.temperature[...].astype(cos.dtype)[:, None, None]


def reference(q, k, params):
  """The numpy logits of CosineScore: q [B, Q, N, D], k [B, K, N, D] -> [B, N, Q, K]."""
  unit = lambda x: x / np.sqrt(np.sum(x * x, -1, keepdims=True) + EPS)
  cos = np.einsum('bqnd,bknd->bnqk', unit(q), unit(k))
  return cos * params['temperature'][None, :, None, None]


@contextlib.contextmanager
def registered(score: type[scores.Score] = CosineScore) -> Iterator[None]:
  """The score as 'cosine' in attention_zoo.attention.SCORES, and its reference in
  tests/numpy_reference.SCORE_REFERENCES, inside a `with` block only."""
  with scores.SCORES.override(NAME, score), ref.SCORE_REFERENCES.override(NAME, reference):
    yield


_PLUGIN = contextlib.ExitStack()


def pytest_configure(config):  # as a plugin (-p tests.cosine_score): registered for the run
  del config
  _PLUGIN.enter_context(registered())


def pytest_unconfigure(config):
  del config
  _PLUGIN.close()
