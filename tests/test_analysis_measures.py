"""The attention measures against hand-computed cases, the tasks' gold alignments against
hand-written examples, and the measures analyze writes for tiny trained runs."""

import json
import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.analysis import measure_run, measures
from attention_zoo.attention.layers import MultiHeadAttention
from attention_zoo.data import babi, dates, synthetic
from attention_zoo.data.base import Task
from attention_zoo.specials import PAD
from attention_zoo.train import workdir as wd
from tests.test_analysis import runs, tfds_dir  # noqa: F401  (the tiny trained runs)

REPO = pathlib.Path(__file__).resolve().parents[1]

S = frozenset  # a set of positions


# ----- alignment against gold -----

def one_hot(b, q, k, at):
  """[b, q, k] weights, step j of example i on key at[i][j]."""
  w = np.zeros((b, q, k))
  for i, row in enumerate(at):
    for j, key in enumerate(row):
      w[i, j, key] = 1.0
  return w


def test_one_hot_attention_on_the_gold_gives_accuracy_1_and_aer_0():
  # two examples, three steps; step 2 of example 0 has no gold (a separator): left out
  sure = [[S({1}), S({2}), S()], [S({0}), S({3}), S({3})]]
  possible = [[S({0, 1}), S({2, 3}), S()], [S({0}), S({3, 4}), S({3})]]
  w = one_hot(2, 3, 5, [[1, 2, 4], [0, 3, 3]])  # every step on its sure link
  assert measures.argmax_in_gold(w, possible) == pytest.approx([1.0])
  assert measures.gold_mass(w, possible) == pytest.approx([1.0])
  assert measures.aer(w, sure, possible) == pytest.approx([0.0])


def test_alignment_measures_by_hand():
  sure = [[S({1}), S({2})]]
  possible = [[S({0, 1}), S({2, 3})]]
  # step 0 on a possible (not sure) link, step 1 off the gold
  w = one_hot(1, 2, 5, [[0, 4]])
  assert measures.argmax_in_gold(w, possible) == pytest.approx([0.5])
  # A = {(0,0), (1,4)}: |A ∩ S| = 0, |A ∩ P| = 1, |A| = 2, |S| = 2 -> 1 - 1/4
  assert measures.aer(w, sure, possible) == pytest.approx([0.75])
  # soft: step 0 puts 0.3 + 0.2 on {0, 1}, step 1 puts 0.6 on {2, 3} -> mean 0.55
  soft = np.array([[[0.3, 0.2, 0.1, 0.0, 0.4], [0.1, 0.1, 0.5, 0.1, 0.2]]])
  assert measures.gold_mass(soft, possible) == pytest.approx([0.55])
  # per head: [B, N, Q, K] with a second head on the sure links
  heads = np.stack([w, one_hot(1, 2, 5, [[1, 2]])], axis=1)
  np.testing.assert_allclose(measures.argmax_in_gold(heads, possible), [0.5, 1.0])
  np.testing.assert_allclose(measures.aer(heads, sure, possible), [0.75, 0.0])


def test_alignment_without_gold_is_nan():
  w = one_hot(1, 2, 3, [[0, 1]])
  assert np.isnan(measures.argmax_in_gold(w, [[S(), S()]])).all()
  assert np.isnan(measures.aer(w, [[S(), S()]], [[S(), S()]])).all()


# ----- entropy, distance, rollout -----

def test_uniform_attention_has_entropy_log_k():
  w = np.full((2, 3, 4, 4), 0.25)  # [B, N, Q, K]
  np.testing.assert_allclose(measures.entropy(w), [math.log(4)] * 3)
  np.testing.assert_allclose(measures.entropy(one_hot(1, 2, 4, [[0, 3]])), [0.0])


def test_entropy_over_real_keys_and_queries():
  # example 0: 5 real keys; example 1: 3 real keys (the 2 PAD keys masked: weight 0) and its
  # query 2 is PAD (left out by the query mask); query 1 of example 0 is fully masked (zeros)
  w = np.zeros((2, 1, 3, 5))
  w[0, 0, [0, 2]] = 1 / 5
  w[1, 0, :, :3] = 1 / 3
  query_mask = np.array([[True, True, True], [True, True, False]])
  expected = (2 * math.log(5) + 2 * math.log(3)) / 4
  assert measures.entropy(w, query_mask) == pytest.approx([expected])


def test_distance_by_hand():
  w = np.zeros((1, 1, 3, 3))
  w[0, 0, 0] = [0.0, 0.5, 0.5]  # 0.5 * 1 + 0.5 * 2 = 1.5
  w[0, 0, 1] = [0.0, 1.0, 0.0]  # 0
  w[0, 0, 2] = [1.0, 0.0, 0.0]  # 2
  assert measures.distance(w) == pytest.approx([(1.5 + 0 + 2) / 3])
  assert measures.distance(w, np.array([[True, False, False]])) == pytest.approx([1.5])


