"""Names a user chooses from: one small name -> constructor table per axis, and its errors.

Registries are kept for the axes a user picks by name in a config (scores, kernels, combines,
models, tasks, optimizers, schedules). A choice that is local to one module (a cell type, a
pooling) is a literal dict next to its use, read with `choose`, which gives the same error.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

T = TypeVar('T')


def choose(table: Mapping[str, T], name: Any, kind: str) -> T:
  """table[name], or ValueError naming the `kind`, the nearest name and every valid one."""
  if name not in table:
    close = difflib.get_close_matches(str(name), list(table), n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    raise ValueError(f'unknown {kind} {name!r}{hint}; known: {", ".join(sorted(table))}')
  return table[name]


def import_submodules(package: str) -> None:
  """Imports every module of `package` (a module registers its entries when imported), so a new
  model or task file needs no edit to a list of imports."""
  path = importlib.import_module(package).__path__
  for info in pkgutil.iter_modules(path):
    importlib.import_module(f'{package}.{info.name}')


class Registry(Generic[T]):
  """A table of names. `get` on an unknown name raises ValueError listing the known ones.

  Example:
    SCORES = Registry('score')
    @SCORES.register('dot')
    class DotScore: ...
    SCORES.get('dot')
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._table: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def add(obj: T) -> T:
      if name in self._table:
        raise ValueError(f'{self.kind} {name!r} is registered twice')
      self._table[name] = obj
      return obj
    return add

  @contextlib.contextmanager
  def override(self, name: str, obj: T) -> Iterator[T]:
    """Registers `obj` as `name` inside a `with` block only (tests, notebooks)."""
    missing = object()
    old = self._table.get(name, missing)
    self._table[name] = obj
    try:
      yield obj
    finally:
      if old is missing:
        del self._table[name]
      else:
        self._table[name] = old

  def get(self, name: str) -> T:
    return choose(self._table, name, self.kind)

  def names(self) -> list[str]:
    return sorted(self._table)

  def __contains__(self, name: Any) -> bool:
    return name in self._table

  def __iter__(self):
    return iter(sorted(self._table))
