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
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, TypeVar

T = TypeVar('T')


def _nearest(name: Any, names: Iterable[str]) -> str:
  """' (did you mean 'x'?)' for the nearest of `names` (difflib), or ''."""
  close = difflib.get_close_matches(str(name), list(names), n=1)
  return f' (did you mean {close[0]!r}?)' if close else ''


def choose(table: Mapping[str, T], name: Any, kind: str) -> T:
  """table[name], or ValueError naming the `kind`, the nearest name and every valid one."""
  if name not in table:
    raise ValueError(f'unknown {kind} {name!r}{_nearest(name, table)}; known: '
                     f'{", ".join(sorted(table))}')
  return table[name]


def check_options(given: Iterable[str], valid: Iterable[str], what: str) -> None:
  """ValueError unless every option name `given` is `valid`: it names `what` takes them (a model,
  say), each unknown one with its nearest valid name, and every valid one."""
  valid = sorted(valid)
  unknown = sorted(set(given) - set(valid))
  if unknown:
    named = ', '.join(f'{name!r}{_nearest(name, valid)}' for name in unknown)
    raise ValueError(f'{what}: unknown option(s) {named}; valid options: {valid}')


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

  def resolve(self, entry: str | T) -> T:
    """get(entry) for a name; an entry that was looked up before (e.g. once, by an options
    dataclass, for every layer it builds) is returned as it is."""
    return self.get(entry) if isinstance(entry, str) else entry

  def names(self) -> list[str]:
    return sorted(self._table)

  def __contains__(self, name: Any) -> bool:
    return name in self._table

  def __iter__(self):
    return iter(sorted(self._table))
