"""Reproduction cards: the committed tables equal their evidence, and the evidence its configs."""

import dataclasses
import json

import numpy as np
import pytest

from attention_zoo import sweeps
from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd
from attention_zoo.reproductions import cards, evidence, render
from experiments import reproduce

EVIDENCE = evidence.load(reproduce.EVIDENCE)


def test_reproductions_md_is_generated_from_the_evidence():
  assert reproduce.REPRODUCTIONS_MD.read_text() == render.render(EVIDENCE), (
      'REPRODUCTIONS.md differs from its evidence: run python -m experiments.reproduce --docs')


def test_readme_tables_are_generated_from_the_evidence():
  text = reproduce.README.read_text()
  blocks = render.readme_blocks(EVIDENCE)
  assert text == render.splice(text, blocks), (
      'a README card table differs from its evidence: run python -m experiments.reproduce --docs')
  for name in blocks:  # every card meant for the README has its markers there
    assert f'<!-- card:{name} -->' in text and f'<!-- /card:{name} -->' in text


@pytest.mark.parametrize('name', cards.CARDS.names())
def test_card_rows_are_variants_of_its_sweep(name):
  card = cards.CARDS.get(name)
  spec = str(reproduce.ROOT / card.config)
  variants = {run.variant for run in sweeps.expand(spec)}
  assert {row.variant for row in card.rows} == variants


@pytest.mark.parametrize('name', sorted(EVIDENCE))
def test_evidence_agrees_with_itself_and_with_the_current_configs(name):
  report = EVIDENCE[name]
  card = cards.CARDS.get(name)
  folder = reproduce.EVIDENCE / name
  runs = {run.name: run for run in sweeps.expand(str(reproduce.ROOT / card.config))}
  for row in report['rows']:
    if row['summary']:
      values = row['summary']['values']
      assert row['summary']['mean'] == pytest.approx(np.mean(values), rel=1e-12)
      assert len(values) == len(row['seeds']) == len(row['runs'])
      mean = row['summary']['mean'] * report['scale']
    else:
      mean = None
    assert [row['verdict'], row['reason']] == list(evidence.row_verdict(
        cards.Row(row['variant'], row['label'], target=row['target']), mean,
        card.higher_is_better))
    for run_name in row['runs']:
      stored = json.loads((folder / 'configs' / f'{run_name}.json').read_text())
      current = config_utils.to_dict(sweeps.run_config(str(reproduce.ROOT / card.config),
                                                        runs[run_name]))
      flat_stored, flat_now = config_utils.flatten(stored), config_utils.flatten(current)
      changed = {k: (v, flat_now.get(k)) for k, v in flat_stored.items() if flat_now.get(k) != v}
      assert not changed, f'{name}/{run_name}: the config changed since its evidence: {changed}'
  if card.aggregate:
    assert report['aggregate'] == evidence.strict_json(
        evidence.aggregate_rows(card, report['rows']))


def _write_sweep(root, card, results_of):
  """A sweep dir of `card` whose run r has results.json results_of(r) (None: not finished)."""
  runs = sweeps.expand(str(reproduce.ROOT / card.config))
  root.mkdir(parents=True, exist_ok=True)
  wd.write_json(root / wd.SWEEP, {'config': card.config, 'arg': card.config.partition(':')[2],
                                  'runs': [{'name': r.name, 'overrides': r.overrides,
                                            'arg': r.arg} for r in runs]})
  for i, run in enumerate(runs):
    results = results_of(i, run)
    if results is None:
      continue
    run_dir = root / wd.RUNS / run.name
    run_dir.mkdir(parents=True)
    wd.write_json(run_dir / wd.CONFIG, {'model_name': 'test'})
    wd.write_json(run_dir / wd.RESULTS, {'wall_s': 60.0, **results})
    (run_dir / wd.METRICS).write_text('')
  return card


