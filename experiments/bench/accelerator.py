r"""The `accelerator` section of the benchmark: the one check to run when a GPU or TPU is lent.

  python -m experiments.bench accelerator --json=PATH [--size=full|tiny] [--parts=...]

At most --budget_s (10 minutes) on one GPU or TPU host (each part has its share, DEADLINES); on a
host without an accelerator it runs the `tiny` sizes by default, within a few minutes. It runs
and reports, in this order:
  tests      the tests marked `accelerator` (pytest -m accelerator; they skip on CPU);
  attention  fwd+bwd of each score x kernel x implementation (scores.SCORES, kernels.KERNELS,
             'auto' and each of implementations.IMPLEMENTATIONS the combination takes; refused
             ones are listed with the reason) at L = 1k..16k in bf16 (tiny: L = 128..512 in f32,
             the dtype of the CPU kernels), B = 4, N = 8, D = 64 (tiny: 2, 4, 32), causal, with
             the compiled program's memory (XLA's memory analysis);
  multi30k   the Multi30k Transformer's train step (the loop's compiled step, padded batches of
             its real data: $ATTENTION_ZOO_DATA) at `small` and `base` (tiny: `tiny`), float32
             against bfloat16 (model.dtype), tokens/s;
  seeds      a seed group of the demo's Transformer (the loop's seed axis, the platform's seed
             map) against its seeds trained one after another (experiments/bench/seeds.py).
Every row: the implementation that ran, the compile time, the model FLOPs of a call and their
source, FLOP/s and MFU against the device's peak (attention_zoo/train/flops.py; on CPU the
highest matmul rate the process measured, again after each part). The JSON:
{'device', 'size', 'load', 'tests', 'rows': [...], 'skipped': [...]}.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from attention_zoo import build
from attention_zoo.attention import implementations, kernels, scores
from attention_zoo.train import batching, flops, optim, run_info
from attention_zoo.train import steps as steps_lib
from configs import multi30k_transformer

PARTS = ('tests', 'attention', 'multi30k', 'seeds')
flags.DEFINE_string('json', None, 'Write {"device", "rows", ...} to this file.')
flags.DEFINE_enum('size', None, ['full', 'tiny'], 'Sizes of every part (default: full on a GPU '
                  'or TPU, tiny on CPU).')
flags.DEFINE_list('parts', list(PARTS), f'Parts to run, of {PARTS}.')
flags.DEFINE_list('lengths', None, 'Attention lengths (default: the size\'s).')
flags.DEFINE_list('scores', None, 'Scores of the attention part (default: every registered).')
flags.DEFINE_list('kernels', None, 'Kernels of the attention part (default: every registered).')
flags.DEFINE_list('implementations', None, "Implementations of the attention part (default: "
                  "'auto' and every registered).")
flags.DEFINE_list('multi30k_sizes', None, 'configs/multi30k_transformer.py sizes (default: '
                  'the size\'s).')
flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes of the multi30k part.')
flags.DEFINE_string('test_paths', None, 'Where pytest looks for accelerator tests (default: '
                    'tests/ on an accelerator, tests/test_accelerator.py on CPU).')
flags.DEFINE_integer('budget_s', 600, 'Parts started after this many seconds are skipped.')
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Size:
  lengths: tuple[int, ...]
  batch: int
  heads: int
  head_dim: int
  attention_dtype: str
  multi30k: tuple[str, ...]
  steps: int  # timed calls per row (the median is reported)
  seeds: int  # S of the seeds part


SIZES = {'full': Size((1024, 2048, 4096, 8192, 16384), 4, 8, 64, 'bfloat16', ('small', 'base'),
                      10, 4),
         'tiny': Size((128, 256, 512), 2, 4, 32, 'float32', ('tiny',), 2, 2)}
_REPO = pathlib.Path(__file__).resolve().parents[2]


# The share of --budget_s by which each part must end (the tests run first, within it): rows
# past their part's deadline are skipped, so a slow part leaves the next ones their time.
DEADLINES = {'attention': 0.5, 'multi30k': 0.8, 'seeds': 1.0}


class Budget:
  """`over(part, what)` is True (and notes the skip) once `part`'s deadline has passed."""

  def __init__(self, seconds: float, skipped: list[dict]):
    self.start, self.seconds, self.skipped = time.perf_counter(), seconds, skipped

  def over(self, part: str, what: str) -> bool:
    deadline = DEADLINES[part] * self.seconds
    if time.perf_counter() - self.start < deadline:
      return False
    self.skipped.append({'row': what, 'reason': f'time budget: {part} ends at {deadline:.0f} s '
                                                f'of --budget_s={self.seconds:g}'})
    return True


