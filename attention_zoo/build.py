"""A config -> its task and its model: what training and analysis both start from.

  task = get_task(config)                 # attention_zoo.data.get_task(config.task)
  model = build_model(config, task)       # models.get_model(config.model_name, **config.model,
                                          #   **the task sizes it takes, rngs=nnx.Rngs(config.seed))
"""

from __future__ import annotations

from typing import Any

import ml_collections
from flax import nnx

from attention_zoo.data.base import Task


def get_task(config: ml_collections.ConfigDict) -> Task:
  """The task named by config.task (built, or read from its dataset cache)."""
  from attention_zoo import data  # pylint: disable=import-outside-toplevel
  return data.get_task(config.task)


def model_dims(model_name: str, task: Task) -> dict[str, Any]:
  """The task sizes (task.model_dims) that the model takes: those it was registered with
  (models.registry.register_model's task_dims), or all of them."""
  from attention_zoo.models import registry  # pylint: disable=import-outside-toplevel
  return registry.task_dims(model_name, task.model_dims)


def build_model(config: ml_collections.ConfigDict, task: Task,
                rngs: nnx.Rngs | None = None) -> nnx.Module:
  """The registry model with config.model and the task's sizes, initialized from `rngs`
  (default nnx.Rngs(config.seed); the loop's seed axis passes nnx.Rngs(key(seed)), the same
  keys)."""
  from attention_zoo.models import get_model  # pylint: disable=import-outside-toplevel
  return get_model(config.model_name, rngs=rngs if rngs is not None else nnx.Rngs(config.seed),
                   **model_dims(config.model_name, task), **config.model.to_dict())