def _fake_sweep(root, values):
  """A sweep dir of the multi30k_transformer card with results.json of the given BLEU values
  (None: that run has not finished)."""
  def results(i, run):
    if i >= len(values) or values[i] is None:
      return None
    return {'test': {'gen_bleu': values[i], 'gen_chrf': 50.0}, 'tokens_per_s': 1000.0,
            'final_evaluation': {'bleu_signature': 'nrefs:1|case:mixed|eff:no|tok:13a'}}
  return _write_sweep(root, cards.CARDS.get('multi30k_transformer'), results)


def test_build_judges_each_row_against_its_target(tmp_path):
  card = _fake_sweep(tmp_path, [37.0, 30.0])
  report = evidence.build(card, tmp_path)
  de_en, en_de = report['rows']
  assert (de_en['verdict'], de_en['reason']) == ('reproduced', '37.00 ≥ target 36.5')
  assert (en_de['verdict'], en_de['reason']) == ('not reproduced', '30.00 < target 35')
  assert report['verdict'] == 'partly reproduced'
  assert report['signatures'] == {'bleu_signature': 'nrefs:1|case:mixed|eff:no|tok:13a'}
  assert report['wall_s'] == 120.0 and de_en['wall_s'] == 60.0
  assert '37.00' in render.table(report) and 'partly reproduced' in render.section(report)
  # A shown 0-100 score keeps 2 decimals (chrF 50.00, not 50.0000); fractions keep 4.
  assert '| 50.00 |' in render.table(report) and '50.0000' not in render.table(report)
  assert render._shown_digits({'mean': 0.98693}) == 4  # pylint: disable=protected-access
  # The seeds column counts them: one run of seed 0 reads '1 (0)', never a bare '0'.
  assert '| 1 (0) |' in render.table(report) and '| 0 |' not in render.table(report)


def test_write_stores_the_report_and_every_run_config_and_load_reads_them_back(tmp_path):
  card = _fake_sweep(tmp_path / 'sweep', [37.0, 30.0])
  folder = tmp_path / 'reproductions'
  report = evidence.write(card, tmp_path / 'sweep', folder, 'alone')
  assert evidence.load(folder) == {card.name: json.loads(json.dumps(report))}
  runs = [name for row in report['rows'] for name in row['runs']]
  assert sorted(p.stem for p in (folder / card.name / 'configs').glob('*.json')) == sorted(runs)
  # keep_rows: a later sitting that ran only en->de keeps de->en from the stored evidence
  _fake_sweep(tmp_path / 'later', [None, 36.0])
  kept = evidence.write(card, tmp_path / 'later', folder, 'later', keep_rows=True)
  assert [r['verdict'] for r in kept['rows']] == ['reproduced', 'reproduced']
  assert sorted(p.name for p in folder.iterdir()) == [card.name]  # no temp or old folder left


def test_a_seed_parallel_run_counts_its_share_of_the_group_wall_time(tmp_path):
  # two runs trained as one seed-parallel group of 2, each results.json with the group's 60 s
  card = _write_sweep(tmp_path, cards.CARDS.get('multi30k_transformer'), lambda i, run: {
      'test': {'gen_bleu': 36.0, 'gen_chrf': 50.0}, 'seed_group_size': 2})
  report = evidence.build(card, tmp_path)
  assert [r['wall_s'] for r in report['rows']] == [30.0, 30.0] and report['wall_s'] == 60.0


def test_unfinished_rows_are_not_run_and_stray_variants_are_errors(tmp_path):
  card = _fake_sweep(tmp_path, [37.0])  # only the first run finished
  report = evidence.build(card, tmp_path)
  assert report['rows'][1]['verdict'] == 'not run' and report['missing'] == [
      report['rows'][1]['variant'] + ',seed=0']
  other = dataclasses.replace(card, rows=card.rows[1:])
  with pytest.raises(ValueError, match='does not list'):
    evidence.build(other, tmp_path)


