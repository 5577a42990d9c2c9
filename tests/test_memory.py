"""End-to-end memory network (Sukhbaatar et al. 2015): the forward pass against numpy, encodings,
tying, random noise, linear start through the training loop, the bAbI recipe and joint training.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from attention_zoo.build import build_model
from attention_zoo.data import babi, get_task
from attention_zoo.data.base import Task
from attention_zoo.models import get_model
from attention_zoo.models import memory
from attention_zoo.train import optim, start_phase
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import load_params
from attention_zoo.train.loop import train_and_evaluate
from attention_zoo.train.steps import split_model
from configs import babi_memn2n
from tests import fixtures as h
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
def test_shapes_and_the_empty_slots_of_a_short_story_get_no_weight(tying, encoding, temporal):
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


# ---- the forward pass, by hand ------------------------------------------------------------------
def _position_encoding_by_hand(tokens: np.ndarray, d: int) -> np.ndarray:
  """l_kj = (1 - j/J) - (k/d)(1 - 2j/J) per word j, feature k (from 1); J = real words; PAD: 0."""
  out = np.zeros(tokens.shape + (d,))
  for index in np.ndindex(tokens.shape[:-1]):
    n_words = int((tokens[index] != 0).sum())
    for j in range(1, n_words + 1):
      for k in range(1, d + 1):
        out[index + (j - 1, k - 1)] = (1 - j / n_words) - (k / d) * (1 - 2 * j / n_words)
  return out


def test_position_encoding_one_value_by_hand():
  # J = 3 words, d = 4; word j = 2, feature k = 3: (1 - 2/3) - (3/4)(1 - 4/3) = 1/3 + 1/4 = 7/12
  l = np.asarray(memory.position_encoding(jnp.array([[4, 5, 6, 0, 0]]), 4))[0]  # [W, d]
  assert l[1, 2] == pytest.approx(7 / 12, abs=1e-6)


def test_position_encoding_of_the_authors_code_one_value_by_hand():
  # padded width J = 5, d = 4; word j = 2, feature k = 3: 1 + 4(3 - 2.5)(2 - 3)/(4 · 5) = 0.9
  l = np.asarray(memory.position_encoding_matlab(jnp.array([[4, 5, 6, 0, 0]]), 4))[0]  # [W, d]
  assert l[1, 2] == pytest.approx(0.9, abs=1e-6)
  assert l[0, 0] == pytest.approx(1 + 4 * (1 - 2.5) * (1 - 3) / 20, abs=1e-6)  # 1.6
  assert (l[3:] == 0).all()  # PAD words weigh nothing


@pytest.mark.parametrize('empty_slots', ['masked', 'zero'])
def test_two_hops_equal_a_numpy_computation_with_adjacent_tying_and_temporal_encoding(
    empty_slots):
  """Sec. 2: u^1 = B q, per hop m_i = A^k x_i + T_A^k(i), c_i = C^k x_i + T_C^k(i),
  p = softmax(u^kᵀ m) over the non-empty slots ('masked'), or over all M with m_i = c_i = 0 on
  the empty ones ('zero', the authors' code), u^{k+1} = u^k + Σ p_i c_i; logits = W u^3; with
  adjacent tying B = A^1, A^2 = C^1, Wᵀ = C^2 (the sums over words weighted by PE)."""
  model = build(hops=2, tying='adjacent', encoding='position', temporal=True,
                empty_slots=empty_slots)
  model.eval()
  tables = np.asarray(model.tying.words[...], np.float64)  # [3, V, E]: the module's own weights
  times = np.asarray(model.tying.times[...], np.float64)  # [3, M, E]
  a = [tables[0], tables[1]]  # A^1, A^2 = C^1
  c = [tables[1], tables[2]]  # C^1, C^2
  t_a, t_c = [times[0], times[1]], [times[1], times[2]]  # T_A^2 = T_C^1 likewise
  b, w = tables[0], tables[2]  # B = A^1, W = C^2ᵀ (the tables hold the paper's d x V matrices ᵀ)
  story, query = np.asarray(STORY), np.asarray(QUERY)

  def embed(tokens, table):  # Σ_j l_j ⊙ table[x_j]
    return (_position_encoding_by_hand(tokens, E) * table[tokens]).sum(-2)

  u = embed(query, b)  # [B, E]
  filled = (story != 0).any(-1)  # [B, M]
  for k in range(2):
    m = embed(story, a[k]) + t_a[k]  # [B, M, E]
    out = embed(story, c[k]) + t_c[k]
    if empty_slots == 'zero':
      m, out = m * filled[..., None], out * filled[..., None]
    read = filled if empty_slots == 'masked' else np.ones_like(filled)  # in the softmax
    logits = np.where(read, np.einsum('be,bme->bm', u, m), -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    u = u + np.einsum('bm,bme->be', p, out)
  np.testing.assert_allclose(model(STORY, QUERY), u @ w.T, rtol=1e-4, atol=1e-5)


# ---- random noise (sec. 4.1) --------------------------------------------------------------------
def test_insert_empty_memories_moves_the_sentences_and_keeps_the_empties_readable():
  story = np.zeros((2, 5, 2), np.int32)  # rows 0..2: sentences a, b, c (row 0 most recent)
  story[:, :3, 0] = [4, 5, 6]
  inserted = np.array([[1, 0, 1, 0, 1],   # before a and before c (row 4 holds no sentence)
                       [1, 1, 1, 1, 1]], bool)  # before each: c moves past M = 5, dropped
  moved, valid = memory.insert_empty_memories(jnp.asarray(story), jnp.asarray(inserted))
  np.testing.assert_array_equal(np.asarray(moved)[:, :, 0], [[0, 4, 5, 0, 6], [0, 4, 0, 5, 0]])
  np.testing.assert_array_equal(valid, [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
  _, valid = memory.insert_empty_memories(jnp.asarray(story), jnp.zeros((2, 5), bool))
  np.testing.assert_array_equal(valid, [[1, 1, 1, 0, 0]] * 2)  # no noise: the story as it was


def test_random_noise_empty_memories_get_attention_in_training_only():
  clean, noisy = build(random_noise=0.0), build(random_noise=0.9, noise='empty_slots')
  clean.eval()
  noisy.eval()
  want, eval_weights = run(clean)
  got, noisy_eval_weights = run(noisy)
  np.testing.assert_array_equal(got, want)  # evaluation: no noise
  np.testing.assert_array_equal(noisy_eval_weights, eval_weights)
  assert ((eval_weights > 0).sum(-1) == 3).all()  # the 3 sentences; empty rows 3, 4 masked
  noisy.train()
  _, train_weights = run(noisy)  # [B, hops, M]
  # Only 3 sentences per story: a slot beyond them with weight > 0 is an inserted empty memory.
  read = (train_weights > 0).sum(-1)  # [B, hops]
  assert read.max() > 3
  np.testing.assert_allclose(train_weights.sum(-1), 1.0, atol=1e-5)
  clean.train()
  np.testing.assert_array_equal(run(clean)[0], want)  # no noise asked: train == eval


def test_time_shift_noise_draws_distinct_increasing_times_as_the_authors_code():
  """train.m: n sentences take n of the indices 0..n + n_blank - 1 (n_blank ~ U{0..ceil(n/10) -
  1}), sorted, capped at M - 1; a story of n <= 10 sentences keeps its times."""
  memory_size, rows = 50, 4000
  lengths = np.array([8, 10, 11, 30, 50] * (rows // 5))  # n per story
  valid = jnp.asarray(np.arange(memory_size)[None] < lengths[:, None])
  times = np.asarray(memory.shifted_times(jax.random.key(0), valid, 0.1))  # [rows, M]
  for n in (8, 10):  # ceil(n / 10) = 1: no blank
    np.testing.assert_array_equal(times[lengths == n], np.broadcast_to(np.arange(50), (800, 50)))
  for n, most in ((11, 2), (30, 3), (50, 5)):
    t = times[lengths == n][:, :n]  # [800, n]
    assert (np.diff(t, axis=1) > 0).all() or n == 50  # distinct and increasing (below the cap)
    assert (np.diff(t, axis=1) >= 0).all() and (t >= np.arange(n)).all()
    assert (t <= min(n + most - 2, memory_size - 1)).all()  # at most n + n_blank - 1 indices
    assert (times[lengths == n][:, n:] == np.arange(n, memory_size)).all()  # no sentence: as is
    if n < 50:
      # P(no shift at all) = P(n_blank = 0) + Σ_b>0 P(b) · C(n, n)/C(n + b, n): for n = 30,
      # 1/3 · (1 + 1/31 + 1/C(32, 2)) = 0.345; for n = 11, 1/2 · (1 + 1/12) = 0.542
      want = {11: 0.5 * (1 + 1 / 12), 30: (1 + 1 / 31 + 1 / 496) / 3}[n]
      unshifted = (t == np.arange(n)).all(axis=1).mean()
      assert unshifted == pytest.approx(want, abs=0.05)
  capped = times[lengths == 50][:, :50]
  assert capped.max() == 49 and (capped[:, -1] == 49).all()  # past M - 1: capped there


def test_time_shift_noise_moves_temporal_rows_in_training_only():
  story = np.zeros((1, 50, W), np.int32)  # 30 sentences: enough for blanks (ceil(3) = 3)
  story[:, :30, :3] = np.random.default_rng(1).integers(3, V, (1, 30, 3))
  model = get_model('memn2n', vocab_size=V, num_classes=V, memory_size=50, sentence_len=W,
                    embed_dim=E, random_noise=0.1, noise='time_shift', rngs=nnx.Rngs(0))
  query = QUERY[:1]
  model.eval()
  want = np.asarray(model(story, query))
  model.train()
  train = [np.asarray(model(story, query)) for _ in range(16)]
  assert any(not np.allclose(t, want, atol=1e-6) for t in train)  # some draws shift the rows
  assert any(np.allclose(t, want, atol=1e-6) for t in train)  # 0.345 of them do not
  model.eval()
  np.testing.assert_array_equal(np.asarray(model(story, query)), want)


# ---- linear start (sec. 4.2) --------------------------------------------------------------------
def test_linear_start_weights_are_not_normalized_until_the_phase_ends():
  linear, softmax = build(linear_start=True), build()  # same seed: the same parameters
  linear.eval()
  softmax.eval()
  want_logits, want_weights = run(softmax)
  logits, weights = run(linear)
  assert (np.abs(weights.sum(-1) - 1.0) > 1e-2).all()  # [B, hops]: no softmax
  # Hop 1 reads the same u and m: its linear weights are u·m, whose softmax over the non-empty
  # slots is the softmax model's weights; empty slots get 0 in both.
  np.testing.assert_allclose(jax.nn.softmax(weights[:, 0, :3]), want_weights[:, 0, :3], atol=1e-5)
  assert (weights[:, :, 3:] == 0).all()
  assert not np.allclose(logits, want_logits, atol=1e-4)
  linear.start_phase[...] = False  # what the training loop does at the end of the phase
  logits, weights = run(linear)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(logits, want_logits, atol=1e-6)
  assert not hasattr(softmax, 'start_phase')  # no linear start: nothing for the loop to end


def _where_is_task(num_train=64) -> Task:
  def split(num, seed):
    story, query, label = (np.asarray(x) for x in where_is(num, seed))
    return [{'story': story[i], 'query': query[i], 'label': label[i]} for i in range(num)]

  return Task(name='where_is', kind='qa',
              splits={'train': split(num_train, 0), 'validation': split(32, 1),
                      'test': split(32, 2)},
              model_dims=dict(vocab_size=V, num_classes=V, memory_size=M, sentence_len=W))


def _ls_config(steps=8):
  """The bAbI recipe on the toy task, with lr 0 in linear start: its validation loss cannot fall,
  so the second validation in the phase (step 4) ends it."""
  return h.tiny_config(
      'memn2n', steps=steps, model=dict(embed_dim=8, hops=2, linear_start=True, random_noise=0.1),
      optimizer='sgd', momentum=0.0, lr=0.01, schedule='step', decay_every=6, decay_factor=0.5,
      batch_cost='sum', clip_norm=40.0, clip_scope='matrix', log_every=1, eval_every=2,
      checkpoint_every=2, start_phase=dict(lr=0.0, patience=1, max_steps=0))


def _saved_state(workdir, config, task):
  """(params, other) leaves of the last checkpoint, and the model's start_phase there."""
  _, params, _, other = split_model(nnx.eval_shape(lambda: build_model(config, task)))
  params, other = load_params(workdir / wd.CHECKPOINTS, params, other)
  return jax.tree.leaves((params, other)), bool(other['start_phase'][...])


@pytest.fixture(scope='module')
def ls_full(tmp_path_factory):
  """An uninterrupted run of _ls_config: (workdir, config, task)."""
  config, task = _ls_config(), _where_is_task()
  workdir = tmp_path_factory.mktemp('ls_full')
  train_and_evaluate(config, workdir, task=task)
  return workdir, config, task


def test_linear_start_ends_when_the_validation_loss_stops_falling(ls_full):
  workdir, config, task = ls_full
  rows = wd.read_jsonl(workdir / wd.METRICS)
  val = [(r['step'], r['loss']) for r in rows if r['split'] == 'validation' and 0 < r['step'] < 8]
  assert [s for s, _ in val] == [2, 4, 6] and val[0][1] == val[1][1]  # lr 0: no change
  # lr 0 while linear (steps 1-4), the schedule after: 0.01, halved at step 6 (decay_every 6)
  lrs = [(r['step'], r['lr']) for r in rows if r['split'] == 'train']
  np.testing.assert_allclose(lrs, [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0.01), (6, 0.01),
                                   (7, 0.005), (8, 0.005)], rtol=1e-6)
  assert val[2][1] != val[1][1]  # after the switch the model learns (and reads with softmax)
  _, on = _saved_state(workdir, config, task)
  assert not on  # the checkpointed model has its softmax back


