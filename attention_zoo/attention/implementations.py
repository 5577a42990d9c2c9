"""How a kernel's attention runs on each platform: the kernels' `implementation` option.

A kernel (attention.kernels) says what is computed; its implementation says which code computes
it on the platform the program is lowered for. The numbers are the same to float tolerance.

  xla:    the kernel's own jax code, on every platform (the chunked kernel: attention.flash).
  native: the CPU custom call (attention.native: FlashAttention in C++, per instruction set).
  cudnn:  cuDNN flash attention on NVIDIA GPUs (jax.nn.dot_product_attention, 'cudnn').
  pallas: a Pallas flash kernel: Triton on NVIDIA GPUs (jax.experimental.pallas.ops.gpu.attention,
          Tri Dao's FlashAttention-2 in Triton), Mosaic on TPU
          (jax.experimental.pallas.ops.tpu.flash_attention).
  auto:   per lowering platform, the first of AUTO[platform] that takes the call, else xla:
          cpu: native (kernels chunked and fused, float32, where attention.native.preferred
          says it beats xla on this CPU's level); cuda: cudnn (fp16/bf16, only where this host
          has cuDNN, see below), then pallas (Triton: fp16/bf16, causal or no mask); tpu: pallas
          (any float dtype, key-padding and/or causal masks). Every score that is not a scaled
          dot product, attention dropout, a mask that varies over heads or queries, and calls of
          fewer than MIN_AUTO_QUERIES queries (decoding steps) run as xla everywhere.

What each implementation takes (a dot-product score, no attention dropout, and):
  native  cpu; chunked, fused; float32; a key-padding [B|1, 1, 1, K] and/or causal mask.
  cudnn   cuda; dense, chunked, fused; fp16/bf16; head dim <= 128, a multiple of 8; even
          lengths with a mask; a host with cuDNN.
  pallas  cuda (Triton): fp16/bf16; no mask but causal; a power-of-two head dim; lengths that
          are powers of two up to 128 or multiples of 128, or causal self-attention (padded).
          tpu (Mosaic flash): a key-padding and/or causal mask (keys padded to a multiple of 128,
          told apart by segment ids; queries padded to the kernel's tile).
The dense kernel runs as xla when its weights are asked for (its point).

The choice between platforms is made when the program is lowered, never from the host's backend
at trace time: 'auto' (and an explicit implementation) stage out one branch per platform with
jax.lax.platform_dependent, and lowering for a platform keeps only its branch (a program
exported for cuda or tpu holds no CPU custom call). What is decided at trace time are the facts
every platform shares: the score (dot-product or not), the dtype, the mask's shape, causal,
dropout and the sequence lengths.

cuDNN is the one exception: jax.nn.dot_product_attention(implementation='cudnn') refuses to trace
where cuDNN is not installed ("cuDNN is not detected"). So 'auto' takes cudnn only where this
host has cuDNN (`host_has_cudnn`, probed once); a program lowered for cuda on a CPU-only host
takes Triton or xla instead, and an explicit 'cudnn' there is refused at trace time.

Nothing compiles C++ here: the native path reads only what attention.native registered at import.

Unavailable combinations are refused with an error naming the reason and the valid
implementations: at trace time for what every platform shares (e.g. 'cudnn' or 'pallas' with the
additive score, 'native' with bfloat16 or under the dense kernel), and when the program
is lowered for a platform the implementation does not run on (e.g. 'native' lowered for cuda).

Which implementation each attention layer of a model resolves to, per platform:
`for_model(model, *inputs)` (attention_zoo/attention/implementations.py:for_model), for
results.json and the bench rows.

Shapes: B batch, Q queries, K keys, N heads, D head dim (Dv of the values).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.extend.core
import jax.numpy as jnp
from flax import nnx
from jax.interpreters import ad, batching, mlir

from attention_zoo.attention import native as native_lib
from attention_zoo.registry import Registry, choose

PLATFORMS = ('cpu', 'cuda', 'tpu')  # the platforms 'auto' chooses for (others: xla)
HALF = (jnp.bfloat16, jnp.float16)
# 'auto' leaves calls with fewer queries (decoding steps: one query reads a cache) on xla, where
# they are a fused matrix-vector product; the flash kernels would pad them to a tile of queries.
MIN_AUTO_QUERIES = 8
# The custom-call targets each implementation puts in a lowered program, by platform (what the
# lowering tests look for). The native targets are per level: native_lib.target_names(level).
TARGETS = {('pallas', 'tpu'): 'tpu_custom_call', ('pallas', 'cuda'): '__gpu$xla.gpu.triton',
           ('cudnn', 'cuda'): '__cudnn$fmha'}


@dataclasses.dataclass(frozen=True)
class Call:
  """What a kernel asks to be computed, as known at trace time.

  q [B, Q, N, D], k [B, K, N, D], v [B, K, N, Dv] (key/value heads already repeated to N);
  mask bool, rank 4, broadcastable to [B, N, Q, K], or None; `xla(q, k, v, mask)` -> [B, Q, N, Dv]
  is the kernel's own jax code (its 'xla' implementation).
  """

  kernel: str
  score: Any
  q: jax.Array
  k: jax.Array
  v: jax.Array
  mask: jax.Array | None
  causal: bool
  dropout: bool
  xla: Callable[..., jax.Array]

  @property
  def scale(self) -> float | None:
    """The score's scale when it is a scaled dot product (dot, scaled_dot), else None."""
    return getattr(self.score, 'fused_scale', None)

  @property
  def dtype(self):
    """The dtype of q, k and v; None when they differ."""
    dtypes = {jnp.dtype(x.dtype) for x in (self.q, self.k, self.v)}
    return dtypes.pop() if len(dtypes) == 1 else None