def _median_s(fn: Callable[[], Any], reps: int) -> float:
  """Median seconds of `reps` blocking calls of fn after one warm-up call."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _ran(text: str, platform: str) -> str:
  """The implementation whose custom call the compiled program holds, else 'xla'."""
  for name in implementations.IMPLEMENTATIONS:
    found = implementations.targets(name, platform)
    if found and any(t in text for t in found):
      return name
  return 'xla'


def _row(part: str, name: str, compiled: Any, seconds: float, compile_s: float, dtype: str,
         analytic: Callable[[], float] | None = None, **extra: Any) -> dict:
  """A row: `compiled` called once per `seconds`; its FLOPs, FLOP/s and MFU."""
  count, source = flops.step_flops(compiled, analytic=analytic)
  used = flops.utilization(count, seconds, 1, dtype=dtype, num_devices=1)
  return dict(part=part, name=name, seconds=seconds, compile_s=compile_s, dtype=dtype,
              flops=count, flops_source=source, **used, **extra)


def run_tests(paths: str) -> dict:
  """pytest -m accelerator on `paths` in a child -> {'passed', 'skipped', 'failed', ...}."""
  cmd = [sys.executable, '-m', 'pytest', '-q', '-m', 'accelerator', '-p', 'no:cacheprovider',
         *paths.split(',')]
  proc = subprocess.run(cmd, cwd=_REPO, capture_output=True, text=True, timeout=600)
  counts = {k: int(n) for n, k in re.findall(r'(\d+) (passed|skipped|failed|error)',
                                             proc.stdout.splitlines()[-1] if proc.stdout else '')}
  print(proc.stdout[-2000:], flush=True)
  return {'command': ' '.join(cmd[1:]), 'returncode': proc.returncode,
          **{k: counts.get(k, 0) for k in ('passed', 'skipped', 'failed', 'error')}}


def _combinations(names_scores, names_kernels, names_impls) -> list[tuple[str, str, str, str]]:
  """(score, kernel, implementation, refusal or '') of the asked combinations."""
  out = []
  for score in names_scores:
    for kernel in names_kernels:
      for impl in names_impls:
        try:
          kernels.with_implementation(kernel, impl)
          out.append((score, kernel, impl, ''))
        except ValueError as e:
          out.append((score, kernel, impl, str(e)))
  return out


def attention_rows(size: Size, budget: Budget, skipped: list[dict], args) -> list[dict]:
  """fwd+bwd of each score x kernel x implementation at each length (module docstring)."""
  platform = run_info.platform_name()
  dtype = jnp.dtype(size.attention_dtype)
  b, n, d = size.batch, size.heads, size.head_dim
  combos = _combinations(args.scores or list(scores.SCORES), args.kernels or list(kernels.KERNELS),
                         args.implementations or ['auto', *implementations.IMPLEMENTATIONS])
  rows = []
  for length in [int(x) for x in (args.lengths or size.lengths)]:
    keys = jax.random.split(jax.random.key(length), 3)
    q, k, v = [jax.random.normal(key, (b, length, n, d), jnp.float32).astype(dtype)
               for key in keys]
    for score_name, kernel, impl, refusal in combos:
      name = f'{score_name} / {kernel} / {impl} / L={length}'
      if refusal:
        skipped.append({'row': name, 'reason': refusal})
        continue
      if budget.over('attention', name):
        continue
      score = scores.make_score(score_name, d, d, num_heads=n, rngs=nnx.Rngs(0))  # f32 params
      graphdef, params = nnx.split(score)
      run = kernels.with_implementation(kernel, impl)
      loss = lambda p, q, k, v: jnp.sum(run(nnx.merge(graphdef, p), q, k, v, causal=True)[0]
                                        .astype(jnp.float32) ** 2)
      grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
      start = time.perf_counter()
      try:
        compiled = grad.lower(params, q, k, v).compile()
        compile_s = time.perf_counter() - start
        seconds = _median_s(lambda: compiled(params, q, k, v), size.steps)
      except Exception as e:  # pylint: disable=broad-except  # refusals, out of memory: a reason
        skipped.append({'row': name, 'reason': f'{type(e).__name__}: {str(e)[:300]}'})
        continue
      memory = compiled.memory_analysis()
      dot = getattr(score, 'fused_scale', None) is not None
      analytic = (lambda: 3 * 4.0 * b * n * length * length * d) if dot else None  # 3 x QKᵀ, PV
      rows.append(_row('attention', name, compiled, seconds, compile_s, size.attention_dtype,
                       analytic, implementation=_ran(compiled.as_text(), platform),
                       score=score_name, kernel=kernel, asked=impl, length=length,
                       memory_bytes=(memory.temp_size_in_bytes + memory.argument_size_in_bytes
                                     + memory.output_size_in_bytes) if memory else None))
      print(_line(rows[-1]), flush=True)
  return rows


def multi30k_rows(size: Size, budget: Budget, skipped: list[dict], args) -> list[dict]:
  """The Multi30k Transformer's train step, f32 against bf16 (module docstring)."""
  rows = []
  for config_size in args.multi30k_sizes or size.multi30k:
    for dtype in args.dtypes:
      name = f'multi30k_transformer size={config_size} {dtype}'
      if budget.over('multi30k', name):
        continue
      config = multi30k_transformer.get_config(f'size={config_size}')
      if 'dtype' in config.model:
        config.model.dtype = dtype
      elif dtype != 'float32':
        skipped.append({'row': name, 'reason': 'config.model has no dtype field'})
        continue
      config.train.batching = 'padded'  # one compiled step (the buckets would compile 8)
      rows.append(_train_row(name, config, size.steps))
      print(_line(rows[-1]), flush=True)
  return rows


