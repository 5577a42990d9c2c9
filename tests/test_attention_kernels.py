"""Every registered score x kernel against a hand-written numpy reference: outputs and gradients.

The scores and kernels come from their registries (attention_zoo.attention.SCORES, KERNELS) and
the references from tests/numpy_reference.py, so a new score or kernel reaches every test here
without an edit (tests/test_adding_a_score.py shows it with a cosine score).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.attention import kernels, masks, scores
from tests import numpy_reference as ref

B, Q, K, N, D, A = 2, 9, 13, 2, 4, 5
# Test options per kernel: the chunked one gets small tiles, so that queries and keys span
# several (uneven) blocks.
KERNEL_OPTIONS = {'chunked': dict(q_block=4, k_block=5)}


def kernel(name: str):
  """The registered kernel `name` with its test options."""
  return functools.partial(kernels.KERNELS.get(name), **KERNEL_OPTIONS.get(name, {}))


def make_score(name: str, seed: int = 0) -> scores.Score:
  return scores.make_score(name, D, D, num_heads=N, score_dim=A, rngs=nnx.Rngs(seed))


def takes(kernel_name: str, score_name: str) -> bool:
  """Does the kernel take the score? The fused one takes only scores with a fused_scale."""
  return kernel_name != 'fused' or make_score(score_name).fused_scale is not None


def cases() -> list[tuple[str, str]]:
  """(score, kernel) for every registered score and every registered kernel that takes it."""
  return [(s, k) for s in scores.SCORES for k in kernels.KERNELS if takes(k, s)]


def _inputs(seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(B, Q, N, D))
  k = rng.normal(size=(B, K, N, D))
  v = rng.normal(size=(B, K, N, D))
  valid = np.ones((B, K), bool)
  valid[0, 10:] = False  # padding in the first example
  mask = np.logical_and(valid[:, None, None, :], np.tril(np.ones((Q, K), bool), k=2)[None, None])
  mask[1, :, 4, :] = False  # one query with no key at all
  return q.astype(dtype), k.astype(dtype), v.astype(dtype), mask


@pytest.mark.parametrize('score_name,kernel_name', cases())
def test_output_matches_numpy(score_name, kernel_name):
  score = make_score(score_name, seed=1)
  q, k, v, mask = _inputs()
  out, weights = kernel(kernel_name)(score, *(jnp.asarray(x, jnp.float32) for x in (q, k, v)),
                                     jnp.asarray(mask), return_weights=True)
  want_out, want_w = ref.attention(score_name, q, k, v, mask, ref.params_of(score))
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(weights, want_w, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(out)[1, 4] == 0)  # the query with no key


@pytest.mark.parametrize('score_name,kernel_name', cases())
def test_gradients_match_numpy(score_name, kernel_name):
  """d loss / d q, k, v and every parameter the score holds (whatever its kind or name)."""
  score = make_score(score_name, seed=2)
  q, k, v, mask = _inputs(seed=3)
  cot = np.random.default_rng(4).normal(size=(B, Q, N, D))
  graphdef, state = nnx.split(score)

  def loss(state, q, k, v):
    out, _ = kernel(kernel_name)(nnx.merge(graphdef, state), q, k, v, jnp.asarray(mask))
    return jnp.sum(out * cot)

  f32 = lambda x: jnp.asarray(x, jnp.float32)
  grads = jax.grad(loss, argnums=(0, 1, 2, 3))(state, f32(q), f32(k), f32(v))
  params = ref.params_of(score)
  np_loss = lambda: float(np.sum(ref.attention(score_name, q, k, v, mask, params)[0] * cot))
  for name, got, x in zip('qkv', grads[1:], (q, k, v)):
    np.testing.assert_allclose(got, ref.numerical_grad(np_loss, x), rtol=1e-4, atol=1e-5,
                               err_msg=f'd loss / d {name}')
  got = ref.params_of(nnx.merge(graphdef, grads[0]))
  assert set(got) == set(params)
  for name, x in params.items():
    np.testing.assert_allclose(got[name], ref.numerical_grad(np_loss, x), rtol=1e-4, atol=1e-5,
                               err_msg=f'd loss / d {name}')


class _Tempered(scores.Score):
  """qᵀk times a learned value per head: a bare nnx.Param, not a Linear."""

  def __init__(self, dims: scores.ScoreDims, *, rngs: nnx.Rngs):
    del rngs
    self.g = nnx.Param(jnp.full((dims.num_heads,), 2.0))

  def __call__(self, q, k):
    return jnp.einsum('bqnd,bknd->bnqk', q, k) * self.g[...][:, None, None]  # [B, N, Q, K]


def test_a_reference_that_leaves_a_parameter_unread_fails():
  """The references must read every parameter the module holds: one that forgets the per-head
  value g fails the output and gradient tests instead of leaving g out of the gradient check."""
  forgetful = lambda q, k, params: np.einsum('bqnd,bknd->bnqk', q, k)  # no g
  with (scores.SCORES.override('_tempered', _Tempered),
        ref.SCORE_REFERENCES.override('_tempered', forgetful)):
    for test in (test_output_matches_numpy, test_gradients_match_numpy):
      with pytest.raises(AssertionError, match=r"'_tempered' does not read .*\['g'\]"):
        test('_tempered', 'dense')
  honest = lambda q, k, params: forgetful(q, k, params) * params['g'][:, None, None]
  with (scores.SCORES.override('_tempered', _Tempered),
        ref.SCORE_REFERENCES.override('_tempered', honest)):
    test_output_matches_numpy('_tempered', 'chunked')
    test_gradients_match_numpy('_tempered', 'chunked')


@pytest.mark.parametrize('score_name', list(scores.SCORES))
def test_scores_stay_finite_on_the_chunked_kernels_zero_padding(score_name):
  """The interface of attention.scores: finite logits, and finite gradients for q, k and every
  parameter, on zero queries and keys (what the chunked kernel pads blocks with), then through
  the chunked kernel on lengths that leave padded rows in its blocks."""
  score = make_score(score_name)
  graphdef, state = nnx.split(score)
  zeros = jnp.zeros((B, 3, N, D))
  logits = lambda state, q, k: nnx.merge(graphdef, state)(q, k)
  out = logits(state, zeros, zeros)
  assert out.shape == (B, N, 3, 3) and np.all(np.isfinite(out))
  grads = jax.grad(lambda *a: jnp.sum(logits(*a)), argnums=(0, 1, 2))(state, zeros, zeros)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)), grads
  q, k, v, mask = (jnp.asarray(x) for x in _inputs(dtype=np.float32))  # Q = 9, K = 13: padded
  attend = lambda state, q, k, v: jnp.sum(kernel('chunked')(nnx.merge(graphdef, state), q, k, v,
                                                            mask)[0])
  grads = jax.grad(attend, argnums=(0, 1, 2, 3))(state, q, k, v)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)), grads


@pytest.mark.parametrize('score_name', ['additive', 'concat'])
@pytest.mark.parametrize('kernel_name', ['dense', 'chunked'])
def test_tanh_scores_on_large_blocks_loop_over_the_score_dim(score_name, kernel_name,
                                                             monkeypatch):
  """From scores.TANH_LOOP_FROM logits on (here: every block), additive and concat scan over the
  score dim with their own backward pass: the same outputs and gradients as numpy."""
  score = make_score(score_name)
  q, k = (jnp.asarray(x, jnp.float32) for x in _inputs()[:2])
  jaxpr = lambda: str(jax.make_jaxpr(lambda q, k: score(q, k))(q, k))  # traced anew each call
  assert 'custom_vjp_call' not in jaxpr()
  monkeypatch.setattr(scores, 'TANH_LOOP_FROM', 1)
  assert 'custom_vjp_call' in jaxpr()
  test_output_matches_numpy(score_name, kernel_name)
  test_gradients_match_numpy(score_name, kernel_name)


@pytest.mark.parametrize('kernel_name', list(kernels.KERNELS))
def test_fully_masked_query_is_zero_not_nan(kernel_name):
  score = scores.make_score('scaled_dot', D, D, rngs=nnx.Rngs(0))
  q, k, v, _ = (jnp.asarray(x, jnp.float32) for x in _inputs())
  mask = jnp.ones((B, 1, Q, K), bool).at[:, :, 0].set(False)  # query 0 sees nothing
  f = lambda q, k, v: kernel(kernel_name)(score, q, k, v, mask, return_weights=True)
  out, weights = f(q, k, v)
  assert np.all(np.asarray(out)[:, 0] == 0) and np.all(np.asarray(weights)[:, :, 0] == 0)
  grads = jax.grad(lambda *a: jnp.sum(f(*a)[0] ** 2), argnums=(0, 1, 2))(q, k, v)
  for g in grads:
    assert np.all(np.isfinite(g))
  assert np.all(np.asarray(grads[0])[:, 0] == 0)
  # Everything masked: all zeros, forward and backward.
  none = jnp.zeros((B, 1, Q, K), bool)
  out = kernel(kernel_name)(score, q, k, v, none)[0]
  g = jax.grad(lambda q: jnp.sum(kernel(kernel_name)(score, q, k, v, none)[0]))(q)
  assert np.all(np.asarray(out) == 0) and np.all(np.asarray(g) == 0)


@pytest.mark.parametrize('kernel_name', list(kernels.KERNELS))
def test_huge_logits_stay_finite(kernel_name):
  score = scores.make_score('dot', D, D, rngs=nnx.Rngs(0))
  q, k, v, mask = (jnp.asarray(x) for x in _inputs(dtype=np.float32))
  q = q / jnp.linalg.norm(q, axis=-1, keepdims=True) * 100.0
  k = k / jnp.linalg.norm(k, axis=-1, keepdims=True) * 100.0  # |logits| up to 1e4
  logits = np.einsum('bqhd,bkhd->bhqk', q, k)
  assert np.abs(logits).max() > 5e3
  out, weights = kernel(kernel_name)(score, q, k, v, mask, return_weights=True)
  grads = jax.grad(lambda q: jnp.sum(kernel(kernel_name)(score, q, k, v, mask)[0]))(q)
  assert np.all(np.isfinite(out)) and np.all(np.isfinite(grads))
  # softmax of such logits is one-hot on the largest unmasked logit
  top = np.where(mask, logits, -np.inf).argmax(-1)  # [B, N, Q]
  b, h, i = 0, 0, 3
  np.testing.assert_allclose(np.asarray(out)[b, i, h], np.asarray(v)[b, top[b, h, i], h], atol=1e-4)


@pytest.mark.parametrize('kernel_name', list(kernels.KERNELS))
def test_bfloat16_inputs(kernel_name):
  score = scores.make_score('scaled_dot', D, D, rngs=nnx.Rngs(0))
  q, k, v, mask = _inputs()
  out, _ = kernel(kernel_name)(score, *(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)),
                                jnp.asarray(mask))
  assert out.dtype == jnp.bfloat16
  want, _ = ref.attention('scaled_dot', q, k, v, mask, {})
  np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=5e-2)


@pytest.mark.parametrize('score_name', list(scores.SCORES))
def test_chunked_takes_the_flash_backward_without_dropout(score_name):
  """Without attention dropout the chunked kernel runs attention.flash, whose backward pass
  starts from the saved log-sum-exp (its gradients: test_gradients_match_numpy); with dropout
  it differentiates the rematerialized scan."""
  score = make_score(score_name)
  q, k, v, mask = _inputs(dtype=np.float32)
  attend = lambda q, **kw: kernel('chunked')(score, q, k, v, mask, **kw)[0]
  dropout = dict(dropout_rate=0.5, dropout_rng=jax.random.key(0))
  for kw, flash in (({}, True), (dropout, False)):
    forward = str(jax.make_jaxpr(functools.partial(attend, **kw))(q))
    backward = str(jax.make_jaxpr(jax.grad(lambda q: jnp.sum(attend(q, **kw))))(q))
    assert ('custom_vjp_call' in forward) == flash
    assert ('remat' in backward) == (not flash)


def test_causal_flag_equals_causal_mask():
  score = scores.make_score('additive', D, D, score_dim=A, rngs=nnx.Rngs(0))
  q, k, v, _ = (jnp.asarray(x, jnp.float32) for x in _inputs())
  want, _ = kernels.dense(score, q, k, v, masks.causal_mask(Q, K))
  for name in kernels.KERNELS:
    if takes(name, 'additive'):
      np.testing.assert_allclose(kernel(name)(score, q, k, v, causal=True)[0], want, atol=1e-6)


def test_grouped_kv_heads_equal_repeated_heads():
  score = scores.make_score('scaled_dot', D, D, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(B, Q, 4, D)), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(B, K, 2, D)), jnp.float32) for _ in range(2))
  want = ref.attention('scaled_dot', np.asarray(q), np.repeat(np.asarray(k), 2, 2),
                       np.repeat(np.asarray(v), 2, 2), np.ones((1, 1, 1, 1), bool), {})[0]
  for name in kernels.KERNELS:
    np.testing.assert_allclose(kernel(name)(score, q, k, v)[0], want, rtol=1e-5, atol=1e-5)


def test_chunked_memory_is_linear_in_length():
  """Compiled fwd+bwd temp memory: chunked grows ~linearly with L, dense quadratically."""
  score = scores.make_score('additive', 16, 16, score_dim=8, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(score)

  def temp_bytes(kernel, length):
    x = jax.ShapeDtypeStruct((1, length, 1, 16), jnp.float32)
    loss = lambda s, q, k, v: jnp.sum(kernel(nnx.merge(graphdef, s), q, k, v)[0])
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).lower(state, x, x, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  chunk = functools.partial(kernels.chunked, q_block=128, k_block=128)
  small, big = temp_bytes(chunk, 512), temp_bytes(chunk, 2048)
  assert big < 6 * small, (small, big)  # 4x length -> well under 16x memory
  assert temp_bytes(kernels.dense, 2048) > 10 * big  # dense holds [L, L, A] activations


def test_fused_rejects_other_scores():
  q, k, v, _ = (jnp.asarray(x, jnp.float32) for x in _inputs())
  score = scores.make_score('additive', D, D, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='fused.*dot and scaled_dot'):
    kernels.fused(score, q, k, v)


def test_bad_inputs_raise_clear_errors():
  q, k, v, _ = (jnp.asarray(x, jnp.float32) for x in _inputs())
  score = scores.make_score('dot', D, D, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'rank 4.*got shape \(9, 13\)'):
    kernels.dense(score, q, k, v, jnp.ones((Q, K), bool))
  with pytest.raises(ValueError, match=r'\(2, 1, 9, 12\) does not broadcast'):
    kernels.chunked(score, q, k, v, jnp.ones((B, 1, Q, K - 1), bool))
  with pytest.raises(ValueError, match='bool'):
    kernels.dense(score, q, k, v, jnp.ones((B, 1, Q, K)))
  with pytest.raises(ValueError, match=r'query_dim == key_dim.*query_dim=4, key_dim=6'):
    scores.make_score('scaled_dot', 4, 6, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=f"unknown score 'bahdanau'.*{', '.join(scores.SCORES)}"):
    scores.make_score('bahdanau', 4, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=f"unknown kernel 'flash'.*{', '.join(kernels.KERNELS)}"):
    kernels.get_kernel('flash')
  with pytest.raises(ValueError, match=r'must be \[B, L, N, D\], got shape \(2, 9, 4\)'):
    kernels.dense(score, q[..., 0, :], k, v)
  with pytest.raises(ValueError, match=r'multiple of key/value heads'):
    kernels.dense(score, q, jnp.concatenate([k] * 3, 2)[:, :, :3],
                  jnp.concatenate([v] * 3, 2)[:, :, :3])


def test_causal_mask_offset():
  m = np.asarray(masks.causal_mask(2, 5, offset=3))[0, 0]
  np.testing.assert_array_equal(m, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(masks.padding_mask(jnp.array([[1, 0]], bool)).shape, (1, 1, 1, 2))
  assert masks.combine_masks(None, None) is None
  both = masks.combine_masks(masks.causal_mask(3), masks.padding_mask(jnp.array([[1, 1, 0]], bool)))
  np.testing.assert_array_equal(np.asarray(both)[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