@pytest.mark.parametrize('residual', [True, False])
def test_rollout_of_identity_attention_is_identity(residual):
  eye = np.broadcast_to(np.eye(4), (2, 3, 4, 4))  # [B, N, L, L]
  np.testing.assert_allclose(measures.rollout([eye, eye, eye], residual=residual),
                             np.broadcast_to(np.eye(4), (2, 4, 4)))


def test_rollout_by_hand():
  a1 = np.array([[[1.0, 0.0], [0.5, 0.5]]])  # [B=1, L, L], first layer
  a2 = np.array([[[0.0, 1.0], [1.0, 0.0]]])
  np.testing.assert_allclose(measures.rollout([a1, a2], residual=False),
                             [[[0.5, 0.5], [1.0, 0.0]]])  # a2 @ a1
  # with the residual: 0.5 a + 0.5 I -> [[1, 0], [.25, .75]] then [[.5, .5], [.5, .5]]
  np.testing.assert_allclose(measures.rollout([a1, a2]), [[[0.625, 0.375], [0.625, 0.375]]])
  # heads are averaged first
  two_heads = np.stack([a1, a1], axis=1)
  np.testing.assert_allclose(measures.rollout([two_heads], residual=False), a1)


# ----- head ablation, SE selectivity -----

class _Block(nnx.Module):
  def __init__(self, rngs):
    self.attn = MultiHeadAttention(2, 8, rngs=rngs)

  def __call__(self, x):
    return self.attn(x)


def test_ablating_a_head_whose_output_is_zero_changes_nothing():
  model = _Block(nnx.Rngs(0))
  value = model.attn.value  # [F] -> [N, D]: head 1's values (and so its output) are zero
  value.kernel[...] = value.kernel[...].at[:, 1].set(0.0)
  value.bias[...] = value.bias[...].at[1].set(0.0)
  x = jax.random.normal(jax.random.key(1), (2, 5, 8))
  evaluate = lambda m: float(jnp.sum(m(x) ** 2))
  base, drops = measures.head_importance(model, evaluate)
  assert base == evaluate(model)
  assert list(drops) == ['attn']
  assert drops['attn'][1] == 0.0  # masking the zero head: the same output, bit for bit
  assert abs(drops['attn'][0]) > 1e-3  # masking the other head does change it
  assert model.attn.head_mask is None  # restored


def test_se_selectivity_by_hand():
  # class 0 and 1; channel 0: class means 0.2 and 0.6 (var 0.04, mean 0.4 -> 0.1); channel 1:
  # the same mean 0.5 for both classes (-> 0); mean over channels 0.05
  se = np.array([[0.1, 0.5], [0.3, 0.5], [0.6, 0.4], [0.6, 0.6]])
  labels = np.array([0, 0, 1, 1])
  assert measures.se_selectivity(se, labels) == pytest.approx(0.05)
  assert measures.se_selectivity(np.full((4, 3), 0.7), labels) == 0.0


# ----- gold alignments of the tasks -----

def test_dates_gold_by_hand():
  links = dates.dates_gold('Sep 7, 1994', '1994-09-07')
  year = S({7, 8, 9, 10})
  assert links == [(S({7}), year), (S({8}), year), (S({9}), year), (S({10}), year),
                   (S(), S()),
                   (S(), S({0, 1, 2})), (S(), S({0, 1, 2})),  # 'Sep': no sure link
                   (S(), S()),
                   (S(), S({4})), (S({4}), S({4}))]  # '7' -> '07': the '0' has no sure link
  # ordinal day ('21st': digits only), weekday left out, year-first numbers
  links = dates.dates_gold('tuesday, september 27, 1994', '1994-09-27')
  assert [sorted(p) for _, p in links[8:]] == [[19, 20], [19, 20]]
  assert links[5] == (S(), S(range(9, 18)))  # 'september'
  links = dates.dates_gold('the 21st of march, 2001', '2001-03-21')
  assert links[8:] == [(S({4}), S({4, 5})), (S({5}), S({4, 5}))]
  assert dates.dates_gold('19940927', '1994-09-27')[5:7] == [(S({4}), S({4, 5})),
                                                             (S({5}), S({4, 5}))]
  with pytest.raises(ValueError, match='matches no format'):
    dates.dates_gold('Sep 8, 1994', '1994-09-07')


def test_addition_gold_by_hand():
  # "95+7" -> "102": '1' is the carry (place 2), '0' place 1, '2' place 0
  assert synthetic.addition_gold('95+7', '102') == [(S(), S({0, 1, 3})), (S({0}), S({0, 1, 3})),
                                                    (S({1, 3}), S({1, 3}))]
  assert synthetic.addition_gold('123+45', '168') == [
      (S({0}), S({0, 1, 2, 4, 5})), (S({1, 4}), S({1, 2, 4, 5})), (S({2, 5}), S({2, 5}))]


