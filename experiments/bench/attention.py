r"""Attention kernels: time, GFLOP/s and memory of every score x kernel beside the references.

  python -m experiments.bench attention [--lengths=256,1024,4096] [--reps=5] [--json=PATH]
  python -m experiments.bench attention --lengths=1024 --scores=additive --kernels=chunked \
      --max_score_elements=3e9   (one of our rows, beside the references)
  python -m experiments.bench attention --lengths=1024,4096 --scores=scaled_dot \
      --kernels=chunked,chunked_xla,dense --native_builds=native,x86-64-v3
      (the native kernel's AVX-512 and AVX2 builds side by side, on an AVX-512 CPU)

Rows: ours (score x kernel, implementation 'auto'; on CPU, dot-product scores also as
`chunked_xla`: the chunked kernel with implementation 'xla', kept off its native custom call,
attention.native; with --native_builds, also as
`chunked_native` once per named build of attention.native: `native` is this CPU's level,
x86-64-v3 the AVX2 one, ...), jax.nn.dot_product_attention, flax nnx.dot_product_attention,
flax nnx.MultiHeadAttention beside our MultiHeadAttention (same weights, F = N·D), PyTorch
scaled_dot_product_attention when torch is importable, and this process's f32 matmul rate.
The first line names the CPU and its instruction-set level; each row names its implementation:
`native <level>` (the custom call of that level's build, found in the lowered program: the
`chunked` row says what `auto` chose), `xla`, or `torch <version> (<its CPU capability>)`.
GFLOP/s counts 4·B·N·L²·D for the forward pass and 3x that for forward+backward (the
attention matmuls only; the additive score's tanh work is not counted). Memory is XLA's buffer
assignment of the compiled function (arguments + outputs + temporaries), i.e. its peak; the
native custom call's own scratch is not in it (the memory targets add its bound).
Times are medians over --reps runs after one warm-up, taken in rounds over all the rows of a
length (so that a change in the machine's load falls on every row alike); compare rows of one
run only.
--json writes {"cpu", "level", "rows": [{"score", "kernel", "implementation", "length", "pass":
"fwd" | "fwd+bwd", "ms", "gflops", "memory_gib", "ratio_to_torch"}]}: score and kernel name our
rows (score null for the other libraries' rows, whose kernel is the row's name); ratio_to_torch
= torch SDPA's ms / the row's ms at that length and pass, measured in the same run (null
without torch).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import platform
import re
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from attention_zoo.attention import implementations, kernels, layers, native, scores

KERNELS = (*kernels.KERNELS, 'chunked_xla')  # our kernels' rows (chunked_xla: see above)

flags.DEFINE_list('lengths', ['256', '1024', '4096'], 'Sequence lengths L.')
flags.DEFINE_list('scores', list(scores.SCORES), 'Our rows: these scores only.')
flags.DEFINE_list('kernels', list(KERNELS), 'Our rows: these kernels only.')
flags.DEFINE_integer('reps', 5, 'Timed repetitions per row (median reported).')
flags.DEFINE_integer('batch', 4, 'B.')
flags.DEFINE_integer('heads', 8, 'N.')
flags.DEFINE_integer('head_dim', 64, 'D.')
flags.DEFINE_float('max_gib', 12.0, 'Skip a row whose compiled memory exceeds this.')
flags.DEFINE_float('max_score_elements', 1.1e9,
                   'Skip additive/concat rows whose B·N·L²·A tanh elements exceed this '
                   '(CPU time).')
flags.DEFINE_list('native_builds', [],
                  'Also time these builds of attention.native for the dot-product scores, as '
                  'chunked_native rows: native (this CPU\'s level) or a level '
                  '(x86-64-v2, x86-64-v3, x86-64-v4, armv8-a) that this CPU runs.')
flags.DEFINE_bool('memory_targets', True, 'Also print the long-sequence memory targets.')
flags.DEFINE_string('json', None, 'Also write the rows of every length to this JSON file.')
FLAGS = flags.FLAGS

GIB = 2.0 ** 30
# Tile sizes of the chunked kernel: additive / concat take 128 x 128 tiles, the fastest fwd+bwd
# at L = 1024 on CPU of those tried (64 x 512, 128 x 1024); the other scores take the kernel's
# defaults.
CHUNKS = {'additive': dict(q_block=128, k_block=128), 'concat': dict(q_block=128, k_block=128)}


def _compile(fn, *args):
  """-> (compiled, its memory in bytes, its implementation: see `_implementation`)."""
  lowered = jax.jit(fn).lower(*args)
  compiled = lowered.compile()
  mem = compiled.memory_analysis()
  total = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)
  return compiled, total, _implementation(lowered.as_text())


def _implementation(program: str) -> str:
  """'native <level>' where a lowered program calls a build of attention.native, the name of the
  implementation whose custom call it holds (cudnn, pallas: implementations.TARGETS), else
  'xla'."""
  found = re.search(r'az_flash_fwd_\w+', program)
  if found:
    return next(f'native {lvl}' for lvl in native.LEVELS
                if native.target_names(lvl)[0] == found.group(0))
  return next((name for (name, _), target in implementations.TARGETS.items()
               if target in program), 'xla')


def _machine() -> str:
  """The CPU's name and instruction-set level, e.g. 'AMD EPYC, x86-64-v4 (AVX-512)'."""
  name = platform.processor() or platform.machine()
  try:
    name = next(line.partition(':')[2].strip()
                for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines()
                if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  level = native.host_level()
  return f'{name}, {level} ({native.LEVELS[level].isa})' if level else name


def _median_seconds(compiled, args, reps):
  start = time.perf_counter()
  jax.block_until_ready(compiled(*args))  # warm-up
  warm = time.perf_counter() - start
  times = []
  for _ in range(max(1, min(reps, int(20 / max(warm, 1e-9))))):  # rows over ~20 s: fewer reps
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _fwd_and_grad(apply, params, x):
  """(forward fn, forward+backward fn) of apply(params, *x) -> out, for a sum-of-squares loss."""
  fwd = lambda p, *x: apply(p, *x)
  loss = lambda p, *x: jnp.sum(apply(p, *x).astype(jnp.float32) ** 2)
  bwd = jax.grad(loss, argnums=tuple(range(len(x) + 1)))
  return fwd, bwd


@dataclasses.dataclass
class _Timing:
  """A cell waiting for `_time_rows`: one blocking call of the row's pass, its FLOPs and memory."""
  run: Callable[[], object]
  flop: float
  gib: float
  reps: int = 0
  seconds: list[float] = dataclasses.field(default_factory=list)


def _row(name, apply, params, x, flop_fwd):
  """A row of compiled passes (timed later, with the others, by `_time_rows`)."""
  fwd, both = _fwd_and_grad(apply, params, x)
  out = {'name': name}
  for tag, fn, flop in (('fwd', fwd, flop_fwd), ('fwd+bwd', both, 3 * flop_fwd)):
    compiled, mem, out['impl'] = _compile(fn, params, *x)
    if mem > FLAGS.max_gib * GIB:
      out[tag] = f'skipped: needs {mem / GIB:.1f} GiB'
      continue
    out[tag] = _Timing(lambda c=compiled: jax.block_until_ready(c(params, *x)), flop, mem / GIB)
  return out


def _time_rows(rows, reps):
  """Times every pending cell: a warm-up each, then --reps rounds over all the cells in turn, so
  that a change in the machine's load falls on every row alike; each cell -> (median ms,
  GFLOP/s, GiB). A cell whose warm-up took over ~1/reps of 20 s gets fewer rounds."""
  cells = [(r, tag) for r in rows for tag in ('fwd', 'fwd+bwd') if isinstance(r[tag], _Timing)]
  for r, tag in cells:
    start = time.perf_counter()
    r[tag].run()
    r[tag].reps = max(1, min(reps, int(20 / max(time.perf_counter() - start, 1e-9))))
  for i in range(reps):
    for r, tag in cells:
      if i < r[tag].reps:
        start = time.perf_counter()
        r[tag].run()
        r[tag].seconds.append(time.perf_counter() - start)
  for r, tag in cells:
    sec = statistics.median(r[tag].seconds)
    r[tag] = (sec * 1e3, r[tag].flop / sec / 1e9, r[tag].gib)


def _fmt(cell):
  if isinstance(cell, str):
    return f'{cell:>36}'
  ms, gflops, gib = cell
  return f'{ms:10.1f} ms {gflops:7.1f} GFLOP/s {gib:6.2f} GiB'


def _print(rows, header):
  print(f'\n{header}')
  print(f'| {"row":<36} | {"implementation":<26} | {"fwd":>36} | {"fwd+bwd":>36} |')
  print(f'|{"-" * 38}|{"-" * 28}|{"-" * 38}|{"-" * 38}|')
  for r in rows:
    print(f'| {r["name"]:<36} | {r["impl"]:<26} | {_fmt(r["fwd"])} | {_fmt(r["fwd+bwd"])} |',
          flush=True)


def _dot_product(score_name):
  """Is the registered score a scaled dot product (it has a fused_scale)? Those are the scores
  the fused kernel and attention.native take."""
  return scores.make_score(score_name, 8, 8, rngs=nnx.Rngs(0)).fused_scale is not None


def _ours(score_name, kernel_name, d, score_dim=None):
  """-> (apply(params, q, k, v) -> out, params) of a score (score dim A = score_dim or d) through
  a kernel with implementation 'auto' (`chunked_xla`: 'xla'), with the bench's tiles for the
  chunked one."""
  score = scores.make_score(score_name, d, d, score_dim=score_dim or d, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(score)
  kern = kernels.get_kernel(kernel_name.removesuffix('_xla'))
  implementation = 'xla' if kernel_name.endswith('_xla') else 'auto'
  kern = functools.partial(kern, implementation=implementation)
  if kernel_name.startswith('chunked'):
    kern = functools.partial(kern, **CHUNKS.get(score_name, {}))
  apply = lambda p, q, k, v: kern(nnx.merge(graphdef, p), q, k, v)[0]
  return apply, state


def _native_build(score_name, d, level):
  """-> (apply, params) of a dot-product score through one build of attention.native (what the
  chunked kernel calls; no mask)."""
  score = scores.make_score(score_name, d, d, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(score)

  def apply(p, q, k, v):
    valid = native.key_valid(None, q.shape[0], k.shape[1])  # [1, K]: every key
    return native.attention(q, k, v, valid, nnx.merge(graphdef, p).fused_scale, False, level)

  return apply, state


def native_builds(names) -> list[str]:
  """The levels of --native_builds (native: this CPU's), built and registered before any trace;
  raises app.UsageError for an unknown level, or one this CPU cannot run or build."""
  known = ('native', *native.LEVELS)
  unknown = [n for n in names if n not in known]
  if unknown:
    raise app.UsageError(f'--native_builds: unknown {", ".join(unknown)}; known: '
                         f'{", ".join(known)}')
  levels = list(dict.fromkeys(native.host_level() if n == 'native' else n for n in names))
  for level in levels:
    if level is None or not native.can_run(level) or not native.available(level):
      raise app.UsageError(f'--native_builds: this CPU ({_machine()}) cannot run or build '
                           f'{level or "a native level"}')
  return levels


def attention_table(length, reps, builds=()):
  b, h, d = FLAGS.batch, FLAGS.heads, FLAGS.head_dim
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (b, length, h, d), jnp.float32) for key in keys)
  flop = 4 * b * h * length * length * d
  rows = []
  both_paths = native.available() and jax.default_backend() == 'cpu'
  for score_name in FLAGS.scores:
    for kernel_name in FLAGS.kernels:
      dot = _dot_product(score_name)
      if (kernel_name == 'fused' and not dot) or (kernel_name == 'chunked_xla'
                                                  and not (dot and both_paths)):
        continue
      name = f'{score_name} / {kernel_name}'
      too_slow = b * h * length ** 2 * d > FLAGS.max_score_elements
      if score_name in CHUNKS and too_slow:  # the tanh scores, with their own tiles
        rows.append({'name': name, 'impl': '-', 'fwd': 'skipped: too slow on CPU',
                     'fwd+bwd': 'skipped'})
        continue
      apply, state = _ours(score_name, kernel_name, d)
      rows.append(_row(name, apply, state, (q, k, v), flop))
    for level in builds if _dot_product(score_name) and both_paths else ():
      apply, state = _native_build(score_name, d, level)
      rows.append(_row(f'{score_name} / chunked_native', apply, state, (q, k, v), flop))
  scale = 1.0 / np.sqrt(d)
  rows.append(_row('jax.nn.dot_product_attention',
                   lambda p, q, k, v: jax.nn.dot_product_attention(q, k, v, scale=scale),
                   (), (q, k, v), flop))
  rows.append(_row('flax nnx.dot_product_attention',
                   lambda p, q, k, v: nnx.dot_product_attention(q, k, v), (), (q, k, v), flop))
  # Whole layers (projections included): ours vs flax, same weights layout, F = N·D.
  x = jax.random.normal(keys[0], (b, length, h * d), jnp.float32)
  theirs = nnx.MultiHeadAttention(h, h * d, decode=False, deterministic=True, rngs=nnx.Rngs(0))
  layer_flop = flop + 4 * 2 * b * length * (h * d) ** 2
  for label, module in (
      ('nnx.MultiHeadAttention (layer)', theirs),
      *((f'ours MultiHeadAttention / {kn}', layers.MultiHeadAttention(h, h * d, kernel=kn,
                                                                      rngs=nnx.Rngs(0)))
        for kn in ('dense', 'chunked', 'fused'))):
    graphdef, state = nnx.split(module)
    rows.append(_row(label, lambda p, x, g=graphdef: nnx.merge(g, p)(x), state, (x,), layer_flop))
  rows.extend(_torch_rows(b, h, d, length, flop))
  _time_rows(rows, reps)
  _print(rows, f'B={b} N={h} D={d} L={length} (GFLOP/s: 4BNL²D fwd, 3x fwd+bwd; layers add '
               f'the 4 projections)')
  return json_rows(rows, length)


def json_rows(rows, length):
  """The --json rows of one length's table (see the module docstring)."""
  torch_ms = {tag: r[tag][0] for r in rows if r['name'].startswith('torch SDPA')
              for tag in ('fwd', 'fwd+bwd')}
  out = []
  for r in rows:
    score, sep, kernel = r['name'].partition(' / ')
    if not sep or score not in scores.SCORES:
      score, kernel = None, r['name']
    for tag in ('fwd', 'fwd+bwd'):
      if isinstance(r[tag], str):  # skipped
        continue
      ms, gflops, gib = r[tag]
      out.append({'score': score, 'kernel': kernel, 'implementation': r['impl'],
                  'length': length, 'pass': tag,
                  'ms': ms, 'gflops': gflops,
                  'memory_gib': None if np.isnan(gib) else gib,
                  'ratio_to_torch': torch_ms[tag] / ms if tag in torch_ms else None})
  return out


def _torch_rows(b, h, d, length, flop):
  try:
    import torch  # optional: only a comparison
  except ImportError:
    print('(torch not importable: no PyTorch SDPA row)')
    return []
  torch.manual_seed(0)
  q, k, v = (torch.randn(b, h, length, d, requires_grad=True) for _ in range(3))
  sdpa = torch.nn.functional.scaled_dot_product_attention

  def fwd():
    with torch.no_grad():
      sdpa(q, k, v)

  def both():
    (sdpa(q, k, v) ** 2).sum().backward()

  out = {'name': f'torch SDPA {torch.__version__}',
         'impl': f'torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})'}
  for tag, fn, f in (('fwd', fwd, flop), ('fwd+bwd', both, 3 * flop)):
    out[tag] = _Timing(fn, f, float('nan'))
  return [out]


def matmul_rate(reps):
  n = 2048
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  compiled, _, _ = _compile(lambda a: a @ a, a)
  sec = _median_seconds(compiled, (a,), reps)
  an = np.asarray(a)
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    an @ an
    times.append(time.perf_counter() - start)
  print(f'\nf32 matmul {n}x{n}: jax {2 * n ** 3 / sec / 1e9:.0f} GFLOP/s, '
        f'numpy {2 * n ** 3 / statistics.median(times) / 1e9:.0f} GFLOP/s (the ceiling)')


def memory_targets():
  """Compiled fwd+bwd memory at the long lengths the chunked kernel exists for."""
  print('\nMemory targets (fwd+bwd, XLA buffer assignment; compiled, not run):')
  cases = (
      ('scaled_dot / chunked', 'scaled_dot', 'chunked', 1, 8, 64, 64, 16384, 2.0),
      ('scaled_dot / dense', 'scaled_dot', 'dense', 1, 8, 64, 64, 16384, None),
      ('jax.nn.dot_product_attention', None, None, 1, 8, 64, 64, 16384, None),
      ('additive / chunked (A=128)', 'additive', 'chunked', 1, 1, 64, 128, 4096, 2.0),
      ('additive / dense (A=128)', 'additive', 'dense', 1, 1, 64, 128, 4096, None),
  )
  for label, score_name, kernel_name, b, h, d, a, length, limit in cases:
    x = jax.ShapeDtypeStruct((b, length, h, d), jnp.float32)
    if score_name is None:
      apply, state = (lambda p, q, k, v: jax.nn.dot_product_attention(q, k, v)), ()
    else:
      apply, state = _ours(score_name, kernel_name, d, score_dim=a)
    _, both = _fwd_and_grad(apply, state, (x, x, x))
    _, mem, _ = _compile(both, state, x, x, x)
    scratch = ''
    if (kernel_name == 'chunked' and _dot_product(score_name) and native.available()
        and jax.default_backend() == 'cpu'):
      extra = native.scratch_bytes(length, length, d, d, threads=os.cpu_count() or 1)
      mem += extra
      scratch = f' (with {extra / 2**20:.0f} MiB of native scratch)'
    verdict = ''
    if limit is not None:
      verdict = f'  (target < {limit:.0f} GiB: {"met" if mem < limit * GIB else "MISSED"})'
    print(f'  {label:<32} B={b} N={h} D={d} L={length:>6}: {mem / GIB:7.2f} GiB{scratch}'
          f'{verdict}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  for flag, known in (('scores', scores.SCORES), ('kernels', KERNELS)):
    unknown = [name for name in FLAGS[flag].value if name not in known]
    if unknown:
      raise app.UsageError(f'--{flag}: unknown {", ".join(unknown)}; known: {", ".join(known)}')
  builds = native_builds(FLAGS.native_builds)
  print(f'jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s)); '
        f'CPU: {_machine()}; load average {os.getloadavg()[0]:.1f}')
  for level in builds:
    print(f'  native build {level}: {native.LEVELS[level].isa}, '
          f'{native.vector_floats(level)} floats per vector')
  print(f'  auto: {native.preferred().reason}')
  matmul_rate(FLAGS.reps)
  rows = [r for length in FLAGS.lengths
          for r in attention_table(int(length), FLAGS.reps, builds)]
  print(f'\nload average at the end: {os.getloadavg()[0]:.1f}')
  if FLAGS.json:
    pathlib.Path(FLAGS.json).write_text(json.dumps(
        {'cpu': _machine(), 'level': native.host_level(), 'rows': rows}, indent=1) + '\n')
    print(f'\nwrote {FLAGS.json}: {len(rows)} rows')
  if FLAGS.memory_targets:
    memory_targets()

