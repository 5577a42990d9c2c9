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


def get_model(name: str, **kwargs: Any):
  """Builds the model registered as `name` with `**kwargs` (config.model plus task sizes and rngs).

  An unknown name, or an option the model does not take, raises ValueError listing the valid ones.
  """
  _load_all()
  ctor = MODELS.get(name)
  params = inspect.signature(ctor).parameters
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
      valid = sorted(k for k in params if k != 'self')
      raise ValueError(f'model {name!r}: unknown option(s) {unknown}; valid options: {valid}')
  return ctor(**kwargs)