def _decoded(task, split, i):
  row = task.splits[split][i]
  source = [task.source_vocab[t] for t in np.asarray(row['source']) if t != PAD]
  target = task.vocab.labels(row['target_out'], stop_at_eos=True)
  return source, target


def test_dates_task_gold_in_stored_positions_with_reversed_source(tmp_path):
  task = dates.dates(num_train=8, num_validation=16, num_test=4, reverse_source=True,
                     tfds_dir=str(tmp_path))
  gold = task.gold_alignment('validation', range(16))
  for i, a in enumerate(gold):
    source, target = _decoded(task, 'validation', i)  # source as stored: reversed
    assert len(a.possible) == len(target) == 11 and target[-1] == '<eos>'
    assert a.possible[4] == a.possible[7] == a.possible[10] == S()  # '-', '-', EOS
    for q in range(10):
      for k in a.sure[q]:
        assert source[k] == target[q]  # a sure link copies its digit
      assert a.sure[q] <= a.possible[q]
    assert {source[k] for k in a.possible[0]} <= set('0123456789')
    # the year is 4 adjacent digits; in the reversed source the first year digit is the last
    year = sorted(a.possible[0])
    assert year == list(range(year[0], year[0] + 4)) and a.sure[0] == S({year[-1]})
  assert dates.dates(num_train=8, num_validation=16, num_test=4, tfds_dir=str(tmp_path)
                     ).gold_alignment('validation', [0])[0].sure[0]  # unreversed: a year digit


def test_addition_task_gold_in_stored_positions_with_reversed_source(tmp_path):
  task = synthetic.addition(num_digits=3, num_train=8, num_validation=16, num_test=4,
                            reverse_source=True, tfds_dir=str(tmp_path))
  for i, a in enumerate(task.gold_alignment('validation', range(16))):
    source, target = _decoded(task, 'validation', i)
    x, y = ''.join(source[::-1]).split('+')  # the operands as written
    answer = target[:-1]
    assert ''.join(answer) == str(int(x) + int(y)) and a.possible[-1] == S()
    for q in range(len(answer)):
      place = len(answer) - 1 - q
      digits = sorted(source[k] for k in a.sure[q])
      assert digits == sorted(n[-1 - place] for n in (x, y) if place < len(n))


def test_tasks_without_gold_say_so():
  task = Task(name='t', kind='classify', splits={'validation': []}, model_dims={})
  assert task.gold_alignment('validation', []) is None


# ----- bAbI: supporting facts -> memory slots -----

# Questions are lines too, so line ids and story positions differ; with memory_size=3 the oldest
# facts drop out; the last question lists its facts out of time order ('12 10').
STORY = """\
1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary?\tbathroom\t1
4 Daniel went back to the hallway.
5 Sandra moved to the garden.
6 Where is Daniel?\thallway\t4
7 John moved to the office.
8 Sandra journeyed to the bathroom.
9 Where is Daniel?\thallway\t4
10 Mary moved to the hallway.
11 Where is John?\toffice\t7
12 Mary took the milk.
13 Where is the milk?\thallway\t12 10
1 Daniel moved to the office.
2 Where is Daniel?\toffice\t1
"""
# slot 0 = the most recent sentence of the memory of 3
SLOTS = [S({1}), S({1}), S(), S({2}), S({0, 1}), S({0})]


def _babi_dir(tmp_path):
  folder = tmp_path / 'babi'
  folder.mkdir()
  for split in ('train', 'test'):
    (folder / f'qa1_single-supporting-fact_{split}.txt').write_text(STORY)
  return folder


def test_babi_supporting_facts_map_to_memory_slots(tmp_path):
  questions = babi.parse_file(str(_babi_dir(tmp_path) / 'qa1_single-supporting-fact_test.txt'))
  assert questions[4].story_ids == (1, 2, 4, 5, 7, 8, 10, 12)
  assert [babi.supporting_slots(q, 3) for q in questions] == SLOTS
  # a memory that holds the whole story: slot = sentences ago
  assert babi.supporting_slots(questions[2], 50) == S({3})  # line 4 of [1, 2, 4, 5, 7, 8]
  assert babi.supporting_slots(questions[4], 50) == S({0, 1})


