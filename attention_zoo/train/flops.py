"""Model FLOPs of a train step, achieved FLOP/s and MFU (model FLOPs utilization).

MFU = (FLOPs of one train step x steps per second) / (peak FLOP/s of the devices), the measure
of Chowdhery et al. (2022), PaLM, appendix B. The FLOPs of a step come from, in this order
(`step_flops`; the record names the source):
  'xla_cost_analysis'  XLA's cost analysis of the compiled step (`compiled.cost_analysis()`:
                       every op, matmuls and elementwise), where no loop of the program repeats
                       a matmul: XLA's HloCostAnalysis counts a while loop's body once.
  'xla_hlo_matmuls'    where a loop does (an RNN's scan, the chunked kernel's key blocks, the
                       'map' seed axis), the dot and convolution FLOPs of the compiled HLO,
                       each loop's body times its known trip count (`hlo_matmul_flops`).
  'analytic'           where XLA reports nothing, or the program holds custom calls (the native
                       CPU attention kernel, cuDNN, Pallas), whose work XLA counts as 0: a count
                       from the model's sizes (ANALYTIC, e.g. `transformer_step_flops`: 6 x
                       weights x tokens plus the attention products, Kaplan et al. 2020 sec. 2.1).
A model without an analytic count keeps XLA's count, custom calls at 0.

The peak: PEAKS, per device kind and compute dtype, from the vendors' data sheets; on CPU,
the f32 (or bf16) matmul rate measured in this process (`measured_cpu_peak`: at first use, the
highest of its measurements), so the MFU of a CPU run is against what this process's threads
can reach.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


# ---- the FLOPs of a compiled step ----

def cost_analysis_flops(compiled: Any) -> float | None:
  """'flops' of XLA's cost analysis of `compiled` (a jax.stages.Compiled); None where the backend
  gives none. jax returns a dict (0.10) or a list of one dict per program (older versions)."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # backends without it raise various kinds
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get('flops')
  return float(flops) if flops is not None and flops > 0 else None


_COMPUTATION = re.compile(r'^(?:ENTRY )?%?([\w.\-]+) .*\{$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\([^=]*?\)|[\w]+\[[\d,]*\](?:\{[^}]*\})?)'
                          r' ([\w\-]+)\((.*)$')
_SHAPE = re.compile(r'\w+\[([\d,]*)\]')
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


@dataclasses.dataclass
class _Computation:
  flops: float = 0.0
  calls: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # (name, times)
  branches: list[list[str]] = dataclasses.field(default_factory=list)  # conditionals: max


def _dims(shape: str) -> list[int]:
  match = _SHAPE.match(shape)
  return [int(d) for d in match.group(1).split(',') if d] if match else []


def _operands(args: str) -> list[str]:
  # 'f32[2,3]{1,0} %a, %b), lhs_...' or '%a, %b), ...' -> ['a', 'b']
  return re.findall(r'%([\w.\-]+)', args.split(')', 1)[0])