def _train_row(name: str, config, reps: int) -> dict:
  """A row of the loop's compiled train step of `config` on its first train batches."""
  task = build.get_task(config)
  tc = config.train
  mesh = batching.make_mesh()
  tx = optim.make_optimizer(tc, config.model)
  g_train, _, state = steps_lib.init_state(build.build_model(config, task), tx,
                                           jax.local_devices()[0])
  state = batching.replicate(state, mesh)
  stream = batching.train_batches(task, tc, config.seed)
  host = [stream.batch(s) for s in range(reps + 1)]
  key = batching.replicate(jax.random.key(config.seed), mesh)
  start = time.perf_counter()
  step, leaves, _ = steps_lib.compile_train_step(
      g_train, task, tx, optim.learning_rate(tc, config.model), state,
      batching.to_device(host[0], mesh), key, batching.replicated(mesh),
      label_smoothing=tc.label_smoothing)
  compile_s = time.perf_counter() - start
  leaves, _ = step(leaves, batching.to_device(host[0], mesh), key)  # warm-up
  jax.block_until_ready(leaves)
  begin = time.perf_counter()
  for h in host[1:]:
    leaves, metrics = step(leaves, batching.to_device(h, mesh), key)
  jax.block_until_ready((leaves, metrics))
  seconds = (time.perf_counter() - begin) / reps
  tokens = np.mean([batching.count_tokens(h, task.input_keys) for h in host[1:]])
  count = flops.analytic_count(config.model_name, config.model.to_dict(),
                               build.model_dims(config.model_name, task))
  attention = run_info.attention_implementation(config, task, host[0])
  return _row('multi30k', name, step, seconds, compile_s, config.model.get('dtype', 'float32'),
              count and (lambda: count(host[0])), tokens_per_s=tokens / seconds,
              batch_size=tc.batch_size, loss=float(metrics['loss']),
              implementation=attention['attention_implementation'],
              implementation_error=attention.get('attention_implementation_error'))