def test_babi_task_gold_names_the_stored_rows_of_the_supporting_facts(tmp_path):
  folder = _babi_dir(tmp_path)
  task = babi.babi(task_id=1, memory_size=3, num_validation=2, data_dir=str(folder),
                   tfds_dir=str(tmp_path / 'tfds'))
  gold = task.gold_alignment('test', range(6))
  assert [a.possible[0] for a in gold] == SLOTS and all(a.sure == (S(),) for a in gold)
  facts = {1: 'mary moved to the bathroom', 4: 'daniel went back to the hallway',
           7: 'john moved to the office', 10: 'mary moved to the hallway',
           12: 'mary took the milk'}
  expected = [[facts[1]], [facts[4]], [], [facts[7]], [facts[12], facts[10]],
              ['daniel moved to the office']]
  for split in ('test', 'train', 'validation'):
    n = len(task.splits[split])
    for i, a in enumerate(task.gold_alignment(split, range(n))):
      story = task.splits[split][i]['story']  # [M, W], row 0 = the most recent sentence
      found = [' '.join(task.vocab.labels(story[s])) for s in sorted(a.possible[0])]
      if split == 'test':
        assert found == expected[i]
      assert all(f in facts.values() or f == expected[5][0] for f in found)
  flat = babi.babi(task_id=1, memory_size=3, flat=True, num_validation=2, data_dir=str(folder),
                   tfds_dir=str(tmp_path / 'tfds'))
  assert flat.gold_alignment('test', [0]) is None


def test_babi_real_data_gold_rows_hold_supporting_facts(tmp_path, data_dir):
  """Task 2 (two supporting facts) on the real files, with a memory of 6 that drops facts."""
  task = babi.babi(task_id=2, memory_size=6, data_dir=f'{data_dir}/babi/en',
                   tfds_dir=str(tmp_path))
  questions = babi.split_questions({2: babi.load_questions(f'{data_dir}/babi/en', 2)}, 100, 0)
  n = len(task.splits['validation'])
  gold = task.gold_alignment('validation', range(n))
  dropped = 0
  for i, (a, q) in enumerate(zip(gold, questions['validation'])):
    story = task.splits['validation'][i]['story']
    found = {tuple(task.vocab.labels(story[s])) for s in a.possible[0]}
    wanted = {q.story[q.story_ids.index(line)] for line in q.supporting}
    assert found <= wanted
    dropped += len(wanted) - len(found)
  assert dropped > 0  # the memory of 6 did drop some supporting facts


# ----- what analyze writes -----

def test_analyze_writes_measures_and_view_for_tiny_runs(runs):  # noqa: F811
  # its own process: experiments.analyze defines absl flags that another entry point imported
  # into this test process (e.g. experiments.reproduce) may define too
  workdir = runs['transformer']
  proc = subprocess.run([sys.executable, '-m', 'experiments.analyze', f'--workdir={workdir}',
                         '--examples=1'], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = workdir / wd.ANALYSIS
  found = json.loads((out / measure_run.MEASURES).read_text())
  config = json.loads((workdir / wd.CONFIG).read_text())
  layers, heads = config['model']['num_layers'], config['model']['num_heads']
  assert found['task'] == 'dates' and found['examples'] == 64
  attention = found['attention']
  for i in range(layers):
    for name, role in (('encoder/layers/{}/self_attn', 'self'),
                       ('decoder/layers/{}/self_attn', 'self'),
                       ('decoder/layers/{}/cross_attn', 'source-target')):
      entry = attention[name.format(i)]
      assert entry['role'] == role and len(entry['entropy']) == heads
      assert all(0 <= h <= entry['uniform_entropy'] + 1e-6 for h in entry['entropy'])
      assert ('distance' in entry) == (role == 'self')
      assert len(found['head_importance']['drop'][name.format(i)]) == heads
  alignment = found['alignment']['by_attention']
  assert set(alignment) == {f'decoder/layers/{i}/cross_attn' for i in range(layers)}
  for entry in alignment.values():
    assert all(0 <= v <= 1 for key in ('argmax_in_gold', 'gold_mass', 'aer')
               for v in entry[key])
  assert found['alignment']['steps'] == 64 * 8  # 8 digits with gold per date
  assert found['head_importance']['metric'] == 'token_accuracy'
  rollout = found['rollout']['encoder/layers/*/self_attn']
  matrix = np.array(rollout['examples'][0]['matrix'])
  assert matrix.shape == (len(rollout['examples'][0]['tokens']),) * 2
  np.testing.assert_allclose(matrix.sum(-1), 1.0, atol=1e-5)  # rows of a rollout sum to 1
  page = (out / measure_run.VIEW).read_text()
  assert '<script' in page and 'http://' not in page.replace('http://www.w3.org/2000/svg', '')


def test_measures_of_the_seq2seq_alignment(runs):  # noqa: F811
  found = measure_run.measure_workdir(runs['seq2seq'], examples=1, num_examples=32)
  entry = found['alignment']['by_attention']['attention_weights']
  assert found['examples'] == 32 and len(entry['argmax_in_gold']) == 1
  assert found['attention']['attention_weights']['role'] == 'source-target'
  assert found['head_importance'] == {'note': 'the model has no multi-head attention layer'}
  assert found['rollout'] == {}