def hlo_matmul_flops(hlo_text: str) -> tuple[float, float]:
  """(dot + convolution FLOPs of an HLO module's text, the same with each loop's body once, as
  XLA's cost analysis counts it: less than the first where a loop repeats matmuls).

  A dot [.., M, N] contracting K: 2·M·N·K per batch element; a convolution: 2 x output
  elements x kernel elements / output features. A while loop's body counts its known trip count
  (XLA's `known_trip_count`; 1 where unknown), a fusion or call once, a conditional its
  costliest branch.
  """
  comps: dict[str, _Computation] = {}
  shapes: dict[str, list[int]] = {}
  entry, current = None, None
  for line in hlo_text.splitlines():
    line = re.sub(r'/\*.*?\*/', '', line)  # e.g. /*index=5*/ inside tuple types
    head = _COMPUTATION.match(line)
    if head and ' = ' not in line:
      current = comps.setdefault(head.group(1), _Computation())
      shapes = {}
      if line.startswith('ENTRY'):
        entry = head.group(1)
      continue
    inst = _INSTRUCTION.match(line)
    if not inst or current is None:
      continue
    name, shape, op, rest = inst.groups()
    shapes[name] = _dims(shape)
    if op == 'dot':
      lhs = shapes.get(_operands(rest)[0], [])
      contracting = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', rest)
      k = math.prod(lhs[int(i)] for i in contracting.group(1).split(',') if i) if contracting \
          else 1
      current.flops += 2.0 * math.prod(shapes[name]) * k
    elif op == 'convolution':
      kernel = shapes.get(_operands(rest)[1], [])
      labels = re.search(r'dim_labels=\w+_(\w+)->', rest)
      out_features = kernel[labels.group(1).index('o')] if labels and kernel else 1
      current.flops += 2.0 * math.prod(shapes[name]) * math.prod(kernel) / max(out_features, 1)
    if op == 'while':
      trip = _TRIP.search(rest)
      times = int(trip.group(1)) if trip else 1
      body = re.search(r'body=%?([\w.\-]+)', rest)
      current.calls.append((body.group(1), times))
    elif op == 'conditional':
      found = re.search(r'branch_computations=\{([^}]*)\}', rest)
      if found:
        current.branches.append(re.findall(r'%?([\w.\-]+)', found.group(1)))
    else:
      for called in re.findall(r'(?:calls|to_apply)=%?([\w.\-]+)', rest):
        current.calls.append((called, 1))

  @functools.cache
  def total(name: str, loops: bool) -> float:
    comp = comps.get(name)
    if comp is None:
      return 0.0
    return (comp.flops + sum((times if loops else 1) * total(c, loops) for c, times in comp.calls)
            + sum(max(total(b, loops) for b in branch) for branch in comp.branches if branch))

  if entry is None:
    return 0.0, 0.0
  return total(entry, True), total(entry, False)


SOURCES = ('xla_cost_analysis', 'xla_hlo_matmuls', 'analytic')  # step_flops' sources, in order

# Analytic counts by model name (config.model_name): fn(config.model, the task's model_dims, the
# batch {key: array or shape}) -> FLOPs of one train step.
ANALYTIC: dict[str, Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], float]] = {}

def custom_calls(hlo_text: str) -> list[str]:
  """The custom-call targets of an HLO module's text (sorted, distinct): work XLA cannot count."""
  return sorted(set(re.findall(r'custom_call_target="([^"]+)"', hlo_text)))


def step_flops(compiled: Any, *, analytic: Callable[[], float] | None = None,
               partitions: int = 1) -> tuple[float | None, str | None]:
  """(FLOPs of one call of the compiled step, their source); (None, None) where no source gives
  a count. The order of the module docstring, except that a program with custom calls (whose
  work XLA counts as 0) takes the analytic count where there is one. `analytic`: the count from
  the model's sizes (of the whole step); `partitions`: the devices the batch is split over (XLA
  counts the program of one device)."""
  try:
    text = compiled.as_text()
    matmuls, body_once = hlo_matmul_flops(text)
    opaque = custom_calls(text)
  except Exception:  # pylint: disable=broad-except  # a backend without HLO text
    matmuls, body_once, opaque = 0.0, 0.0, []
  if opaque and analytic is not None:
    return float(analytic()), 'analytic'
  flops = cost_analysis_flops(compiled)
  if flops is not None and matmuls <= body_once:  # no loop repeats a matmul
    return flops * partitions, 'xla_cost_analysis'
  if matmuls > 0:
    return matmuls * partitions, 'xla_hlo_matmuls'
  if analytic is not None:
    return float(analytic()), 'analytic'
  return None, None


class StepFlops:
  """The FLOPs of a loop's compiled train steps (one per batch shape, e.g. length buckets) and
  their sum over the steps run.

    counter = StepFlops(programs, analytic)   # programs: (a device batch, its compiled step)
    counter.add(batch)                        # at every step
    counter.per_step(), counter.source        # mean FLOPs of the steps added; where from
  """

  def __init__(self, programs: list[tuple[dict[str, Any], Any]],
               analytic: Callable[[dict[str, Any]], float] | None = None):
    from attention_zoo.train import batching  # pylint: disable=import-outside-toplevel
    self._key = batching.shape_key
    self.per_shape: dict[tuple, float | None] = {}
    sources = set()
    for batch, compiled in programs:
      count = None if analytic is None else functools.partial(analytic, batch)
      flops, source = step_flops(compiled, analytic=count, partitions=_partitions(batch))
      self.per_shape[self._key(batch)] = flops
      sources.add(source)
    self.source = sources.pop() if len(sources) == 1 else ','.join(sorted(map(str, sources)))
    if None in self.per_shape.values():  # one shape without a count: no total
      self.source = None
    self.total = 0.0
    self.steps = 0

  def add(self, batch: dict[str, Any]) -> None:
    self.total += self.per_shape.get(self._key(batch)) or 0.0
    self.steps += 1

  def per_step(self) -> float | None:
    """The mean FLOPs of the steps added (None: unknown, or none added)."""
    return self.total / self.steps if self.source is not None and self.steps else None


