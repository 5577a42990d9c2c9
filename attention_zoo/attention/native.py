"""The chunked kernel's native CPU path: FlashAttention as an XLA FFI custom call
(csrc/flash_cpu.cc).

Same maths as attention.flash (Dao et al. 2022, alg. 1-2): forward from blocks of 64 queries x 64
keys with an online softmax, saving out and lse; backward per key block from the saved lse. It
covers what a Transformer trains with on CPU: dot and scaled_dot scores in float32, a key-padding
mask [B|1, 1, 1, K] and/or causal masking, no attention dropout. Everything else (and every other
backend) takes attention.flash.

The library is compiled with the system's C++ compiler on first use (or by `make install`) into
$ATTENTION_ZOO_CACHE (default ~/.cache/attention_zoo)/ffi/, keyed by the source, the compiler
flags, jaxlib and this CPU's instruction set. Without a compiler, or with ATTENTION_ZOO_NATIVE=0,
`available()` is False and the chunked kernel stays on attention.flash: the numbers are the same.
"""

from __future__ import annotations

import ctypes
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
FLAGS = ('-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-w')
_TARGETS = {'az_flash_fwd': 'AzFlashFwd', 'az_flash_bwd': 'AzFlashBwd'}


def _cpu_signature() -> str:
  """The instruction-set flags of this CPU (a library built with -march=native runs only here)."""
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('flags'):
        return line
  except OSError:
    pass
  return platform.processor() or platform.machine()


def library_path() -> pathlib.Path:
  """Where the compiled library of this source, flags, jaxlib and CPU lives."""
  key = hashlib.sha256()
  for part in (SOURCE.read_bytes(), ' '.join(FLAGS).encode(), jax.__version__.encode(),
               _cpu_signature().encode()):
    key.update(part)
  root = pathlib.Path(os.environ.get('ATTENTION_ZOO_CACHE',
                                     pathlib.Path.home() / '.cache' / 'attention_zoo'))
  return root / 'ffi' / f'flash_cpu-{key.hexdigest()[:16]}.so'


def build() -> pathlib.Path:
  """Compiles the library if it is not cached (atomically); returns its path.

  Raises RuntimeError naming the compiler command and its output when the build fails."""
  path = library_path()
  if path.exists():
    return path
  compiler = os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')
  if compiler is None:
    raise RuntimeError('no C++ compiler found (set CXX, or install g++)')
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
    out = pathlib.Path(tmp) / path.name
    cmd = [compiler, *FLAGS, f'-I{jax.ffi.include_dir()}', str(SOURCE), '-o', str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
      raise RuntimeError(f'building {SOURCE.name} failed: {" ".join(cmd)}\n{result.stderr}')
    os.replace(out, path)
  return path


@functools.cache
def available() -> bool:
  """Builds (once) and registers the custom calls; False, with a warning, where that fails."""
  if os.environ.get('ATTENTION_ZOO_NATIVE', '1') == '0':
    return False
  try:
    lib = ctypes.cdll.LoadLibrary(str(build()))
  except (OSError, RuntimeError) as e:
    logging.warning('native CPU attention unavailable, using attention.flash: %s', e)
    return False
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  return True


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


def eligible(score, q, k, v) -> bool:
  """Whether attention of these arguments can take the native path (a CPU backend, float32, a
  dot-product score, the library built)."""
  return (getattr(score, 'fused_scale', None) is not None and jax.default_backend() == 'cpu'
          and all(x.dtype == jnp.float32 for x in (q, k, v)) and available())


def _call(target: str, shapes, *args, scale: float, causal: bool):
  if not available():
    raise RuntimeError('native CPU attention is unavailable (see the warning above)')
  out_types = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
  return jax.ffi.ffi_call(target, out_types, vmap_method='sequential')(
      *args, scale=np.float32(scale), causal=np.int32(causal))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def attention(q, k, v, valid, scale: float, causal: bool) -> jax.Array:
  """softmax(scale · q kᵀ | valid, causal) v: q [B, Q, N, D], k [B, K, N, D], v [B, K, N, Dv],
  valid uint8 [B | 1, K] -> [B, Q, N, Dv]; a query with no visible key gets 0."""
  return _fwd(q, k, v, valid, scale, causal)[0]


def _fwd(q, k, v, valid, scale, causal):
  b, q_len, n, _ = q.shape
  out, lse = _call('az_flash_fwd', [(b, q_len, n, v.shape[-1]), (b, n, q_len)], q, k, v, valid,
                   scale=scale, causal=causal)
  return out, (q, k, v, valid, out, lse)


def _bwd(scale, causal, res, d_out):
  q, k, v, valid, out, lse = res
  d_q, d_k, d_v = _call('az_flash_bwd', [q.shape, k.shape, v.shape], q, k, v, valid, out, lse,
                        d_out, scale=scale, causal=causal)
  return d_q, d_k, d_v, None


attention.defvjp(_fwd, _bwd)

