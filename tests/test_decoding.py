"""Greedy and beam decoding against brute-force enumeration in numpy."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.models import decoding

EOS, BOS = 2, 1


def tree_step(table):
  """A 'model' whose next-token logits depend on the whole prefix: table[example, code(prefix)].

  The state is the prefix code (code' = code * (V + 1) + token + 1, from 0), so beam search
  must tile and reorder the state exactly; the example id rides along as a second leaf.
  """
  table = jnp.asarray(table)  # [B, prefix codes, V]
  vocab = table.shape[-1]

  def step_fn(state, tokens, t):
    del t
    code = state['code'] * (vocab + 1) + tokens + 1  # [B] (B * beam rows in beam search)
    return table[state['ex'], code], {'code': code, 'ex': state['ex']}  # [B, V]

  return step_fn


def init_state(batch):
  return {'code': jnp.zeros((batch,), jnp.int32), 'ex': jnp.arange(batch, dtype=jnp.int32)}


def log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def hypotheses(table, b, max_len):
  """Every distinct hypothesis of example b (PAD after the first EOS) with its log-probability."""
  vocab = table.shape[-1]
  seen = {}
  for seq in itertools.product(range(vocab), repeat=max_len):
    code, prev, logp, out = 0, BOS, 0.0, []
    for y in seq:
      code = code * (vocab + 1) + prev + 1
      logp += log_softmax(table[b, code])[y]
      out.append(y)
      prev = y
      if y == EOS:
        break
    seen[tuple(out)] = logp
  return seen


def brute_force(table, max_len, alpha):
  """Best hypothesis per example by s(Y) = log p(Y) / ((5 + |Y|) / 6)^alpha."""
  best_tokens, best_scores = [], []
  for b in range(table.shape[0]):
    scored = {h: lp / ((5 + len(h)) / 6) ** alpha
              for h, lp in hypotheses(table, b, max_len).items()}
    best = max(scored, key=scored.get)
    best_tokens.append(list(best) + [0] * (max_len - len(best)))
    best_scores.append(scored[best])
  return np.array(best_tokens), np.array(best_scores)


def numpy_greedy(table, max_len):
  vocab = table.shape[-1]
  out = np.zeros((table.shape[0], max_len), np.int32)
  for b in range(table.shape[0]):
    code, prev = 0, BOS
    for t in range(max_len):
      code = code * (vocab + 1) + prev + 1
      prev = out[b, t] = int(np.argmax(table[b, code]))
      if prev == EOS:
        break
  return out


def random_table(seed, batch=3, max_len=4, vocab=4):
  """Random logits per prefix; EOS made rarer so that long hypotheses matter."""
  table = np.random.default_rng(seed).normal(size=(batch, (vocab + 1) ** max_len, vocab)) * 2.0
  table[:, :, EOS] -= 1.0
  return table


def run_greedy(table, max_len):
  fn = jax.jit(functools.partial(decoding.greedy_decode, tree_step(table),
                                 max_len=max_len, eos_id=EOS))
  return np.asarray(fn(init_state(table.shape[0]), jnp.full((table.shape[0],), BOS)))


def run_beam(table, max_len, beam_size, alpha):
  fn = jax.jit(functools.partial(decoding.beam_search, tree_step(table), max_len=max_len,
                                 eos_id=EOS, beam_size=beam_size, length_penalty=alpha))
  tokens, scores = fn(init_state(table.shape[0]), jnp.full((table.shape[0],), BOS))
  return np.asarray(tokens), np.asarray(scores)


def first_order_step(table):
  """logits = table[t, previous token]: table [T, V, V], the same for every example."""
  table = jnp.asarray(table)
  return lambda state, tokens, t: (table[t, tokens], state)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_greedy_matches_numpy_argmax_loop(seed):
  table = random_table(seed, batch=4, max_len=5, vocab=5)
  np.testing.assert_array_equal(run_greedy(table, 5), numpy_greedy(table, 5))


def test_greedy_emits_pad_after_eos():
  table = np.zeros((4, 4, 4))
  table[:, :, 3] = 1.0  # token 3 is always likeliest ...
  table[1, :, EOS] = 5.0  # ... except that EOS is at t = 1, after which token 3 would win again
  tokens = decoding.greedy_decode(first_order_step(table), jnp.zeros((2,)), jnp.full((2,), BOS),
                                  max_len=4, eos_id=EOS)
  np.testing.assert_array_equal(tokens, [[3, EOS, 0, 0]] * 2)


@pytest.mark.parametrize('alpha', [0.0, 0.6, 2.0])
def test_exhaustive_beam_equals_brute_force(alpha):
  table = random_table(seed=int(alpha * 10) + 5, batch=8)
  # k = V^(T-1) keeps every hypothesis alive to the last step: beam search must be exact.
  tokens, scores = run_beam(table, 4, beam_size=4 ** 3, alpha=alpha)
  want_tokens, want_scores = brute_force(table, 4, alpha)
  np.testing.assert_array_equal(tokens, want_tokens)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


@pytest.mark.parametrize('seed', [3, 4])
def test_beam_size_one_equals_greedy(seed):
  table = random_table(seed, batch=4, max_len=5, vocab=5)
  tokens, _ = run_beam(table, 5, beam_size=1, alpha=0.6)
  np.testing.assert_array_equal(tokens, run_greedy(table, 5))


def test_beam_finds_better_sequence_than_greedy():
  """p(3)=.5, p(4)=.4 first; after 3 the next token is uncertain, after 4 EOS is near-certain."""
  vocab = 5
  probs = np.full((3, vocab, vocab), 1e-6)  # [t, previous token, next token]
  probs[0, BOS, 3], probs[0, BOS, 4], probs[0, BOS, EOS] = .5, .4, .1
  probs[1:, 3, 3:] = 1 / 3  # after 3: uniform over {EOS, 3, 4}
  probs[1:, 3, EOS] = 1 / 3
  probs[1:, 4, EOS], probs[1:, 4, 3] = .99, .01  # after 4: stop
  table = np.log(probs)
  bos = jnp.full((1,), BOS)
  greedy = decoding.greedy_decode(first_order_step(table), jnp.zeros((1,)), bos, max_len=3,
                                  eos_id=EOS)
  tokens, score = decoding.beam_search(first_order_step(table), jnp.zeros((1,)), bos, max_len=3,
                                       eos_id=EOS, beam_size=2, length_penalty=0.0)
  np.testing.assert_array_equal(greedy, [[3, EOS, 0]])  # the tie at t = 1 goes to the lowest id
  np.testing.assert_array_equal(tokens, [[4, EOS, 0]])
  want = log_softmax(table[0, BOS])[4] + log_softmax(table[1, 4])[EOS]
  np.testing.assert_allclose(score, [want], rtol=1e-5)


def test_bad_beam_size_raises():
  with pytest.raises(ValueError, match='beam_size'):
    run_beam(random_table(0), 4, beam_size=0, alpha=0.6)


class _Noisy(nnx.Module):
  """A 'model' whose output depends on its mode: dropout on x in train mode."""

  def __init__(self):
    self.dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    self.scale = nnx.Param(jnp.float32(2.0))

  def __call__(self, x):
    return self.dropout(x) * self.scale[...]


def test_eval_mode_jit_runs_an_eval_copy_compiled_once_per_shape():
  @functools.partial(decoding.eval_mode_jit, static_argnames=('times',))
  def run(model, x, *, times):
    return model(x) * times

  model = _Noisy()  # train mode: its own call drops out
  x = jnp.ones((4, 8))
  assert not np.allclose(model(x), 2.0 * x)
  before = run.jitted._cache_size()
  np.testing.assert_array_equal(run(model, x, times=3), 6.0 * x)  # no dropout in the copy
  assert model.dropout.deterministic is False  # the caller's model keeps its mode
  run(model, x + 1, times=3)
  assert run.jitted._cache_size() == before + 1
  run(model, x[:2], times=3)  # a new shape: one more compilation
  run(model, x, times=4)  # a new static option: one more
  assert run.jitted._cache_size() == before + 3
  model.scale[...] = jnp.float32(5.0)  # new parameter values: same compilation, new numbers
  np.testing.assert_array_equal(run(model, x, times=3), 15.0 * x)
  assert run.jitted._cache_size() == before + 3
