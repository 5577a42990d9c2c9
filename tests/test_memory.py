"""End-to-end memory network: encodings, tying, temporal encoding, linear start, random noise."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from attention_zoo.models import get_model
from attention_zoo.models import memory
from tests import learning

V, M, W, E = 12, 5, 4, 8
STORY = jnp.asarray(np.random.default_rng(0).integers(3, V, (3, M, W))).at[:, 3:].set(0).at[
    :, :, 3].set(0)  # [B=3, M=5, W=4]: slots 3, 4 empty; last word PAD
QUERY = jnp.array([[3, 4, 0, 0], [5, 0, 0, 0], [6, 7, 8, 0]])  # [B, W]


def build(seed=0, **kw):
  kw = dict(dict(embed_dim=E, random_noise=0.0), **kw)
  return get_model('memn2n', vocab_size=V, num_classes=V, memory_size=M, sentence_len=W,
                   rngs=nnx.Rngs(seed), **kw)


def run(model, story=STORY, query=QUERY):
  """-> (logits [B, classes], per-hop weights [B, hops, M])."""
  model.capture_weights = True
  logits, inter = nnx.capture(model, nnx.Intermediate)(story, query)
  return np.asarray(logits), np.asarray(inter['attention_weights'][0])


@pytest.mark.parametrize('tying', ['adjacent', 'layerwise'])
@pytest.mark.parametrize('encoding', ['bow', 'position'])
@pytest.mark.parametrize('temporal', [False, True])
def test_shapes_and_empty_memories_get_no_weight(tying, encoding, temporal):
  logits, weights = run(build(tying=tying, encoding=encoding, temporal=temporal, hops=2))
  assert logits.shape == (3, V) and np.isfinite(logits).all()
  assert weights.shape == (3, 2, M)  # [B, hops, M]
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  assert (weights[:, :, 3:] == 0).all() and (weights[:, :, :3] > 0).all()


def test_position_encoding_matches_the_paper_formula():
  tokens = jnp.array([[4, 5, 6, 0, 0]])  # J = 3 real words of W = 5
  got = np.asarray(memory.position_encoding(tokens, 4))[0]  # [W, d]
  want = np.zeros((5, 4))
  for j in range(1, 4):
    for k in range(1, 5):
      want[j - 1, k - 1] = (1 - j / 3) - (k / 4) * (1 - 2 * j / 3)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_position_encoding_sees_word_order_and_bag_of_words_does_not():
  swapped = STORY.at[:, :, [0, 1]].set(STORY[:, :, [1, 0]])  # swap the first two words
  for encoding, order_matters in (('bow', False), ('position', True)):
    model = build(encoding=encoding, temporal=False)
    model.eval()
    same = np.allclose(model(STORY, QUERY), model(swapped, QUERY), atol=1e-6)
    assert same != order_matters, encoding


def test_temporal_encoding_sees_memory_order():
  """Without TE (and BoW) attention over memories is permutation invariant; with TE it is not."""
  perm = jnp.array([2, 0, 1, 3, 4])
  for temporal in (False, True):
    model = build(encoding='bow', temporal=temporal)
    model.eval()
    same = np.allclose(model(STORY, QUERY), model(STORY[:, perm], QUERY), atol=1e-5)
    assert same != temporal


def test_linear_start_removes_the_softmax():
  linear = build(linear_start_steps=1)
  linear.eval()  # no training step yet: evaluation follows the first one, which is linear
  linear_logits, linear_w = run(linear)
  softmax_logits, softmax_w = run(build())
  assert not np.allclose(linear_logits, softmax_logits, atol=1e-4)
  # Hop 1 reads the same u and m: its linear weights are the logits whose softmax (over the
  # non-empty slots) is the weight of the softmax model; empty slots get 0 in both.
  np.testing.assert_allclose(jax.nn.softmax(linear_w[:, 0, :3]), softmax_w[:, 0, :3], atol=1e-5)
  assert (linear_w[:, :, 3:] == 0).all()


def test_linear_start_counts_training_steps_without_recompiling():
  """Training steps 0, 1 are linear, 2 on softmax; evaluation follows the latest training step.
  The count is the model's own state (not a parameter), so one compiled step serves all."""
  model = build(linear_start_steps=2)
  reference = build()  # the same parameters (same seed), always softmax
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  assert 'steps_seen' in rest and 'steps_seen' not in params

  @functools.partial(jax.jit, static_argnums=1)
  def call(rest, train):  # -> (logits, rest after the call)
    m = nnx.merge(graphdef, params, rest, copy=True)
    m.set_attributes(deterministic=not train)
    return m(STORY, QUERY), nnx.split(m, nnx.Param, ...)[2]

  reference.eval()
  softmax = np.asarray(reference(STORY, QUERY))
  is_softmax = lambda logits: np.allclose(logits, softmax, atol=1e-6)
  trace = []
  for _ in range(3):
    evaluated, _ = call(rest, False)
    trained, rest = call(rest, True)
    trace.append((is_softmax(evaluated), is_softmax(trained)))
  assert trace == [(False, False), (False, False), (False, True)]
  assert is_softmax(call(rest, False)[0])  # after 3 steps, evaluation is softmax too
  assert int(rest['steps_seen'][...]) == 3
  assert call._cache_size() == 2  # one train step and one evaluation, whatever the count


