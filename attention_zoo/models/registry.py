"""Models by name. Each model module registers its constructors with @register_model(name)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from attention_zoo.registry import Registry

MODELS: Registry = Registry('model')
register_model = MODELS.register

# Modules whose import registers models; imported lazily so that `attention_zoo.models` is cheap.
_MODULES = ('seq2seq', 'transformer', 'resnet', 'memory')


def _load_all() -> None:
  for name in _MODULES:
    importlib.import_module(f'attention_zoo.models.{name}')


def constructor_params(name: str) -> dict[str, inspect.Parameter]:
  """The keyword parameters of the model registered as `name` (self excluded).

  nnx's metaclass hides a Module class's __init__ signature from inspect.signature(cls), so a
  class is inspected through its __init__.
  """
  _load_all()
  ctor = MODELS.get(name)
  params = inspect.signature(ctor.__init__ if inspect.isclass(ctor) else ctor).parameters
  return {k: p for k, p in params.items() if k != 'self'}


def get_model(name: str, **kwargs: Any):
  """Builds the model registered as `name` with `**kwargs` (config.model plus task sizes and rngs).

  An unknown name, or an option the model does not take, raises ValueError listing the valid ones.
  """
  params = constructor_params(name)
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
      valid = sorted(k for k in params if k != 'rngs')
      raise ValueError(f'model {name!r}: unknown option(s) {unknown}; valid options: {valid}')
  return MODELS.get(name)(**kwargs)
