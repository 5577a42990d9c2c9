"""The chunked kernel's native CPU path: FlashAttention as an XLA FFI custom call
(csrc/flash_cpu.cc).

Same maths as attention.flash (Dao et al. 2022, alg. 1-2): forward from blocks of 64 queries x 64
keys with an online softmax, saving out and lse; backward per key block from the saved lse. It
covers what a Transformer trains with on CPU: dot and scaled_dot scores in float32, a key-padding
mask [B|1, 1, 1, K] and/or causal masking, no attention dropout. It is the chunked and fused
kernels' implementation 'native' (attention.implementations), which places it only in a program's
cpu branch (jax.lax.platform_dependent), so no program lowered for another platform holds it.

Builds per instruction-set level. The C++ picks its vector width and register blocking from the
target's preprocessor macros (see its header), so one source builds for each of:
  x86-64-v2 (SSE4.2, 4 floats), x86-64-v3 (AVX2 + FMA, 8 floats), x86-64-v4 (AVX-512, 16 floats),
  armv8-a (NEON, 4 floats).
`host_level()` is the best level this CPU runs (from /proc/cpuinfo's flags, never -march=native,
whose 64-byte vectors once went through memory on a CPU without AVX-512). Each level is its own
library, `$ATTENTION_ZOO_CACHE` (default ~/.cache/attention_zoo)/ffi/flash_cpu-<level>-<key>.so,
keyed by the source, the flags (-march=<level> among them), the compiler and jaxlib, with its own
FFI targets (`az_flash_fwd_x86_64_v3`, ...), so several levels load side by side in one process
(the benchmark times the AVX2 build beside the AVX-512 one on an AVX-512 machine).

When C++ is compiled: never while tracing. The host level's library is built (or found in the
cache) and registered when this module is first imported, and by `make install` (which calls
`available()`); another level when `available(level)` is first called. Tracing only reads what
is registered (`_call` refuses a level that is not). Without a compiler, or with
ATTENTION_ZOO_NATIVE=0, `available()` is False and the chunked kernel stays on attention.flash:
the numbers are the same.

Whether `auto` (the chunked kernel's default) takes the native path: `preferred(level)`, a table
per level filled from measurements of fwd+bwd against the chunked kernel's XLA path (see
PREFERRED). A table, not a measurement at first use: a timing taken on a shared 2-core machine
can be off by 2x while other processes run, and would make the choice, and so the compiled
program, differ between runs of the same code; a table is the same everywhere and its figures
can be reviewed. A level that was not measured is not preferred.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

SOURCE = pathlib.Path(__file__).parent / 'csrc' / 'flash_cpu.cc'
# Warnings are errors for our code; the FFI headers are -isystem so theirs do not count.
FLAGS = ('-O3', '-std=c++17', '-shared', '-fPIC', '-fvisibility=hidden', '-Wall', '-Wextra',
         '-Werror')


@dataclasses.dataclass(frozen=True)
class Level:
  """An instruction-set level: what the compiler targets and what the CPU must have."""
  march: str
  isa: str                    # for people: what the level adds
  floats: int                 # floats per vector in the C++ at this level
  cpu_flags: tuple[str, ...]  # /proc/cpuinfo flags it needs beyond the level below


# x86-64 levels as the psABI defines them (each includes the one above it in this table).
LEVELS = {
    'x86-64-v2': Level('-march=x86-64-v2', 'SSE4.2', 4,
                       ('cx16', 'lahf_lm', 'popcnt', 'sse4_1', 'sse4_2', 'ssse3')),
    'x86-64-v3': Level('-march=x86-64-v3', 'AVX2+FMA', 8,
                       ('avx', 'avx2', 'bmi1', 'bmi2', 'f16c', 'fma', 'abm', 'movbe', 'xsave')),
    'x86-64-v4': Level('-march=x86-64-v4', 'AVX-512', 16,
                       ('avx512f', 'avx512bw', 'avx512cd', 'avx512dq', 'avx512vl')),
    'armv8-a': Level('-march=armv8-a', 'NEON', 4, ()),
}
_X86 = ('x86-64-v2', 'x86-64-v3', 'x86-64-v4')


@dataclasses.dataclass(frozen=True)
class Preference:
  """Whether `auto` takes the native path at a level, and why. Truthy when it does."""
  level: str | None
  use: bool
  reason: str

  def __bool__(self) -> bool:
    return self.use


# fwd+bwd wall time, B=4, N=8, D=64, f32, 2 threads, scaled_dot, no mask: each build against the
# chunked kernel's XLA path (native=False), timed in rounds in one process per length on an AMD
# EPYC (Zen 4) with AVX-512 and a quiet machine (load average < 2). XLA there compiles for
# AVX-512, so the AVX2 build is held to a stricter bar than on an AVX2 CPU. BUILD.md has the run.
PREFERRED = {
    'x86-64-v4': (True, 'faster than the XLA path: fwd+bwd 177 vs 381 ms at L=1024, '
                        '2.86 vs 5.77 s at L=4096'),
    'x86-64-v3': (True, 'faster than the XLA path: fwd+bwd 183 vs 381 ms at L=1024, '
                        '2.91 vs 5.77 s at L=4096 (the AVX2 build on an AVX-512 CPU)'),
    'x86-64-v2': (False, 'slower than the XLA path: fwd+bwd 491 vs 381 ms at L=1024, '
                         '8.66 vs 5.77 s at L=4096 (4-float SSE vectors, no FMA)'),
    'armv8-a': (False, 'not measured on an Arm CPU: the NEON build compiles, but is not known '
                       'to beat the XLA path there'),
}


def _cpu_flags() -> frozenset[str]:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('flags'):
        return frozenset(line.partition(':')[2].split())
  except OSError:
    pass
  return frozenset()


@functools.cache
def host_level() -> str | None:
  """The best level this CPU runs; None where there is none (the native path is then off)."""
  machine = platform.machine().lower()
  if machine in ('aarch64', 'arm64'):
    return 'armv8-a'
  if machine not in ('x86_64', 'amd64'):
    return None
  return ([None, *(lvl for lvl in _X86 if can_run(lvl))])[-1]


def can_run(level: str) -> bool:
  """Whether this CPU runs code built for `level`."""
  _check_level(level)
  if level == 'armv8-a':
    return platform.machine().lower() in ('aarch64', 'arm64')
  if platform.machine().lower() not in ('x86_64', 'amd64'):
    return False
  flags = _cpu_flags()
  needed = [f for lvl in _X86[:_X86.index(level) + 1] for f in LEVELS[lvl].cpu_flags]
  return all(f in flags for f in needed)


def _check_level(level: str) -> None:
  if level not in LEVELS:
    raise ValueError(f'unknown level {level!r}; known: {", ".join(LEVELS)}')


def _resolve(level: str | None) -> str:
  level = level or host_level()
  if level is None:
    raise RuntimeError(f'no native build for this CPU ({platform.machine()})')
  _check_level(level)
  return level


def target_names(level: str | None = None) -> tuple[str, str]:
  """The FFI targets (forward, backward) of a level's build, e.g. az_flash_fwd_x86_64_v3."""
  suffix = _resolve(level).replace('-', '_')
  return f'az_flash_fwd_{suffix}', f'az_flash_bwd_{suffix}'