# A runner computes the call's output [B, Q, N, Dv] (in v's dtype) from (q, k, v, mask).
Runner = Callable[[Call, jax.Array, jax.Array, jax.Array, Any], jax.Array]
# refusal(call, platform, auto) -> why the implementation cannot run the call there, or None.
Refusal = Callable[[Call, str, bool], str | None]


@dataclasses.dataclass(frozen=True)
class Implementation:
  """One implementation: what it runs on each platform it has, and when it refuses a call."""

  name: str
  runners: Mapping[str, Runner]  # platform -> runner; every platform for 'xla' ('*')
  refusal: Refusal
  kernels: tuple[str, ...] = ('dense', 'chunked', 'fused')  # the kernels it implements


IMPLEMENTATIONS: Registry = Registry('implementation')


def _register(impl: Implementation) -> Implementation:
  IMPLEMENTATIONS.register(impl.name)(impl)
  return impl


# ---- what the kernels share ----------------------------------------------------------------------
def _key_mask_only(call: Call) -> str | None:
  """None when the mask is None or a key-padding mask [B|1, 1, 1, K]; else why not."""
  if call.mask is None or (call.mask.shape[1] == 1 and call.mask.shape[2] == 1):
    return None
  return (f'its mask varies over heads or queries (shape {tuple(call.mask.shape)}); it takes a '
          'key-padding mask [B|1, 1, 1, K] and causal')


def _common(call: Call, name: str, auto: bool) -> str | None:
  """The conditions every fast implementation shares: a kernel it implements, a dot-product
  score, no attention dropout; under 'auto', at least MIN_AUTO_QUERIES queries."""
  kernels = IMPLEMENTATIONS.get(name).kernels
  if call.kernel not in kernels:
    return (f'{name!r} does not implement the {call.kernel!r} kernel (it implements '
            f'{", ".join(kernels)})')
  if auto and call.q.shape[1] < MIN_AUTO_QUERIES:
    return (f'{call.q.shape[1]} queries (a decoding step): auto leaves fewer than '
            f'{MIN_AUTO_QUERIES} on xla')
  if call.scale is None:
    return (f'the score {type(call.score).__name__} is not a scaled dot product; {name!r} '
            'takes the dot and scaled_dot scores')
  if call.dropout:
    return f'{name!r} has no attention dropout'
  return None


