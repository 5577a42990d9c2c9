"""Which run of a sweep starts next.

The first run of every variant starts first, in listing order (its compile fills JAX's persistent
compilation cache, which the variant's other seeds then hit); the rest start longest variant
first, by the wall time of their finished seeds, so that no worker idles at the end.
"""

from __future__ import annotations

import collections
import threading
from typing import Protocol


class Unit(Protocol):  # what the Scheduler orders: a groups.Group
  variant: str


class Scheduler:
  """Which unit (a run, or a group of seeds) starts next (thread-safe): each variant's first,
  then the longest variants.

  A variant whose first run is still going waits behind everything else: starting its other
  seeds then would compile the same program again instead of reading it from the cache.
  """

  def __init__(self, units: list[Unit]):
    self._pending = list(units)
    self._started: collections.Counter[str] = collections.Counter()
    self._seconds: dict[str, list[float]] = collections.defaultdict(list)
    self._lock = threading.Lock()

  def _priority(self, index: int, unit: Unit) -> tuple:
    v = unit.variant
    if not self._started[v]:
      return (0, index)
    if not self._seconds[v]:
      return (2, index)
    return (1, -sum(self._seconds[v]) / len(self._seconds[v]), index)

  def next(self) -> Unit | None:
    with self._lock:
      if not self._pending:
        return None
      best = min(range(len(self._pending)), key=lambda i: self._priority(i, self._pending[i]))
      unit = self._pending.pop(best)
      self._started[unit.variant] += 1
      return unit

  def finished(self, unit: Unit, seconds: float):
    with self._lock:
      self._seconds[unit.variant].append(seconds)
