"""Facts about a run for results.json: parameter count, peak memory, library versions, devices."""

from __future__ import annotations

import platform
import resource
import sys
from importlib import metadata
from typing import Any

import jax
import numpy as np


def param_count(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def peak_memory() -> dict[str, int | None]:
  """Peak device bytes (None where the backend does not report it, e.g. CPU) and peak host RSS."""
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  peaks = [s['peak_bytes_in_use'] for s in stats if 'peak_bytes_in_use' in s]
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return {'peak_device_memory_bytes': max(peaks) if peaks else None,
          'peak_host_memory_bytes': int(rss) * (1 if sys.platform == 'darwin' else 1024)}


def versions() -> dict[str, str]:
  out = {'python': platform.python_version()}
  for dist in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'grain', 'numpy'):
    try:
      out[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      pass
  return out


def devices() -> dict[str, Any]:
  return {'num_devices': jax.device_count(), 'num_processes': jax.process_count(),
          'device_kind': jax.devices()[0].device_kind, 'platform': jax.default_backend()}