def _dtypes(call: Call) -> str:
  return ', '.join(str(x.dtype) for x in (call.q, call.k, call.v))


def _any_key(mask, causal, q_len, k_len):
  """[B|1, Q, N|1, 1] bool: does a query have at least one key it may attend?"""
  rows = jnp.arange(q_len)[:, None] >= jnp.arange(k_len)[None, :] if causal else None
  full = mask if rows is None else (rows[None, None] if mask is None else mask & rows)
  if full is None:
    return jnp.ones((1, 1, 1, 1), bool)
  return jnp.swapaxes(jnp.any(full, axis=-1), 1, 2)[..., None]


def _zero_empty_rows(out, call, mask):
  """A query with no key to attend gets zero output (the kernels' contract)."""
  keep = _any_key(mask, call.causal, call.q.shape[1], call.k.shape[1])
  return jnp.where(keep, out, jnp.zeros((), out.dtype)).astype(call.v.dtype)


def _key_valid(mask, b: int, k_len: int) -> jax.Array:
  """[B, K] bool key validity from a key-padding mask (or None: every key)."""
  if mask is None:
    return jnp.ones((b, k_len), bool)
  return jnp.broadcast_to(mask[:, 0, 0, :], (b, k_len))


# ---- xla -----------------------------------------------------------------------------------------
def _run_xla(call, q, k, v, mask):
  return call.xla(q, k, v, mask).astype(call.v.dtype)


XLA = _register(Implementation('xla', {'*': _run_xla}, lambda call, platform, auto: None,
                               kernels=()))


# ---- native (CPU custom call) --------------------------------------------------------------------
def _native_refusal(call: Call, platform: str, auto: bool) -> str | None:
  if platform != 'cpu':
    return f"'native' runs on cpu only, not {platform}"
  reason = _common(call, 'native', auto) or _key_mask_only(call)
  if reason:
    return reason
  if call.dtype != jnp.float32:
    return f"'native' computes in float32, got q, k, v in {_dtypes(call)}"
  preference = native_lib.preferred()
  if not native_lib.registered():
    return f'no native build is registered on this host ({preference.reason})'
  if auto and not preference:
    return f'not preferred here: {preference.reason}'
  return None


def _run_native(call, q, k, v, mask):
  valid = native_lib.key_valid(mask, q.shape[0], k.shape[1])  # [B | 1, K] uint8
  return native_lib.attention(q, k, v, valid, call.scale, call.causal).astype(call.v.dtype)


# The dense kernel stays xla on CPU (what it was measured against: native beats the chunked
# kernel's xla path at long lengths, see attention.native.PREFERRED).
NATIVE = _register(Implementation('native', {'cpu': _run_native}, _native_refusal,
                                  kernels=('chunked', 'fused')))


# ---- cudnn ---------------------------------------------------------------------------------------
@functools.cache
def host_has_cudnn() -> bool:
  """Whether cuDNN flash attention traces on this host (jax finds cuDNN); probed once."""
  x = jax.ShapeDtypeStruct((1, 2, 1, 8), jnp.bfloat16)
  try:
    jax.eval_shape(functools.partial(jax.nn.dot_product_attention, implementation='cudnn'),
                   x, x, x)
  except Exception:  # pylint: disable=broad-except  (RuntimeError: "cuDNN is not detected", ...)
    return False
  return True