def test_random_noise_only_in_train_mode():
  clean = build(random_noise=0.0)
  noisy = build(random_noise=0.5)
  clean.eval()
  noisy.eval()
  want = clean(STORY, QUERY)
  np.testing.assert_array_equal(noisy(STORY, QUERY), want)  # eval: no noise
  noisy.train()
  a, b = noisy(STORY, QUERY), noisy(STORY, QUERY)
  assert not np.allclose(a, want, atol=1e-5) and not np.allclose(a, b, atol=1e-5)
  clean.train()
  np.testing.assert_array_equal(clean(STORY, QUERY), want)  # no noise asked: train == eval


def test_parameter_counts_follow_the_tying():
  count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  k = 3
  assert count(build(hops=k, tying='adjacent')) == (k + 1) * V * E + (k + 1) * M * E
  assert count(build(hops=k, tying='adjacent', temporal=False)) == (k + 1) * V * E
  assert count(build(hops=k, tying='layerwise')) == 3 * V * E + 2 * M * E + E * E + E * V
  untied = get_model('memn2n', vocab_size=V, num_classes=7, memory_size=M, sentence_len=W,
                     embed_dim=E, hops=k, rngs=nnx.Rngs(0))
  assert count(untied) == (k + 1) * V * E + (k + 1) * M * E + E * 7
  assert untied(STORY, QUERY).shape == (3, 7)


@pytest.mark.parametrize('option, value, valid', [
    ('tying', 'none', 'adjacent, layerwise'),
    ('encoding', 'lstm', 'bow, position'),
])
def test_bad_options_raise_value_error_listing_choices(option, value, valid):
  with pytest.raises(ValueError, match=f'{value}.*known: {valid}'):
    build(**{option: value})


def test_unknown_option_raises_value_error_listing_options():
  with pytest.raises(ValueError, match="unknown option.*'bogus'.*valid options: .*'tying'"):
    build(bogus=1)


def test_bad_shapes_and_values_raise():
  with pytest.raises(ValueError, match='expected story'):
    build()(STORY[:, :4], QUERY)
  with pytest.raises(ValueError, match='hops'):
    build(hops=0)
  with pytest.raises(ValueError, match='random_noise'):
    build(random_noise=1.5)


def where_is(num=24, seed=0):
  """A bAbI-1-like toy: sentences 'person place' (row 0 = most recent); query 'person';
  answer = the place of the most recent sentence about that person."""
  rng = np.random.default_rng(seed)
  story = np.zeros((num, M, W), np.int32)
  query = np.zeros((num, W), np.int32)
  label = np.zeros((num,), np.int32)
  for n in range(num):
    story[n, :4, 0] = rng.integers(3, 6, 4)  # persons 3..5
    story[n, :4, 1] = rng.integers(6, 10, 4)  # places 6..9
    query[n, 0] = story[n, rng.integers(0, 4), 0]
    label[n] = story[n, np.argmax(story[n, :, 0] == query[n, 0]), 1]
  return jnp.asarray(story), jnp.asarray(query), jnp.asarray(label)


def test_overfits_a_tiny_batch():
  story, query, label = where_is()
  model = build(embed_dim=16, random_noise=0.1)
  learning.fit(model, (story, query), label, steps=300)
  model.eval()
  logits = model(story, query)
  assert float(optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()) < 0.05
  np.testing.assert_array_equal(np.argmax(logits, -1), label)
