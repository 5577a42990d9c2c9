"""Tasks by name: each task module registers its builder function with @register_task(name)."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from attention_zoo.data.base import Task
from attention_zoo.registry import Registry, import_submodules

TASKS: Registry = Registry('task')
register_task = TASKS.register


def _load_all() -> None:
  import_submodules('attention_zoo.data')  # every module registers its entries on import


def task_names() -> list[str]:
  _load_all()
  return TASKS.names()


def get_task(config_task: Mapping[str, Any]) -> Task:
  """The Task named config_task['name'], built with the other entries as options.

  Accepts a dict or an ml_collections ConfigDict. An unknown name or option raises ValueError
  listing the valid ones.
  """
  options = dict(config_task.to_dict() if hasattr(config_task, 'to_dict') else config_task)
  if 'name' not in options:
    raise ValueError(f'task config has no "name"; known tasks: {", ".join(task_names())}')
  name = options.pop('name')
  _load_all()
  builder = TASKS.get(name)
  params = inspect.signature(builder).parameters
  unknown = sorted(set(options) - set(params))
  if unknown:
    raise ValueError(f'task {name!r}: unknown option(s) {unknown}; valid options: {sorted(params)}')
  return builder(**options)