def _partitions(batch: dict[str, Any]) -> int:
  """The devices a device batch is split over (1: replicated, or a host array)."""
  first = next(iter(batch.values()))
  sharding = getattr(first, 'sharding', None)
  if sharding is None or sharding.is_fully_replicated:
    return 1
  return len(sharding.device_set)


def transformer_step_flops(*, d_model: int, ffn_dim: int, num_layers: int, vocab_size: int,
                           batch_size: int, source_len: int, target_len: int,
                           decoder_layers: int | None = None) -> float:
  """Matmul FLOPs of one train step of an encoder-decoder Transformer (Vaswani et al. 2017).

  Forward, per example (d = d_model, f = ffn_dim, S source, T target positions, V vocabulary):
    encoder layer:  8 d² S (Q, K, V, O) + 4 d f S (FFN) + 4 S² d (QKᵀ and weights·V)
    decoder layer:  12 d² T + 4 d² S (self Q, K, V, O; cross Q, O on T, K, V on S)
                    + 4 d f T + 4 T² d + 4 T S d
    output layer:   2 d V T
  and a train step is 3x the forward (the backward pass: 2x, Kaplan et al. 2020 sec. 2.1), i.e.
  6 x weights x tokens plus the attention products. Causal masking is not subtracted (PaLM's
  convention); the positions are the padded ones the program computes.
  """
  d, f, n_dec = d_model, ffn_dim, num_layers if decoder_layers is None else decoder_layers
  s, t = source_len, target_len
  encoder = num_layers * (8 * d * d * s + 4 * d * f * s + 4 * s * s * d)
  decoder = n_dec * (12 * d * d * t + 4 * d * d * s + 4 * d * f * t + 4 * t * t * d
                     + 4 * t * s * d)
  return 3.0 * batch_size * (encoder + decoder + 2 * d * vocab_size * t)


def _transformer(model: dict[str, Any], dims: dict[str, Any], batch: dict[str, Any]) -> float:
  """transformer_step_flops of config.model_name 'transformer' (models.transformer.EncoderDecoder)
  on a batch {'source' [B, S], 'target_in' [B, T], ...}."""
  size, source_len = np.shape(batch['source'])[-2:]
  return transformer_step_flops(d_model=model['d_model'], ffn_dim=model['ffn_dim'],
                                num_layers=model['num_layers'],
                                vocab_size=dims['tgt_vocab_size'], batch_size=size,
                                source_len=source_len,
                                target_len=np.shape(batch['target_in'])[-1])


ANALYTIC['transformer'] = _transformer


def analytic_count(model_name: str, model: dict[str, Any], dims: dict[str, Any],
                   seeds: int = 1) -> Callable[[dict[str, Any]], float] | None:
  """batch -> the ANALYTIC count of model `model_name` on it, `seeds` runs of it (a seed group's
  step); None for a model without one."""
  count = ANALYTIC.get(model_name)
  if count is None:
    return None
  return lambda batch: seeds * count(model, dims, batch)


# ---- peaks ----

@dataclasses.dataclass(frozen=True)
class Peak:
  """Dense peak FLOP/s of one device (one jax device) per compute dtype, and where it is from."""
  bfloat16: float
  float32: float | None  # None: not stated; f32 runs are then measured against bfloat16
  source: str


# jax device_kind -> Peak. One jax device: a GPU, or a TPU chip (v4: one megacore chip).
# float32 on GPUs is TF32 on the tensor cores, which XLA uses for f32 matmuls at jax's default
# precision; on TPUs an f32 matmul at default precision runs as one bf16 pass.
_H100_SXM = Peak(989.4e12, 494.7e12, 'NVIDIA H100 Tensor Core GPU data sheet (2023), SXM5: '
                 'BF16 1,979 TFLOPS with sparsity = 989.4 dense; TF32 494.7 dense')
