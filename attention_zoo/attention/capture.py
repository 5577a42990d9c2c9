"""Reading what modules sow: attention weights and SE channel weights by module path.

Layers sow when built with capture_weights=True (`nnx.sow(nnx.Intermediate, name, value)`);
`captured` runs a function of a model and returns them with the module path joined by '/'.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx

NAMES = ('attention_weights', 'se_weights')  # what the zoo's layers sow


def captured(fn: Callable[..., Any], *args: Any,
             names: tuple[str, ...] = NAMES) -> tuple[Any, dict[str, jax.Array]]:
  """Runs fn(*args) (a model or a bound model method) and collects its sown values.

  Returns (fn's output, {'decoder/layers/0/cross_attn/attention_weights': array, ...}): each key
  is the sowing module's path and the value's name; the last value sown under a name wins.
  """
  out, inter = nnx.capture(fn, nnx.Intermediate)(*args)
  found = {}
  for path, value in nnx.to_flat_state(inter):
    keys = [str(p) for p in path]
    name = next((n for n in names if n in keys), None)
    if name is None:
      continue
    value = value.get_value() if hasattr(value, 'get_value') else value
    found['/'.join(keys[:keys.index(name) + 1])] = value[-1] if isinstance(value, tuple) else value
  return out, found
