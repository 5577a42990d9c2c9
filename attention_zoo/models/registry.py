"""Models by name. Each model module registers its constructors with @register_model(name)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from attention_zoo.registry import Registry, import_submodules

MODELS: Registry = Registry('model')
register_model = MODELS.register


def _load_all() -> None:
  import_submodules('attention_zoo.models')  # every module registers its entries on import


def constructor_params(name: str) -> dict[str, inspect.Parameter]:
  """The keyword parameters of the model registered as `name` (self excluded).

  nnx's metaclass hides a Module class's __init__ signature from inspect.signature(cls), so a
  class is inspected through its __init__. A constructor whose **kwargs fill a dataclass of
  options names it in `kwargs_dataclass` (the Transformers' **block -> BlockOptions): its fields
  are listed in place of **kwargs, so that every option is known by name.
  """
  _load_all()
  ctor = MODELS.get(name)
  params = inspect.signature(ctor.__init__ if inspect.isclass(ctor) else ctor).parameters
  out = {k: p for k, p in params.items() if k != 'self'}
  options = getattr(ctor, 'kwargs_dataclass', None)
  if options is not None:
    out = {k: p for k, p in out.items() if p.kind is not p.VAR_KEYWORD}
    for field in dataclasses.fields(options):
      out.setdefault(field.name, inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                                                   default=field.default))
  return out


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
