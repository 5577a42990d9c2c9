"""The native CPU attention (an XLA FFI custom call) against hand-written numpy, forward and
backward, over shapes that span several of its 64 x 64 blocks unevenly, for every instruction-set
level this CPU runs; its builds per level (warnings as errors); and the chunked kernel's
dispatch to it."""

import platform
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.attention import kernels, masks, native, scores
from tests import numpy_reference as ref

pytestmark = pytest.mark.skipif(shutil.which('g++') is None and shutil.which('c++') is None,
                                reason='no C++ compiler: the native path is off')


def _np_attention(q, k, v, visible, scale):
  """out, and the backward pass of sum(out · cot), of softmax(scale · q kᵀ | visible) v in numpy.
  q [B, Q, N, D], visible [B, N, Q, K] bool; a query with nothing visible gets 0."""
  s = np.einsum('bqnd,bknd->bnqk', q, k) * scale
  s = np.where(visible, s, -np.inf)
  m = np.max(s, -1, keepdims=True)
  e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
  p = e / np.maximum(np.sum(e, -1, keepdims=True), 1e-300)  # [B, N, Q, K]

  def backward(cot):  # dp = do vᵀ, ds = p ∘ (dp - rowsum(dp ∘ p)), dq = scale · ds k, ...
    dp = np.einsum('bqnd,bknd->bnqk', cot, v)
    ds = p * (dp - np.sum(dp * p, -1, keepdims=True))
    return (scale * np.einsum('bnqk,bknd->bqnd', ds, k),
            scale * np.einsum('bnqk,bqnd->bknd', ds, q), np.einsum('bnqk,bqnd->bknd', p, cot))

  return np.einsum('bnqk,bknd->bqnd', p, v), backward


def _visible(valid, causal, q_len, k_len):
  """[B, 1, Q, K] from key_valid [B, K] and the causal flag."""
  vis = valid[:, None, None, :].astype(bool)
  if causal:
    vis = vis & np.tril(np.ones((q_len, k_len), bool))[None, None]
  return np.broadcast_to(vis, (valid.shape[0], 1, q_len, k_len))


RUNNABLE = [lvl for lvl in ('x86-64-v2', 'x86-64-v3', 'x86-64-v4', 'armv8-a')
            if native.can_run(lvl)]


def test_builds_and_registers():
  assert native.available()
  assert native.build() == native.library_path()  # cached: a second build is the same file
  assert native.library_path().exists()
  assert native.library_path().name.startswith(f'flash_cpu-{native.host_level()}-')


@pytest.mark.parametrize('level', ['x86-64-v2', 'x86-64-v3', 'x86-64-v4'])
def test_compiles_for_each_x86_level_with_warnings_as_errors(level):
  """-Wall -Wextra -Werror (FLAGS) and -march=<level>; builds the library that the tests below
  run where this CPU can (cached by source, flags and compiler: a few seconds the first time)."""
  assert {'-Wall', '-Wextra', '-Werror'} <= set(native.FLAGS) and '-w' not in native.FLAGS
  if platform.machine().lower() not in ('x86_64', 'amd64'):
    pytest.skip('not an x86-64 host')
  path = native.build(level)
  assert path.exists() and level in path.name
  if native.can_run(level):
    assert native.available(level)
    assert native.vector_floats(level) == native.LEVELS[level].floats  # 4, 8, 16 floats


@pytest.mark.skipif(shutil.which('aarch64-linux-gnu-g++') is None,
                    reason='no aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)')
