"""results.json: the final metrics, and facts about the run (parameter count, speed, model FLOPs
per step and MFU (flops.py), peak memory, library versions, devices)."""

from __future__ import annotations

import dataclasses
import platform
import resource
import sys
from importlib import metadata
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx

from attention_zoo.train import flops


@dataclasses.dataclass
class Throughput:
  """What the latest run of a workdir did (a resumed run counts its own steps only)."""
  compile_s: float = 0.0  # compiling the train step (and building the evaluator)
  train_s: float = 0.0  # in train steps, logging and checkpoints (evaluation excluded)
  steps: int = 0
  tokens: int = 0  # non-PAD input tokens of this process's batches
  examples: int = 0  # examples of this process's batches (0: steps x batch_size)
  flops_per_step: float | None = None  # model FLOPs of a train step (flops.StepFlops)
  flops_source: str | None = None  # where they come from (flops.step_flops)
  dtype: str = 'float32'  # the compute dtype, whose peak the MFU is against


def results(step: int, train: dict[str, float], evals: dict[str, dict[str, float] | None],
            params: Any, speed: Throughput, batch_size: int) -> dict[str, Any]:
  """The content of results.json (see attention_zoo.train.workdir); `evals`: split -> metrics,
  None for a split the task does not have."""
  out: dict[str, Any] = {'step': step, 'train': train}
  out.update((split, metrics) for split, metrics in evals.items() if metrics is not None)
  train_s = speed.train_s
  out.update(
      num_params=param_count(params),
      compile_s=speed.compile_s,
      train_s=train_s,
      steps_per_s=speed.steps / train_s if train_s else None,
      examples_per_s=((speed.examples * jax.process_count() or speed.steps * batch_size) / train_s
                      if train_s else None),
      tokens_per_s=(speed.tokens * jax.process_count() / train_s
                    if (speed.tokens and train_s) else None),
      flops_per_step=speed.flops_per_step,
      flops_source=speed.flops_source,
      **flops.utilization(speed.flops_per_step, train_s, speed.steps,
                          num_devices=jax.device_count(), dtype=speed.dtype),
      devices=devices(),
      versions=versions(),
      **peak_memory())
  return out


def platform_name(device: Any = None) -> str:
  """The lowering platform of `device` (default: jax.devices()[0]) as attention.implementations
  names it: 'cpu', 'cuda', 'tpu' (jax calls an NVIDIA GPU's platform 'gpu')."""
  platform = (device or jax.devices()[0]).platform
  return {'gpu': 'cuda'}.get(platform, platform)


def attention_implementation(config: Any, task: Any, batch: dict[str, Any]) -> dict[str, Any]:
  """{'attention_kernel', 'attention_implementation'}: the configured kernel (config.model.kernel,
  None for a model without one) and the implementation the model's attention layers resolve to
  on this device's platform in a train step on `batch`: attention.implementations.for_model on
  the model built abstractly, in train mode (nothing computed); names joined by '+' where
  layers differ, None for a model without attention kernels."""
  from attention_zoo.attention import implementations  # pylint: disable=import-outside-toplevel
  from attention_zoo import build  # pylint: disable=import-outside-toplevel
  platform = platform_name()
  out = {'attention_kernel': config.model.get('kernel')}
  try:
    model = nnx.eval_shape(lambda: build.build_model(config, task))
    model.train()
    layers = implementations.for_model(model, *task.model_inputs(batch), platforms=(platform,))
  except Exception as e:  # pylint: disable=broad-except  # a record: never the run's failure
    logging.warning('the attention implementation could not be resolved: %s: %s',
                    type(e).__name__, e)
    return dict(out, attention_implementation=None,
                attention_implementation_error=f'{type(e).__name__}: {e}'[:300])
  names = sorted({name for per in layers.values() for name in per[platform].split('+')})
  return dict(out, attention_implementation='+'.join(names) or None)


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