def seeds_rows(size: Size, budget: Budget, skipped: list[dict]) -> list[dict]:
  """A seed group of the demo's Transformer against its seeds one after another."""
  from experiments.bench import seeds as bench_seeds  # pylint: disable=import-outside-toplevel
  from attention_zoo.train import seeds  # pylint: disable=import-outside-toplevel
  args = types.SimpleNamespace(quick=size.lengths == SIZES['tiny'].lengths, warmup=1,
                               windows=3, steps=size.steps)
  config = bench_seeds.model_config('transformer', args.quick)
  rows, attention = [], None
  for way in ('separate', seeds.default_seed_map()):
    name = f'demo transformer, {size.seeds} seeds, {way}'
    if budget.over('seeds', name):
      continue
    got = bench_seeds.measure('transformer', way, size.seeds, args)
    if attention is None:  # the dataset is built by now
      task = build.get_task(config)
      attention = run_info.attention_implementation(
          config, task, batching.train_batches(task, config.train, 0).batch(0))
    used = flops.utilization(got['flops_per_step'], got['ms_per_step'] / 1e3, 1,
                             dtype=config.model.get('dtype', 'float32'))
    rows.append(dict(part='seeds', name=name, seconds=got['ms_per_step'] / 1e3,
                     compile_s=got['compile_s'], dtype=config.model.get('dtype', 'float32'),
                     flops=got['flops_per_step'], flops_source=got['flops_source'], **used,
                     implementation=attention['attention_implementation'], seeds=size.seeds,
                     way=way))
    print(_line(rows[-1]), flush=True)
  return rows


def _line(row: dict) -> str:
  fmt = lambda x, spec: '-' if x is None else format(x, spec)
  extra = ''
  if row.get('memory_bytes') is not None:
    extra += f', {row["memory_bytes"] / 2 ** 30:.2f} GiB'
  if row.get('tokens_per_s') is not None:
    extra += f', {row["tokens_per_s"]:,.0f} tokens/s'
  rate = row['flop_per_s'] and row['flop_per_s'] / 1e9
  return (f'| {row["name"]} | {row["implementation"]} | {row["seconds"] * 1e3:.2f} ms{extra} | '
          f'compile {row["compile_s"]:.1f} s | {fmt(rate, ".1f")} GFLOP/s '
          f'({row["flops_source"]}) | MFU {fmt(row["mfu"], ".4f")} |')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  unknown = set(FLAGS.parts) - set(PARTS)
  if unknown:
    raise app.UsageError(f'--parts: unknown {sorted(unknown)}; valid: {list(PARTS)}')
  run(FLAGS)


def run(args) -> dict:
  on_cpu = jax.default_backend() == 'cpu'
  size_name = args.size or ('tiny' if on_cpu else 'full')
  size = SIZES[size_name]
  device = jax.devices()[0]
  load_before = os.getloadavg()
  print(f'bench accelerator: {device.device_kind} ({device.platform}, {jax.device_count()} '
        f'device(s)), size {size_name}, parts {",".join(args.parts)}; load average '
        f'{" ".join(f"{x:.2f}" for x in load_before)}', flush=True)
  skipped: list[dict] = []
  budget = Budget(args.budget_s, skipped)
  out: dict[str, Any] = {'device': {'kind': device.device_kind, 'platform': device.platform,
                                    'count': jax.device_count()},
                         'size': size_name, 'rows': [], 'skipped': skipped}
  parts = {'attention': lambda: attention_rows(size, budget, skipped, args),
           'multi30k': lambda: multi30k_rows(size, budget, skipped, args),
           'seeds': lambda: seeds_rows(size, budget, skipped)}
  out['part_s'] = {}
  for part in PARTS:
    if part not in args.parts:
      continue
    start = time.perf_counter()
    if part == 'tests':
      out['tests'] = run_tests(args.test_paths or ('tests/test_accelerator.py' if on_cpu
                                                   else 'tests'))
    else:
      out['rows'] += parts[part]()
    out['part_s'][part] = time.perf_counter() - start
    if on_cpu:  # the peak again after each part: the highest is kept (flops.measured_cpu_peak)
      for dtype in {r['dtype'] for r in out['rows']}:
        flops.measured_cpu_peak(dtype, again=True)
  print('seconds per part: ' + ', '.join(f'{k} {v:.1f}' for k, v in out['part_s'].items()))
  if on_cpu:  # every row against the highest matmul rate this process measured
    for r in out['rows']:
      r.update(flops.utilization(r['flops'], r['seconds'], 1, dtype=r['dtype']))
  out['load'] = {'before': list(load_before), 'after': list(os.getloadavg())}
  for s in skipped:
    print(f'skipped {s["row"]}: {s["reason"][:160]}')
  print(f'load average {" ".join(f"{x:.2f}" for x in out["load"]["after"])} after')
  if args.json:
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.json).write_text(json.dumps(out, indent=1))
    print(f'wrote {args.json}')
  return out