def _cudnn_refusal(call: Call, platform: str, auto: bool) -> str | None:
  if platform != 'cuda':
    return f"'cudnn' runs on cuda only, not {platform}"
  reason = _common(call, 'cudnn', auto)
  if reason:
    return reason
  if call.dtype not in HALF:
    return f'cuDNN flash attention takes float16 or bfloat16, got q, k, v in {_dtypes(call)}'
  d, dv = call.q.shape[-1], call.v.shape[-1]
  if d != dv or d % 8 or d > 128:
    return f'cuDNN flash attention needs a head dim <= 128, a multiple of 8, = Dv; got {d}, {dv}'
  if call.mask is not None and (call.q.shape[1] % 2 or call.k.shape[1] % 2):
    return (f'cuDNN flash attention with a mask needs even lengths, got Q={call.q.shape[1]}, '
            f'K={call.k.shape[1]}')
  if not host_has_cudnn():
    return ('cuDNN is not on this host (jax traces its flash attention only where cuDNN is '
            'installed)')
  return None


def _run_cudnn(call, q, k, v, mask):
  out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=call.scale, is_causal=call.causal,
                                     implementation='cudnn')
  return _zero_empty_rows(out, call, mask)


CUDNN = _register(Implementation('cudnn', {'cuda': _run_cudnn}, _cudnn_refusal))


# ---- pallas: Triton (cuda), Mosaic (tpu) ---------------------------------------------------------
def _pow2(n: int) -> bool:
  return n & (n - 1) == 0