def compiler() -> str | None:
  return os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')


@functools.cache
def _compiler_id(cxx: str) -> str:
  try:
    return subprocess.run([cxx, '--version'], capture_output=True, text=True).stdout
  except OSError:
    return cxx


def compile_command(level: str, out: str | os.PathLike, cxx: str | None = None,
                    extra: tuple[str, ...] = ()) -> list[str]:
  """The compiler command that builds `level` into `out` (`extra`: e.g. ('-S',) for assembly)."""
  _check_level(level)
  cxx = cxx or compiler()
  if cxx is None:
    raise RuntimeError('no C++ compiler found (set CXX, or install g++)')
  return [cxx, *FLAGS, LEVELS[level].march, *extra, '-isystem', jax.ffi.include_dir(),
          str(SOURCE), '-o', str(out)]


def library_path(level: str | None = None) -> pathlib.Path:
  """Where the compiled library of this source, level, flags, compiler and jaxlib lives."""
  level = _resolve(level)
  key = hashlib.sha256()
  cxx = compiler() or ''
  for part in (SOURCE.read_bytes(), ' '.join(FLAGS).encode(), level.encode(),
               jax.__version__.encode(), _compiler_id(cxx).encode() if cxx else b''):
    key.update(part)
  root = pathlib.Path(os.environ.get('ATTENTION_ZOO_CACHE',
                                     pathlib.Path.home() / '.cache' / 'attention_zoo'))
  return root / 'ffi' / f'flash_cpu-{level}-{key.hexdigest()[:16]}.so'


def build(level: str | None = None) -> pathlib.Path:
  """Compiles a level's library (default: the host's) if it is not cached (atomically); returns
  its path. Raises RuntimeError naming the compiler command and its output when the build fails."""
  level = _resolve(level)
  path = library_path(level)
  if path.exists():
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
    out = pathlib.Path(tmp) / path.name
    cmd = compile_command(level, out)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
      raise RuntimeError(f'building {SOURCE.name} failed: {" ".join(cmd)}\n{result.stderr}')
    os.replace(out, path)
  return path


_VECTOR_FLOATS: dict[str, int] = {}  # level -> floats per vector, of each registered build


def available(level: str | None = None) -> bool:
  """Builds (once) and registers a level's custom calls (default: the host's level); False, with
  a warning, where that fails or this CPU cannot run the level."""
  if os.environ.get('ATTENTION_ZOO_NATIVE', '1') == '0':
    return False
  try:
    level = _resolve(level)
  except RuntimeError as e:
    logging.warning('native CPU attention unavailable, using attention.flash: %s', e)
    return False
  return _load(level)