def test_keep_rows_takes_rows_without_runs_from_the_committed_report(tmp_path):
  card = _fake_sweep(tmp_path / 'a', [37.0, 30.0])
  previous = json.loads(json.dumps(evidence.build(card, tmp_path / 'a', 'first sitting')))
  _fake_sweep(tmp_path / 'b', [None, 36.0])  # a later sitting ran only en->de
  report = evidence.build(card, tmp_path / 'b', 'second sitting', previous)
  de_en, en_de = report['rows']
  assert (de_en['by_seed'], de_en['conditions'], de_en['verdict']) == (
      {0: 37.0}, 'first sitting', 'reproduced')
  assert (en_de['by_seed'], en_de['conditions'], en_de['verdict']) == (
      {0: 36.0}, 'second sitting', 'reproduced')
  assert report['verdict'] == 'reproduced' and report['missing'] == []
  assert report['conditions'] == ('Transformer de→en: first sitting; '
                                  'Transformer en→de: second sitting')
  assert report['wall_s'] == 120.0
  assert evidence.build(card, tmp_path / 'b')['rows'][0]['verdict'] == 'not run'


def test_rows_reading_splits_of_one_run_count_its_time_once(tmp_path):
  # joint bAbI: 2 runs (60 s each), each read by the 20 rows, one split a row
  card = dataclasses.replace(cards.CARDS.get('babi_memn2n_joint'),
                             config='configs/babi_memn2n.py:tasks=joint,seeds=2')
  report = evidence.build(_write_sweep(tmp_path, card, lambda i, run: {
      **{f'test_task{t}': {'accuracy': 0.9} for t in range(1, 21)},
      'train': {'accuracy': 0.9, 'loss': 1.0}}), tmp_path)
  assert len(report['rows']) == 20 and report['rows'][0]['wall_s'] == 60.0
  assert report['wall_s'] == 120.0  # not 20 x 120


def test_best_of_n_protocol_and_the_mean_over_rows(tmp_path):
  """bAbI: errors from accuracies, the seed with the best train accuracy per task, and the mean
  error and failed tasks over the 20 rows, by each statistic."""
  card = dataclasses.replace(cards.CARDS.get('babi_memn2n'),
                             config='configs/babi_memn2n.py:tasks=all,seeds=2')

  def results(i, run):  # task t: seed 0 errs 2t %, seed 1 (better in training) t %
    t, seed = int(run.arg.split(',')[0].split('=')[1]), run.overrides['seed']
    return {'test': {'accuracy': 1 - t * (2 - seed) / 100},
            'train': {'accuracy': 0.9 + 0.05 * seed, 'loss': 1.0}}
  report = evidence.build(_write_sweep(tmp_path, card, results), tmp_path)
  task3 = report['rows'][2]
  assert task3['summary']['mean'] == pytest.approx(0.045)  # errors 6% and 3%
  assert task3['selected'] == {'seed': 1, 'value': pytest.approx(0.03), 'of': 2}
  agg = report['aggregate']
  assert agg['seeds']['mean'] == pytest.approx(1.5 * 10.5)  # mean of 1.5 t over t = 1..20
  assert agg['selected']['mean'] == pytest.approx(10.5)
  assert (agg['seeds']['failed'], agg['selected']['failed']) == (17, 15)  # 1.5 t > 5, t > 5
  assert agg['paper'] == {'mean': pytest.approx(13.855), 'failed': 11}
  assert report['verdict'] == 'reproduced' and report['reason'].startswith(
      'mean over 20 rows 10.5 ≤ target 13.9 (the selection protocol); 15 of 20 failed')
  assert task3['verdict'] == 'reported'
  text = render.section(report)
  assert '3.0 (seed 1 of 2)' in text and 'ours, the selected seeds 10.5, 15 failed' in text


