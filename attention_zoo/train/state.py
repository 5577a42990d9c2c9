"""The state a train step carries, and how a model splits into it."""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax
from flax import nnx


class TrainState(NamedTuple):
  step: jax.Array  # int32 scalar: optimizer steps done
  params: nnx.State  # nnx.Param
  opt_state: optax.OptState
  rngs: nnx.State  # nnx.RngState
  other: nnx.State  # every other variable (BatchStat, a model's own step counter, ...)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
  """model -> (graphdef, params, rngs, other); sown intermediates are dropped."""
  graphdef, params, rngs, _, other = nnx.split(
      model, nnx.Param, nnx.RngState, nnx.Intermediate, ...)
  return graphdef, params, rngs, other