def test_cross_compiles_for_neon(tmp_path):
  """armv8-a: compiles with warnings as errors, and its micro-kernel uses 4-float NEON FMAs."""
  asm = tmp_path / 'flash_cpu.s'
  cmd = native.compile_command('armv8-a', asm, cxx='aarch64-linux-gnu-g++', extra=('-S',))
  cmd.remove('-shared')
  result = subprocess.run(cmd, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert '.4s' in asm.read_text() and 'fmla' in asm.read_text()


def test_host_level_from_cpu_flags(monkeypatch):
  v2 = {'cx16', 'lahf_lm', 'popcnt', 'sse4_1', 'sse4_2', 'ssse3'}
  v3 = v2 | {'avx', 'avx2', 'bmi1', 'bmi2', 'f16c', 'fma', 'abm', 'movbe', 'xsave'}
  v4 = v3 | {'avx512f', 'avx512bw', 'avx512cd', 'avx512dq', 'avx512vl'}
  monkeypatch.setattr(platform, 'machine', lambda: 'x86_64')
  for flags, want in ((v4, 'x86-64-v4'), (v4 - {'avx512vl'}, 'x86-64-v3'),  # Zen 3: no AVX-512
                      (v3, 'x86-64-v3'), (v3 - {'fma'}, 'x86-64-v2'), (v2, 'x86-64-v2'),
                      ({'sse2'}, None)):
    monkeypatch.setattr(native, '_cpu_flags', lambda flags=flags: frozenset(flags))
    assert native.host_level.__wrapped__() == want
  assert not native.can_run('armv8-a')
  monkeypatch.setattr(platform, 'machine', lambda: 'aarch64')
  assert native.host_level.__wrapped__() == 'armv8-a' and not native.can_run('x86-64-v2')


def test_each_level_has_its_own_targets_and_library():
  assert native.target_names('x86-64-v3') == ('az_flash_fwd_x86_64_v3', 'az_flash_bwd_x86_64_v3')
  assert len({native.library_path(lvl) for lvl in native.LEVELS}) == len(native.LEVELS)
  with pytest.raises(ValueError, match='unknown level .*known: x86-64-v2'):
    native.library_path('avx9')


def test_preferred_says_why_per_level():
  for level in native.LEVELS:
    decision = native.preferred(level)
    assert bool(decision) == native.PREFERRED[level][0] and level in decision.reason
  assert not native.preferred('armv8-a')  # not measured: the XLA path
  assert bool(native.preferred()) == native.PREFERRED[native.host_level()][0]


def test_levels_run_side_by_side_in_one_program():
  if len(RUNNABLE) < 2:
    pytest.skip('this CPU runs one level')
  rng = np.random.default_rng(4)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 70, 2, 16)), jnp.float32) for _ in range(3))
  valid = jnp.ones((1, 70), jnp.uint8)
  for level in RUNNABLE:
    assert native.available(level)
  both = lambda q: [native.attention(q, k, v, valid, 0.25, True, level=lvl) for lvl in RUNNABLE]
  jaxpr = str(jax.make_jaxpr(both)(q))
  assert all(native.target_names(lvl)[0] in jaxpr for lvl in RUNNABLE)
  outs = jax.jit(both)(q)
  for out in outs[1:]:
    np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-6)


def test_tracing_never_compiles(monkeypatch):
  """The host level was built at import: tracing the chunked kernel runs no compiler, and a level
  that is not registered is refused at trace time rather than built."""
  def no_compiler(*args, **kwargs):
    raise AssertionError(f'compiled while tracing: {args}')
  monkeypatch.setattr(subprocess, 'run', no_compiler)
  monkeypatch.setitem(native.PREFERRED, native.host_level(), (True, 'test'))
  score = scores.make_score('scaled_dot', 8, 8, rngs=nnx.Rngs(0))
  q = jnp.ones((1, 9, 2, 8), jnp.float32)
  assert _calls_native(lambda q: kernels.chunked(score, q, q, q, causal=True)[0], q)
  monkeypatch.setattr(native, '_VECTOR_FLOATS', {})
  with pytest.raises(RuntimeError, match=r'not registered: call native.available\('):
    jax.make_jaxpr(lambda q: native.attention(q, q, q, jnp.ones((1, 9), jnp.uint8), 1.0, False))(q)


def test_numpy_backward_reference_equals_numerical_gradients():
  """The analytic numpy backward used below is itself right (central differences)."""
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(1, 3, 1, 2)) for _ in range(3))
  cot = rng.normal(size=(1, 3, 1, 2))
  visible = _visible(np.array([[1, 1, 0]]), True, 3, 3)
  _, backward = _np_attention(q, k, v, visible, 0.7)
  loss = lambda: float(np.sum(_np_attention(q, k, v, visible, 0.7)[0] * cot))
  for got, x in zip(backward(cot), (q, k, v)):
    np.testing.assert_allclose(got, ref.numerical_grad(loss, x), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('level', RUNNABLE)
@pytest.mark.parametrize('b,q_len,k_len,n,d,dv,causal,masked', [
    (2, 70, 70, 3, 64, 64, False, False),    # a ragged second block
    (2, 70, 130, 2, 48, 40, False, True),    # Q != K, dims that are not multiples of 16
    (1, 200, 200, 2, 64, 64, True, True),    # causal blocks skipped, padding inside blocks
    (2, 5, 3, 1, 8, 8, True, False),         # shorter than one block
    (1, 129, 129, 1, 32, 32, True, False),   # one query into a third block
])
def test_matches_numpy_forward_and_backward(b, q_len, k_len, n, d, dv, causal, masked, level):
  assert native.available(level)
  rng = np.random.default_rng(q_len + k_len)
  q, k = rng.normal(size=(b, q_len, n, d)), rng.normal(size=(b, k_len, n, d))
  v, cot = rng.normal(size=(b, k_len, n, dv)), rng.normal(size=(b, q_len, n, dv))
  valid = np.ones((b, k_len), np.uint8)
  if masked:
    valid[0, k_len // 2:] = 0
    valid[-1, :] = 0 if b > 1 else valid[-1]  # a whole example with no key: zeros, no NaN
  scale = d ** -0.5
  want, backward = _np_attention(q, k, v, _visible(valid, causal, q_len, k_len), scale)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  attend = lambda q, k, v: native.attention(q, k, v, jnp.asarray(valid), scale, causal, level)
  out, pull = jax.vjp(attend, f32(q), f32(k), f32(v))
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  for name, got, w in zip('qkv', pull(f32(cot)), backward(cot)):
    np.testing.assert_allclose(got, w, rtol=1e-4, atol=2e-5, err_msg=f'd out / d {name}')
  if masked and b > 1:
    assert np.all(np.asarray(out)[-1] == 0) and np.all(np.isfinite(np.asarray(out)))


def test_vmap_equals_a_loop():
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.normal(size=(3, 2, 20, 2, 16)), jnp.float32) for _ in range(3))
  valid = jnp.ones((1, 20), jnp.uint8)
  attend = lambda q, k, v: native.attention(q, k, v, valid, 0.25, True)
  batched = jax.vmap(attend)(q, k, v)
  for i in range(3):
    np.testing.assert_allclose(batched[i], attend(q[i], k[i], v[i]), rtol=1e-6, atol=1e-6)