def _triton_length(n: int) -> int:
  """The length the Triton kernel's blocks (min(128, L), powers of two) take: L rounded up."""
  return 1 << (n - 1).bit_length() if n <= 128 else -(-n // 128) * 128


def _pallas_refusal(call: Call, platform: str, auto: bool) -> str | None:
  if platform not in ('cuda', 'tpu'):
    return f"'pallas' runs on cuda (Triton) and tpu (Mosaic), not {platform}"
  reason = _common(call, 'pallas', auto) or _key_mask_only(call)
  if reason:
    return reason
  d, dv = call.q.shape[-1], call.v.shape[-1]
  if d != dv:
    return f"'pallas' needs value dim = key dim, got {d}, {dv}"
  if platform == 'tpu':
    return None
  q_len, k_len = call.q.shape[1], call.k.shape[1]
  if call.dtype not in HALF:
    return f"'pallas' on cuda (Triton) takes float16 or bfloat16, got q, k, v in {_dtypes(call)}"
  if call.mask is not None:
    return "'pallas' on cuda (Triton) takes no padding mask (causal only)"
  if not _pow2(d):
    return f"'pallas' on cuda (Triton) needs a power-of-two head dim, got {d}"
  padded = call.causal and q_len == k_len  # keys past every query: invisible when causal
  if not padded and (_triton_length(q_len) != q_len or _triton_length(k_len) != k_len):
    return (f"'pallas' on cuda (Triton) needs lengths that are powers of two up to 128 or "
            f'multiples of 128 (or causal self-attention), got Q={q_len}, K={k_len}')
  return None


def _pad_axis(x, size: int, axis: int):
  return jnp.pad(x, [(0, size - x.shape[axis]) if a == axis else (0, 0) for a in range(x.ndim)])


def _run_triton(call, q, k, v, mask):
  from jax.experimental.pallas.ops.gpu import attention as triton  # pylint: disable=import-outside-toplevel
  del mask  # refused unless None
  q_len, k_len = q.shape[1], k.shape[1]
  qp, kp = _triton_length(q_len), _triton_length(k_len)
  q, k, v = _pad_axis(q, qp, 1), _pad_axis(k, kp, 1), _pad_axis(v, kp, 1)
  out = triton.mha(q, k, v, None, sm_scale=call.scale, causal=call.causal)  # [B, Qp, N, D]
  return out[:, :q_len].astype(call.v.dtype)


def _run_tpu_flash(call, q, k, v, mask):
  """Mosaic flash attention: keys padded to a multiple of 128 (its kv block) and told apart by
  segment ids (1 = a real key, 0 = padding or masked); queries padded to its q block."""
  from jax.experimental.pallas.ops.tpu import flash_attention as tpu  # pylint: disable=import-outside-toplevel
  b, q_len, _, _ = q.shape
  k_len = k.shape[1]
  kp = -(-k_len // 128) * 128
  qp = -(-q_len // 8) * 8 if q_len <= 128 else -(-q_len // 128) * 128
  bq = min(128, qp)
  heads = lambda x, n: jnp.swapaxes(_pad_axis(x, n, 1), 1, 2)  # [B, L, N, D] -> [B, N, Lp, D]
  valid = _pad_axis(_key_valid(mask, b, k_len), kp, 1).astype(jnp.int32)  # [B, Kp]
  segments = tpu.SegmentIds(q=jnp.ones((b, qp), jnp.int32), kv=valid)
  blocks = tpu.BlockSizes(block_q=bq, block_k_major=128, block_k=128, block_b=1,
                          block_q_major_dkv=bq, block_k_major_dkv=128, block_k_dkv=128,
                          block_q_dkv=bq, block_k_major_dq=128, block_k_dq=128, block_q_dq=bq)
  out = tpu.flash_attention(heads(q, qp), heads(k, kp), heads(v, kp), segment_ids=segments,
                            causal=call.causal, sm_scale=call.scale, block_sizes=blocks)
  return _zero_empty_rows(jnp.swapaxes(out, 1, 2)[:, :q_len], call, mask)


PALLAS = _register(Implementation('pallas', {'cuda': _run_triton, 'tpu': _run_tpu_flash},
                                  _pallas_refusal))

# 'auto': per platform, the first of these that takes the call; else xla.
AUTO = {'cpu': ('native',), 'cuda': ('cudnn', 'pallas'), 'tpu': ('pallas',)}


def resolve(call: Call, platform: str) -> str:
  """The implementation 'auto' runs `call` with when lowered for `platform`."""
  for name in AUTO.get(platform, ()):
    if IMPLEMENTATIONS.get(name).refusal(call, platform, True) is None:
      return name
  return 'xla'


# ---- refusing at lowering ------------------------------------------------------------------------
# A primitive that traces to the branch's output shape and raises ValueError(reason) when lowered.
# It is linear in its operands (so that a program computing only gradients keeps it: its
# transpose is itself), which is all the maths it has.
_refused_p = jax.extend.core.Primitive('attention_zoo_refused_implementation')


@_refused_p.def_abstract_eval
def _refused_aval(*operands, reason, shape, dtype):
  del operands, reason
  return jax.core.ShapedArray(shape, dtype)


def _refused_lowering(ctx, *operands, reason, shape, dtype):
  del ctx, operands, shape, dtype
  raise ValueError(reason)


def _refused_batch(operands, dims, *, reason, shape, dtype):
  size = next(x.shape[d] for x, d in zip(operands, dims) if d is not batching.not_mapped)
  return _refused_p.bind(*operands, reason=reason, shape=(size, *shape), dtype=dtype), 0


def _refused_transpose(ct, *operands, reason, shape, dtype):
  del shape, dtype
  return [_refused_p.bind(ct, reason=reason, shape=x.aval.shape, dtype=x.aval.dtype)
          if isinstance(x, ad.UndefinedPrimal) else None for x in operands]


mlir.register_lowering(_refused_p, _refused_lowering)
batching.primitive_batchers[_refused_p] = _refused_batch
ad.deflinear2(_refused_p, _refused_transpose)


def _refused(reason: str) -> Runner:
  """A branch that traces (to the output's shape) but raises ValueError(reason) when lowered."""
  return lambda call, q, k, v, mask: _refused_p.bind(
      q, k, v, reason=reason, shape=(*q.shape[:-1], v.shape[-1]), dtype=call.v.dtype)


# ---- running a call ------------------------------------------------------------------------------
def _valid_names(call: Call) -> list[str]:
  """The implementations that take `call` on some platform."""
  names = ['auto', 'xla']
  for name in IMPLEMENTATIONS:
    impl = IMPLEMENTATIONS.get(name)
    if name != 'xla' and any(impl.refusal(call, p, False) is None for p in impl.runners):
      names.append(name)
  return names


def _branches(call: Call, implementation: str) -> dict[str, Runner]:
  """platform -> runner of `implementation` ('default': every platform not named)."""
  if implementation == 'auto':
    chosen = {p: resolve(call, p) for p in PLATFORMS}
    return {p: IMPLEMENTATIONS.get(n).runners.get(p, _run_xla) for p, n in chosen.items()
            if n != 'xla'} | {'default': _run_xla}
  impl = _get(implementation)
  if '*' in impl.runners:
    return {'default': impl.runners['*']}
  reasons = check(call, implementation)
  where = ', '.join(impl.runners)
  return {p: (run if reasons[p] is None else _refused(
      f'attention implementation {implementation!r} lowered for {p}: {reasons[p]}; valid on '
      'every platform: auto, xla')) for p, run in impl.runners.items()} | {'default': _refused(
          f'attention implementation {implementation!r} runs on {where} only, but was lowered '
          'for another platform; valid on every platform: auto, xla')}


def check(call: Call, implementation: str) -> dict[str, str | None]:
  """Refuses (ValueError naming the reasons and the valid implementations) an implementation
  that runs `call` on none of its platforms; -> {platform: why it refuses there, or None}."""
  impl = _get(implementation)
  if impl is None or '*' in impl.runners:
    return {p: None for p in PLATFORMS}
  reasons = {p: impl.refusal(call, p, False) for p in impl.runners}
  if all(reasons.values()):
    raise ValueError(f'attention implementation {implementation!r} refuses this call: '
                     + '; '.join(f'on {p}: {r}' for p, r in reasons.items())
                     + f'. Valid here: {", ".join(_valid_names(call))}')
  return reasons


_LAYER: contextvars.ContextVar[str | None] = contextvars.ContextVar('layer', default=None)
_RECORD: contextvars.ContextVar[dict | None] = contextvars.ContextVar('record', default=None)


def _record(call: Call, name_on: Callable[[str], str]) -> None:
  """Inside `recording`: notes the implementation name_on(platform) of this call's layer."""
  record = _RECORD.get()
  if record is not None:
    layer = record['layers'].setdefault(_LAYER.get() or call.kernel, {})
    for p in record['platforms']:
      layer.setdefault(p, set()).add(name_on(p))


def run_xla(call: Call, implementation: str) -> None:
  """For a kernel that computes `call` with its own xla code whatever the implementation (the
  dense kernel asked for its weights): refuses what `check` refuses, and records xla."""
  check(call, implementation)
  _record(call, lambda p: 'xla')


def attend(call: Call, implementation: str = 'auto') -> jax.Array:
  """Runs `call` with `implementation` (a name in IMPLEMENTATIONS, or 'auto') -> [B, Q, N, Dv].

  Raises ValueError naming the reason and the valid implementations when it refuses the call.
  """
  branches = _branches(call, implementation)
  _record(call, lambda p: resolve(call, p) if implementation == 'auto' else implementation)
  args = (call.q, call.k, call.v, call.mask)
  per_platform = {p: functools.partial(run, call) for p, run in branches.items()}
  default = per_platform.pop('default')
  if not per_platform:
    return default(*args)
  return jax.lax.platform_dependent(*args, default=default, **per_platform)


def _get(implementation: str) -> Implementation | None:
  """IMPLEMENTATIONS' entry (None for 'auto'); ValueError naming the nearest and every name."""
  return choose({'auto': None, **{n: IMPLEMENTATIONS.get(n) for n in IMPLEMENTATIONS}},
                implementation, 'implementation')


def check_kernel(kernel: str, implementation: str) -> None:
  """ValueError unless `implementation` ('auto' or a name in IMPLEMENTATIONS) implements the
  kernel named `kernel`, naming the valid ones."""
  impl = _get(implementation)
  if impl is None:
    return
  if '*' not in impl.runners and kernel not in impl.kernels:
    valid = ['auto', 'xla', *(n for n in IMPLEMENTATIONS
                              if kernel in IMPLEMENTATIONS.get(n).kernels)]
    raise ValueError(f'implementation {implementation!r} does not implement the {kernel!r} '
                     f'kernel (it implements {", ".join(impl.kernels)}); valid for '
                     f'{kernel!r}: {", ".join(valid)}')


# ---- what ran ------------------------------------------------------------------------------------
@contextlib.contextmanager
def recording(platforms=PLATFORMS) -> Iterator[dict[str, dict[str, set[str]]]]:
  """Inside the block, every kernel call traced records, per layer (or kernel name), the
  implementation it resolves to on each of `platforms`: {layer: {platform: {names}}}."""
  record = {'platforms': tuple(platforms), 'layers': {}}
  token = _RECORD.set(record)
  try:
    yield record['layers']
  finally:
    _RECORD.reset(token)


def _tagged(path: str, kernel: Callable) -> Callable:
  @functools.wraps(kernel)
  def run(*args, **kwargs):
    token = _LAYER.set(path)
    try:
      return kernel(*args, **kwargs)
    finally:
      _LAYER.reset(token)
  return run


def for_model(model: nnx.Module, *inputs: Any, platforms=PLATFORMS, method: str = '__call__',
              **kwargs: Any) -> dict[str, dict[str, str]]:
  """Which implementation each attention layer of `model` runs, per lowering platform, when it
  is called as model.<method>(*inputs, **kwargs) (traced abstractly: nothing is computed):
  {layer path, e.g. 'encoder.layers.0.self_attn': {platform: name}}; a layer whose calls differ
  (e.g. training and decoding shapes) names each, joined by '+'. The model is not changed.

  For results.json and the bench rows (attention_zoo/attention/implementations.py:for_model), e.g.
  for_model(model, *task.model_inputs(batch)) in the mode (train / eval) that is recorded.
  """
  graphdef, state = nnx.split(model)

  def trace(state, *inputs):
    copy = nnx.merge(graphdef, state)
    for path, node in nnx.iter_graph(copy):  # the attention layers: a score and a kernel
      kernel = getattr(node, 'kernel', None)
      if (isinstance(node, nnx.Module) and hasattr(node, 'score') and callable(kernel)
          and not isinstance(kernel, nnx.Variable)):
        node.kernel = _tagged('.'.join(map(str, path)), kernel)
    return getattr(copy, method)(*inputs, **kwargs)

  with recording(platforms) as layers:
    jax.eval_shape(trace, state, *inputs)
  return {layer: {p: '+'.join(sorted(names)) for p, names in per.items()}
          for layer, per in sorted(layers.items())}


def targets(implementation: str, platform: str) -> tuple[str, ...]:
  """The custom-call targets `implementation` puts in a program lowered for `platform` (none for
  xla): e.g. ('tpu_custom_call',) for pallas on tpu, the host level's FFI targets for native."""
  if implementation == 'native':
    return native_lib.target_names() if platform == 'cpu' else ()
  found = TARGETS.get((implementation, platform))
  return (found,) if found else ()


def cpu_only_targets() -> tuple[str, ...]:
  """The FFI targets of every native level: custom calls that must never reach a cuda or tpu
  program."""
  return tuple(t for level in native_lib.LEVELS for t in native_lib.target_names(level))


def export_checks(platform: str) -> list:
  """The jax.export safety checks to disable for a program lowered for `platform` by these
  implementations: their custom calls (ours, Triton's) carry no compatibility guarantee."""
  from jax import export  # pylint: disable=import-outside-toplevel
  names = {'cpu': cpu_only_targets(), 'cuda': (TARGETS[('pallas', 'cuda')],)}.get(platform, ())
  return [export.DisabledSafetyCheck.custom_call(n) for n in names]

