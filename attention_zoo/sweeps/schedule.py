"""Which run of a sweep starts next.

The first run of every variant starts first, in listing order (its compile fills JAX's persistent
compilation cache, which the variant's other seeds then hit); the rest start longest variant
first, by the wall time of their finished seeds, so that no worker idles at the end.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sweep.py imports this module
  from attention_zoo.sweeps.sweep import Run


class Scheduler:
  """Which run starts next (thread-safe): each variant's first run, then the longest variants.

  A variant whose first run is still going waits behind everything else: starting its other
  seeds then would compile the same program again instead of reading it from the cache.
  """

  def __init__(self, runs: list[Run]):
    self._pending = list(runs)
    self._started: collections.Counter[str] = collections.Counter()
    self._seconds: dict[str, list[float]] = collections.defaultdict(list)
    self._lock = threading.Lock()

  def _priority(self, index: int, run: Run) -> tuple:
    v = run.variant
    if not self._started[v]:
      return (0, index)
    if not self._seconds[v]:
      return (2, index)
    return (1, -sum(self._seconds[v]) / len(self._seconds[v]), index)

  def next(self) -> Run | None:
    with self._lock:
      if not self._pending:
        return None
      best = min(range(len(self._pending)), key=lambda i: self._priority(i, self._pending[i]))
      run = self._pending.pop(best)
      self._started[run.variant] += 1
      return run

  def finished(self, run: Run, seconds: float):
    with self._lock:
      self._seconds[run.variant].append(seconds)
