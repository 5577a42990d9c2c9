"""Models by name. Each model module registers its constructors with @register_model(name).

A model checks its own options: a family's options dataclass (transformer_blocks.BlockOptions,
seq2seq.Seq2SeqOptions) or, for a constructor that names its options in its signature, Python's
call itself; `get_model` only words the latter's error like the former's.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Iterable, Mapping, TypeVar

from attention_zoo.registry import Registry, check_options, import_submodules

T = TypeVar('T')

MODELS: Registry = Registry('model')
# name -> the task sizes (Task.model_dims keys) the model takes, for a model registered with
# task_dims; the others take every size their task offers.
TASK_DIMS: dict[str, tuple[str, ...]] = {}
# name -> the platforms on which the seeds of a sweep train this model one process each by
# default, one program over them (lax.map, vmap) being slower there (attention_zoo.train.seeds).
SEEDS_APART: dict[str, tuple[str, ...]] = {}


def register_model(name: str, *, task_dims: Iterable[str] | None = None,
                   seeds_apart_on: Iterable[str] = ()) -> Callable[[T], T]:
  """Registers a model constructor as `name`. task_dims: the task sizes it takes, for a model
  that takes only some of what its tasks offer (a ResNet takes num_classes and in_channels, not
  image_shape); None: every size its task offers. seeds_apart_on: the platforms ('cpu', 'gpu',
  'tpu') where its seeds train one process each by default (`seeds_apart`)."""
  def add(ctor: T) -> T:
    MODELS.register(name)(ctor)
    if task_dims is not None:
      TASK_DIMS[name] = tuple(task_dims)
    if seeds_apart_on:
      SEEDS_APART[name] = tuple(seeds_apart_on)
    return ctor
  return add


def seeds_apart_on(name: str) -> tuple[str, ...]:
  """The platforms where the seeds of model `name` train one process each by default."""
  _load_all()
  return SEEDS_APART.get(name, ())


def options_from(cls: type[T], options: Mapping[str, Any], what: str) -> T:
  """cls(**options) for a model family's options dataclass (`what` names the family in errors);
  an unknown option raises ValueError naming the nearest and the valid ones."""
  check_options(options, [f.name for f in dataclasses.fields(cls) if f.init], what)
  return cls(**options)


def _load_all() -> None:
  import_submodules('attention_zoo.models')  # every module registers its entries on import


def task_dims(name: str, offered: Mapping[str, Any]) -> dict[str, Any]:
  """The sizes of `offered` (a task's model_dims) that the model registered as `name` takes."""
  _load_all()
  MODELS.get(name)  # ValueError naming the known models
  taken = TASK_DIMS.get(name)
  return {k: v for k, v in offered.items() if taken is None or k in taken}


def get_model(name: str, **kwargs: Any):
  """Builds the model registered as `name` with `**kwargs` (config.model plus task sizes and rngs).

  An unknown name, or an option the model does not take, raises ValueError naming the nearest
  and the valid ones.
  """
  _load_all()
  ctor = MODELS.get(name)
  try:
    return ctor(**kwargs)
  except TypeError as err:
    if 'unexpected keyword argument' not in str(err):
      raise
    # A constructor that names its options in its signature: Python refused one of them.
    params = inspect.signature(ctor.__init__ if inspect.isclass(ctor) else ctor).parameters
    check_options(set(kwargs) - {'rngs'}, [k for k in params if k not in ('self', 'rngs')],
                  f'model {name!r}')
    raise  # the call's own keywords were valid: the error comes from inside the model