@functools.cache
def _load(level: str) -> bool:
  try:
    if not can_run(level):
      raise RuntimeError(f'this CPU cannot run {level} ({LEVELS[level].isa}) code')
    lib = ctypes.CDLL(str(build(level)))  # RTLD_LOCAL: each level keeps its own symbols
  except (OSError, RuntimeError) as e:
    logging.warning('native CPU attention (%s) unavailable, using attention.flash: %s', level, e)
    return False
  for target, symbol in zip(target_names(level), ('AzFlashFwd', 'AzFlashBwd')):
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  _VECTOR_FLOATS[level] = lib.AzFlashVectorFloats()
  return True


def vector_floats(level: str | None = None) -> int:
  """Floats per vector in the registered build of a level (what its C++ chose)."""
  level = _resolve(level)
  if level not in _VECTOR_FLOATS:
    raise RuntimeError(f'the {level} build is not registered: call available({level!r})')
  return _VECTOR_FLOATS[level]


def preferred(level: str | None = None) -> Preference:
  """Whether `auto` takes the native path on a level (default: this CPU's), with the reason.

  Truthy when it does. False where PREFERRED says the XLA path is as fast or faster (or the
  level was not measured), and for this CPU's level when its library is not registered. Reads
  only the table and what is registered: it never compiles."""
  try:
    level = _resolve(level)
  except RuntimeError as e:
    return Preference(None, False, str(e))
  use, reason = PREFERRED[level]
  if use and level == host_level() and level not in _VECTOR_FLOATS:
    return Preference(level, False, f'the {level} library is not registered (no compiler, '
                                    'ATTENTION_ZOO_NATIVE=0, or its build failed)')
  return Preference(level, use, f'{level} ({LEVELS[level].isa}): {reason}')


def scratch_bytes(q_len: int, k_len: int, d: int, dv: int, threads: int) -> int:
  """An upper bound of the memory the custom calls allocate beside XLA's buffers (which XLA's
  memory analysis does not see): per thread, the larger of the forward's packed keys and values
  and the backward's packed queries, output gradients and dq of one head, plus 64 x 64 blocks."""
  pad = lambda x, m: -(-x // m) * m
  dp, dvp, lq, lk = pad(d, 32), pad(dv, 32), pad(q_len, 64), pad(k_len, 64)
  per_thread = max(lk * (dp + dvp), lq * (2 * dp + dvp + 2)) + 64 * 64 * 8 + 64 * (3 * dp + 2 * dvp)
  return 4 * per_thread * threads


def key_valid(mask: jax.Array | None, b: int, k_len: int) -> jax.Array | None:
  """A mask the native path takes, as uint8 [B | 1, K]; None for a mask it does not (one that
  varies over heads or queries)."""
  if mask is None:
    return jnp.ones((1, k_len), jnp.uint8)
  if mask.shape[1] != 1 or mask.shape[2] != 1:
    return None
  return jnp.broadcast_to(mask[:, 0, 0, :], (mask.shape[0], k_len)).astype(jnp.uint8)


def registered(level: str | None = None) -> bool:
  """Whether a level's build (default: this CPU's) is registered, so that a trace may call it."""
  try:
    return _resolve(level) in _VECTOR_FLOATS
  except RuntimeError:
    return False


def _call(target: str, level: str, shapes, *args, scale: float, causal: bool):
  if level not in _VECTOR_FLOATS:
    raise RuntimeError(f'native CPU attention ({level}) is not registered: call '
                       f'native.available({level!r}) before tracing (and see its warning)')
  out_types = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  return jax.ffi.ffi_call(target, out_types, vmap_method='sequential')(
      *args, scale=np.float32(scale), causal=np.int32(causal))


def attention(q, k, v, valid, scale: float, causal: bool, level: str | None = None) -> jax.Array:
  """softmax(scale · q kᵀ | valid, causal) v: q [B, Q, N, D], k [B, K, N, D], v [B, K, N, Dv],
  valid uint8 [B | 1, K] -> [B, Q, N, Dv]; a query with no visible key gets 0. `level`: which
  registered build runs it (default: this CPU's level)."""
  return _attention(q, k, v, valid, scale, causal, _resolve(level))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q, k, v, valid, scale, causal, level):
  return _fwd(q, k, v, valid, scale, causal, level)[0]


def _fwd(q, k, v, valid, scale, causal, level):
  b, q_len, n, _ = q.shape
  out, lse = _call(target_names(level)[0], level, [(b, q_len, n, v.shape[-1]), (b, n, q_len)],
                   q, k, v, valid, scale=scale, causal=causal)
  return out, (q, k, v, valid, out, lse)


def _bwd(scale, causal, level, res, d_out):
  q, k, v, valid, out, lse = res
  d_q, d_k, d_v = _call(target_names(level)[1], level, [q.shape, k.shape, v.shape], q, k, v,
                        valid, out, lse, d_out, scale=scale, causal=causal)
  return d_q, d_k, d_v, None


_attention.defvjp(_fwd, _bwd)

# The host level's library is built (first time: a few seconds) and registered here, at import,
# so that no trace ever compiles C++.
available()