def test_keep_rows_joins_the_seeds_of_two_sittings(tmp_path):
  """Seeds of one row run in two sittings make one row: the statistics over all of them, the
  selection protocol among all of them, each seed with the conditions of its sitting."""
  card = dataclasses.replace(cards.CARDS.get('babi_memn2n'),
                             config='configs/babi_memn2n.py:tasks=all,seeds=3')

  def sitting(done, error_of_seed):
    def results(i, run):  # task t, seed s: error (s + 1) · t %, train accuracy falling with s
      t, seed = int(run.arg.split(',')[0].split('=')[1]), run.overrides['seed']
      if seed not in done:
        return None
      return {'test': {'accuracy': 1 - error_of_seed(seed) * t / 100},
              'train': {'accuracy': 0.99 - 0.01 * seed, 'loss': 1.0}}
    return results

  first = _write_sweep(tmp_path / 'a', card, sitting({0, 1}, lambda s: 5.0))  # s0 replaced below
  previous = json.loads(json.dumps(evidence.build(first, tmp_path / 'a', 'first sitting')))
  _write_sweep(tmp_path / 'b', card, sitting({0, 2}, lambda s: s + 1.0))
  report = evidence.build(card, tmp_path / 'b', 'second sitting', previous)
  task2 = report['rows'][1]
  assert task2['seeds'] == [0, 1, 2] and report['missing'] == []
  assert task2['by_seed'] == pytest.approx({0: 0.02, 1: 0.10, 2: 0.06})  # seed 0 re-run: 1 · 2 %
  assert task2['summary']['mean'] == pytest.approx(0.06)
  assert task2['selected'] == {'seed': 0, 'value': pytest.approx(0.02), 'of': 3}
  assert task2['conditions'] == 'seeds 0, 2: second sitting; seeds 1: first sitting'
  # A third sitting with no finished run rebuilds the same row from the committed records.
  _write_sweep(tmp_path / 'c', card, lambda i, run: None)
  committed = json.loads(json.dumps(report))
  again = evidence.build(card, tmp_path / 'c', 'third sitting', committed)['rows'][1]
  assert (again['by_seed'], again['selected'], again['conditions']) == (
      task2['by_seed'], task2['selected'], task2['conditions'])


def test_splice_replaces_only_the_marked_block():
  text = 'a\n<!-- card:x -->\nold\n<!-- /card:x -->\nb\n'
  assert render.splice(text, {'x': 'new\n', 'y': 'z\n'}) == (
      'a\n<!-- card:x -->\nnew\n<!-- /card:x -->\nb\n')


def test_an_ordering_on_an_error_card_wants_the_error_to_fall():
  """On a complement card (values are errors) "worse -> better" means a falling error."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  base = cards.CARDS.get('seq2seq_ladder')
  row = lambda label, values: {'label': label, 'summary': {'n': len(values)},
                               'by_seed': dict(enumerate(values))}
  falling = {base.order[0]: row('a', [0.30, 0.32, 0.31]),
             base.order[1]: row('b', [0.20, 0.21, 0.22]),
             base.order[2]: row('c', [0.10, 0.12, 0.11])}
  rising = {k: row(v['label'], [1.0 - x for x in v['by_seed'].values()])
            for k, v in falling.items()}
  errors = dataclasses.replace(base, complement=True)
  assert evidence.order_verdict(errors, falling)[0] == 'ordering reproduced'
  assert evidence.order_verdict(errors, rising)[0] == 'not reproduced'
  assert evidence.order_verdict(base, rising)[0] == 'ordering reproduced'
  assert evidence.order_verdict(base, falling)[0] == 'not reproduced'


def test_a_verdict_shows_the_digit_that_decides_it():
  row = cards.Row('', 'mean', target=12.4)
  assert evidence.row_verdict(row, 12.4242, False, 1) == ('not reproduced', '12.42 > target 12.4')
  assert evidence.row_verdict(row, 12.5, False, 1) == ('not reproduced', '12.5 > target 12.4')
  assert evidence.row_verdict(row, 12.39, False, 1) == ('reproduced', '12.4 ≤ target 12.4')