def _calls_native(fn, *args) -> bool:
  return 'az_flash_fwd' in str(jax.make_jaxpr(fn)(*args))


def test_chunked_takes_the_native_path_only_where_eligible(monkeypatch):
  monkeypatch.setitem(native.PREFERRED, native.host_level(), (True, 'test'))
  score = scores.make_score('scaled_dot', 8, 8, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(2)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 9, 2, 8)), jnp.float32) for _ in range(3))
  padding = masks.padding_mask(jnp.arange(9)[None, :] < jnp.array([[9], [5]]))  # [B, 1, 1, K]
  per_query = masks.causal_mask(9)
  run = lambda mask=None, score=score, **kw: (
      lambda q: kernels.chunked(score, q, k, v, mask, **kw)[0])
  assert _calls_native(run(padding), q)
  assert _calls_native(run(causal=True), q)
  assert not _calls_native(run(per_query), q)  # a [Q, K] mask: attention.flash
  assert not _calls_native(run(padding, implementation='xla'), q)
  assert not _calls_native(run(padding, dropout_rate=0.1, dropout_rng=jax.random.key(0)), q)
  additive = scores.make_score('additive', 8, 8, rngs=nnx.Rngs(0))
  assert not _calls_native(run(padding, score=additive), q)
  assert not _calls_native(run(padding), q.astype(jnp.bfloat16))
  monkeypatch.setitem(native.PREFERRED, native.host_level(), (False, 'test'))
  assert not _calls_native(run(padding), q)  # `auto` where the level is not preferred
  monkeypatch.setitem(native.PREFERRED, native.host_level(), (True, 'test'))
  # Either path, the same numbers (and the dense kernel's).
  for mask, causal in ((padding, False), (None, True), (padding, True)):
    got = kernels.chunked(score, q, k, v, mask, causal=causal)[0]
    xla = kernels.chunked(score, q, k, v, mask, causal=causal, implementation='xla')[0]
    dense = kernels.dense(score, q, k, v, mask, causal=causal)[0]
    np.testing.assert_allclose(got, xla, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-6)


def test_chunked_gradients_equal_the_xla_path(monkeypatch):
  monkeypatch.setitem(native.PREFERRED, native.host_level(), (True, 'test'))
  score = scores.make_score('dot', 16, 16, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(3)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 75, 2, 16)), jnp.float32) for _ in range(3))
  mask = masks.padding_mask(jnp.arange(75)[None, :] < jnp.array([[75], [40]]))
  loss = lambda implementation: jax.grad(lambda q, k, v: jnp.sum(jnp.tanh(kernels.chunked(
      score, q, k, v, mask, causal=True, implementation=implementation)[0])), argnums=(0, 1, 2))
  for got, want in zip(loss('native')(q, k, v), loss('xla')(q, k, v)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_off_switch(monkeypatch):
  monkeypatch.setenv('ATTENTION_ZOO_NATIVE', '0')
  assert not native.available()


def test_library_is_keyed_by_its_source(monkeypatch, tmp_path):
  monkeypatch.setenv('ATTENTION_ZOO_CACHE', str(tmp_path))
  first = native.library_path()
  assert first.parent == tmp_path / 'ffi'
  source = tmp_path / 'flash_cpu.cc'
  source.write_text(native.SOURCE.read_text() + '\n// changed\n')
  monkeypatch.setattr(native, 'SOURCE', source)
  assert native.library_path() != first


def test_build_failure_names_the_command(monkeypatch, tmp_path):
  monkeypatch.setenv('ATTENTION_ZOO_CACHE', str(tmp_path))
  source = tmp_path / 'broken.cc'
  source.write_text('this is not C++\n')
  monkeypatch.setattr(native, 'SOURCE', source)
  with pytest.raises(RuntimeError, match=r'building broken.cc failed: .*-Werror.*broken.cc'):
    native.build()
  assert not list((tmp_path / 'ffi').glob('*.so'))  # nothing half-written