@pytest.mark.parametrize('killed_after', [3, 5])  # before / after the switch at step 4
def test_linear_start_switch_survives_a_checkpoint_restore(ls_full, tmp_path, killed_after):
  workdir, config, task = ls_full
  cut = tmp_path / 'cut'
  assert train_and_evaluate(config, cut, task=task, stop_after_step=killed_after) == {}
  resumed = train_and_evaluate(config, cut, task=task)  # from checkpoint 2 or 4
  want, _ = _saved_state(workdir, config, task)
  got, on = _saved_state(cut, config, task)
  assert not on and resumed['step'] == 8
  for a, b in zip(want, got, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert resumed['test'] == wd.read_json(workdir / wd.RESULTS)['test']


# ---- the bAbI recipe (sec. 4.2) -----------------------------------------------------------------
def test_config_is_the_authors_recipe_and_its_schedule_halves_every_25_epochs_after_ls():
  c = babi_memn2n.get_config('task_id=1')
  # 28 steps an epoch: 20 LS epochs, then 100 epochs halving every 25
  assert (c.train.steps, c.train.decay_every, c.train.eval_every) == (3360, 700, 28)
  assert (c.train.start_phase.max_steps, c.train.start_phase.patience) == (560, 0)
  assert c.train.start_phase.restart_schedule
  assert (c.train.optimizer, c.train.momentum, c.train.batch_size, c.train.clip_norm) == (
      'sgd', 0.0, 32, 40.0)
  assert (c.model.hops, c.model.tying, c.model.encoding, c.model.embed_dim) == (
      3, 'adjacent', 'position_matlab', 20)
  assert (c.model.noise, c.model.empty_slots) == ('time_shift', 'zero')
  assert c.model.linear_start and c.model.random_noise == 0.1 and c.train.start_phase.lr == 0.005
  tx = optim.make_optimizer(c.train)
  params = {'w': jnp.zeros(1)}
  state, lrs, update = tx.init(params), [], jax.jit(tx.update)
  for step in range(c.train.steps):
    if step == c.train.start_phase.max_steps:  # what the loop does there
      state = start_phase.end(state, restart=True)
    state = update({'w': jnp.ones(1)}, state, params)[1]
    lrs.append(float(start_phase.phase_state(state).lr))
  after = np.arange(2800)  # steps after LS: the schedule from its start, lr 0.005 (sec. 4.2)
  np.testing.assert_allclose(lrs, [0.005] * 560 + list(0.005 * 0.5 ** (after // 700)), rtol=1e-6)
  joint = babi_memn2n.get_config('task_id=0')  # 18,000 questions: 562 steps an epoch
  assert (joint.train.steps, joint.train.decay_every, joint.model.embed_dim) == (
      90 * 562, 15 * 562, 50)
  assert joint.train.start_phase.max_steps == 30 * 562


# ---- joint training over the 20 tasks (real data) -----------------------------------------------
@pytest.fixture(scope='module')
def joint(data_dir, tmp_path_factory):
  """The joint task (task_id=0) built from the real files: (task, raw folder)."""
  root = os.path.join(data_dir, 'babi/en')
  task = get_task({'name': 'babi', 'task_id': 0, 'unknown_words': 'unk', 'data_dir': root,
                   'tfds_dir': str(tmp_path_factory.mktemp('tfds'))})
  return task, root


def test_joint_training_is_one_task_over_the_20(joint):
  task, root = joint
  sizes = {k: len(v) for k, v in task.splits.items()}
  assert sizes == {'train': 18_000, 'validation': 2_000, 'test': 20_000,
                   **{f'test_task{t}': 1_000 for t in range(1, 21)}}
  questions = {t: babi.load_questions(root, t) for t in range(1, 21)}
  words = {w for qs in questions.values() for q in qs['train']
           for w in [x for s in q.story for x in s] + list(q.query) + [q.answer]}
  assert len(task.vocab) == 4 + len(words)  # one vocabulary: specials + every train word
  for t, index in ((1, 0), (8, 0), (20, 999)):  # each per-task split holds its task's questions
    q, ex = questions[t]['test'][index], task.splits[f'test_task{t}'][index]
    assert task.vocab.decode(ex['query']) == ' '.join(q.query)
    assert task.vocab.decode(ex['story'][0]) == ' '.join(q.story[-1])
    assert task.vocab[int(ex['label'])] in (q.answer, '<unk>')
  val = task.splits['validation']  # 100 held out per task, in task order
  for t in (1, 7, 20):
    ex = val[(t - 1) * 100]
    assert task.vocab.decode(ex['query']) in {' '.join(q.query) for q in questions[t]['train']}


def test_joint_run_reports_the_test_error_of_each_task(joint, tmp_path):
  task, _ = joint
  config = babi_memn2n.get_config('task_id=0,size=tiny')
  config.train.update(steps=2, eval_every=2, checkpoint_every=2)
  config.eval.max_examples = 16
  results = train_and_evaluate(config, tmp_path, task=task)
  per_task = [results[f'test_task{t}']['accuracy'] for t in range(1, 21)]
  assert all(0 <= a <= 1 for a in per_task)
  # each task's own questions (its first 16): tasks differ, and the test split starts with task 1
  assert results['test_task1'] != results['test_task2']
  assert results['test_task1'] == results['test']
