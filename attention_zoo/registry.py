"""One small name -> constructor table, used for scores, kernels, models and tasks."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, TypeVar

T = TypeVar('T')


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

  def get(self, name: str) -> T:
    if name not in self._table:
      close = difflib.get_close_matches(str(name), self._table, n=1)
      hint = f' (did you mean {close[0]!r}?)' if close else ''
      raise ValueError(
          f'unknown {self.kind} {name!r}{hint}; known: {", ".join(sorted(self._table))}')
    return self._table[name]

  def names(self) -> list[str]:
    return sorted(self._table)

  def __contains__(self, name: Any) -> bool:
    return name in self._table

  def __iter__(self):
    return iter(sorted(self._table))