PEAKS: dict[str, Peak] = {
    'NVIDIA H100 80GB HBM3': _H100_SXM,
    'NVIDIA H100 SXM5 80GB': _H100_SXM,
    'NVIDIA H100 PCIe': Peak(756.5e12, 378.0e12, 'NVIDIA H100 data sheet (2023), PCIe: BF16 '
                             '756.5 dense, TF32 378 dense'),
    'NVIDIA H200': Peak(989.4e12, 494.7e12, 'NVIDIA H200 data sheet (2024), SXM: BF16 989 '
                        'dense (1,979 sparse), TF32 494.7 dense'),
    'NVIDIA A100-SXM4-80GB': Peak(312e12, 156e12, 'NVIDIA A100 data sheet (2021): BF16 312, '
                                  'TF32 156 TFLOPS dense'),
    'NVIDIA A100-SXM4-40GB': Peak(312e12, 156e12, 'NVIDIA A100 data sheet (2021): BF16 312, '
                                  'TF32 156 TFLOPS dense'),
    'NVIDIA A100 80GB PCIe': Peak(312e12, 156e12, 'NVIDIA A100 data sheet (2021): BF16 312, '
                                  'TF32 156 TFLOPS dense'),
    'TPU v4': Peak(275e12, None, 'Google Cloud TPU v4 documentation: 275 TFLOPS bf16 per chip; '
                   'Jouppi et al. (2023), ISCA'),
    'TPU v5 lite': Peak(197e12, None, 'Google Cloud TPU v5e documentation: 197 TFLOPS bf16 per '
                        'chip'),
    'TPU v5': Peak(459e12, None, 'Google Cloud TPU v5p documentation: 459 TFLOPS bf16 per chip'),
}


_CPU_PEAKS: dict[str, float] = {}  # dtype -> the highest matmul rate measured in this process


def measured_cpu_peak(dtype: str = 'float32', *, again: bool = False) -> float:
  """The highest FLOP/s this process has measured for the fastest of 8 [1024, 1024] x
  [1024, 1024] jnp matmuls in `dtype` on its default device (2·1024³ each): measured at first
  use, and again when `again` (on a shared machine a later measurement may find more)."""
  key = str(jnp.dtype(dtype))
  if again or key not in _CPU_PEAKS:
    _CPU_PEAKS[key] = max(_CPU_PEAKS.get(key, 0.0), _matmul_rate(key))
  return _CPU_PEAKS[key]


def _matmul_rate(dtype: str, size: int = 1024, reps: int = 8) -> float:
  x = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(x))  # compile
  best = math.inf
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(matmul(x))
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def device_peak(device: Any = None, dtype: str = 'float32') -> tuple[float | None, str]:
  """(peak FLOP/s of one `device` (default: jax.devices()[0]) in compute `dtype`, its source);
  (None, why) for an accelerator missing from PEAKS."""
  device = device or jax.devices()[0]
  if device.platform == 'cpu':
    return measured_cpu_peak(dtype), (f'measured: fastest 1024² {dtype} jnp matmul in this '
                                      'process')
  peak = PEAKS.get(device.device_kind)
  if peak is None:
    return None, f'device kind {device.device_kind!r} not in flops.PEAKS ({sorted(PEAKS)})'
  if dtype == 'float32' and peak.float32 is not None:
    return peak.float32, peak.source
  return peak.bfloat16, peak.source + ('' if dtype == 'bfloat16' else
                                       f' (bf16 peak: {dtype} runs as bf16 passes)')


def utilization(flops: float | None, seconds: float, steps: int, *, num_devices: int = 1,
                dtype: str = 'float32', device: Any = None) -> dict[str, Any]:
  """{'flop_per_s', 'mfu', 'peak_flop_per_s', 'peak_source'}: `steps` steps of `flops` each in
  `seconds`, against num_devices x the device's peak (on CPU: the measured peak of each process,
  whose devices share its cores); flop_per_s and mfu None when unknown."""
  device = device or jax.devices()[0]
  peak, source = device_peak(device, dtype)
  achieved = flops * steps / seconds if flops and seconds > 0 and steps else None
  if device.platform == 'cpu':  # the CPU devices of a process share its cores: one peak each
    num_devices = jax.process_count()
  total = peak * num_devices if peak else None
  return {'flop_per_s': achieved, 'mfu': achieved / total if achieved and total else None,
          'peak_flop_per_s': total, 'peak_source': source}
