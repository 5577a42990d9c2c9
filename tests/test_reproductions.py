"""Reproduction cards: the committed docs equal their recomputation from the committed runs and the
cards' definitions, a tampered copy fails that check and names what was tampered with, and the
evidence of a sweep is written as per-run files."""

import dataclasses
import json
import math
import os
import shutil

import numpy as np
import pytest
from scipy import stats as scipy_stats

from attention_zoo import sweeps
from attention_zoo.analysis import report as sweep_report
from attention_zoo.analysis import stats
from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd
from attention_zoo.reproductions import cards, check, derive, evidence, render
from experiments import reproduce

EVIDENCE = evidence.load(reproduce.EVIDENCE)


def _problems(folder=reproduce.EVIDENCE, md=None, readme=None):
  return check.problems(folder, md if md is not None else reproduce.REPRODUCTIONS_MD.read_text(),
                        readme if readme is not None else reproduce.README.read_text())


def test_committed_docs_equal_their_recomputation_from_the_runs():
  assert _problems() == [], 'run python -m experiments.reproduce --docs'


def test_a_folder_of_no_card_is_an_error_naming_it(tmp_path):
  (tmp_path / 'not_a_card' / evidence.RUNS).mkdir(parents=True)
  with pytest.raises(ValueError, match='not_a_card: evidence of no card; cards: .*babi_memn2n, '):
    evidence.load(tmp_path)


def test_every_card_has_per_run_evidence_and_every_folder_is_a_card():
  assert sorted(EVIDENCE) == sorted(cards.CARDS.names())
  for name in EVIDENCE:
    for run in (reproduce.EVIDENCE / name / evidence.RUNS).iterdir():
      files = {p.name for p in run.iterdir()}
      assert {wd.CONFIG, evidence.RUN} <= files, run
      # a run's final metrics as it wrote them, or (older runs) as the earlier report kept them
      assert ({wd.RESULTS, evidence.CURVE} <= files) != (evidence.RECORD in files), run
      # a card that reads attention measures commits them per run
      assert set(evidence.measure_files(cards.CARDS.get(name))) <= files, run
  assert not list(reproduce.EVIDENCE.glob('*/report.json'))  # derived, never committed


def test_evidence_stays_small():
  size = sum(p.stat().st_size for p in reproduce.EVIDENCE.rglob('*') if p.is_file())
  assert size < 5e6, f'reproductions/ holds {size / 1e6:.1f} MB'


@pytest.mark.parametrize('name', cards.CARDS.names())
def test_card_rows_are_variants_of_its_sweep(name):
  card = cards.CARDS.get(name)
  spec = str(reproduce.ROOT / card.config)
  variants = {run.variant for run in sweeps.expand(spec)}
  assert {row.variant for row in card.rows} == variants


@pytest.mark.parametrize('name', sorted(EVIDENCE))
def test_committed_runs_are_runs_of_the_current_configs(name):
  """Each committed run's config equals what its config file resolves to today, and the run
  belongs to the row (variant) and seed its run.json names."""
  card = cards.CARDS.get(name)
  runs = {run.name: run for run in sweeps.expand(str(reproduce.ROOT / card.config))}
  for run_dir in sorted((reproduce.EVIDENCE / name / evidence.RUNS).iterdir()):
    about = wd.read_json(run_dir / evidence.RUN)
    run = runs[run_dir.name]
    assert (about['variant'], about['seed']) == (run.variant, run.overrides.get('seed', 0))
    stored = wd.read_json(run_dir / wd.CONFIG)
    current = config_utils.to_dict(sweeps.run_config(str(reproduce.ROOT / card.config), run))
    flat_stored, flat_now = config_utils.flatten(stored), config_utils.flatten(current)
    # (fields added to a config since are allowed: an empty section stored has no field to check)
    changed = {k: (v, flat_now.get(k)) for k, v in flat_stored.items()
               if flat_now.get(k) != v and v != {}}
    assert not changed, f'{name}/{run_dir.name}: the config changed since its evidence: {changed}'


@pytest.mark.parametrize('name', sorted(EVIDENCE))
def test_every_interval_respects_its_metrics_bounds(name):
  report = EVIDENCE[name]
  for row in report['rows']:
    for metric, s in [(report['metric'], row['summary']), *row['shown'].items()]:
      if s and s['n'] > 1:
        assert stats.bounds(metric), f'{name}: {metric} has no range in stats.BOUNDS'
        lo, hi = stats.bounds(metric)
        assert lo <= s['ci95'][0] <= s['mean'] <= s['ci95'][1] <= hi, (row['label'], metric)


# ---- tampering -----------------------------------------------------------------------------------
def _copy(tmp_path):
  """A copy of the evidence and the docs."""
  shutil.copytree(reproduce.EVIDENCE, tmp_path / 'reproductions')
  return (tmp_path / 'reproductions', reproduce.REPRODUCTIONS_MD.read_text(),
          reproduce.README.read_text())


def _edit_in_section(text, card, old, new):
  """`text` with the first `old` after the heading (or README block) of `card` made `new`."""
  starts = [i for i in (text.find(f'(`{card}`)'), text.find(f'<!-- card:{card} -->')) if i >= 0]
  start = min(starts)
  at = text.index(old, start)
  return text[:at] + new + text[at + len(old):]


DOC_EDITS = {  # what is edited: (file, card, old text, new text)
    'a p-value': ('README.md', 'dates', '(p = 0.019)', '(p = 0.001)'),
    'a mean': ('REPRODUCTIONS.md', 'se_mnist', '98.16 ± 0.15', '98.86 ± 0.15'),
    'tokens/s': ('REPRODUCTIONS.md', 'multi30k_transformer', '| 1,439 |', '| 999,999 |'),
    'a total time': ('REPRODUCTIONS.md', 'dates', 'total run time 31.3 min',
                     'total run time 21.3 min'),
    'a verdict': ('REPRODUCTIONS.md', 'se_mnist', '**Verdict:** not reproduced:',
                  '**Verdict:** reproduced:'),
    'a target': ('README.md', 'multi30k_transformer', '35 (reported)', '34 (reported)'),
    'a target source': ('REPRODUCTIONS.md', 'dates', '99 (reported)', '99 (Saito, ch. 8)'),
    'a deviation': ('REPRODUCTIONS.md', 'seq2seq_ladder', 'Generated questions, not the book',
                    'The book\'s questions, as the book'),
    'how a choice was made': ('REPRODUCTIONS.md', 'multi30k_transformer',
                              'was chosen on the test split', 'was chosen on validation'),
    'a power estimate': ('README.md', 'dates', '1,986 seeds would detect it',
                         '19 seeds would detect it'),
    'a decision': ('REPRODUCTIONS.md', 'se_mnist', '67 seeds would detect it, more than the 30',
                   '3 seeds would detect it, fewer than the 30'),
    'a plateau': ('REPRODUCTIONS.md', 'dates_alignment', 'still rising', 'not rising'),
}


@pytest.mark.parametrize('what', sorted(DOC_EDITS))
def test_an_edited_doc_fails_the_check_and_the_failure_names_it(tmp_path, what):
  folder, md, readme = _copy(tmp_path)
  file, card, old, new = DOC_EDITS[what]
  if file == 'README.md':
    readme = _edit_in_section(readme, card, old, new)
  else:
    md = _edit_in_section(md, card, old, new)
  found = check.problems(folder, md, readme)
  assert found, f'{what} edited in {file}, and the check passed'
  assert any(p.startswith(f'{file}:') and f'(card {card})' in p and new in p and old in p
             for p in found), found


def test_an_edited_run_file_fails_the_check_until_the_docs_are_redrawn(tmp_path):
  folder, md, readme = _copy(tmp_path)
  run = (folder / 'multi30k_transformer' / evidence.RUNS /
         'source=de,target=en,size=small_long,seed=0')
  record = wd.read_json(run / evidence.RECORD)
  assert record['splits']['test']['value'] == pytest.approx(37.94, abs=5e-3)
  record['splits']['test']['value'] = 30.0
  wd.write_json(run / evidence.RECORD, record)
  found = check.problems(folder, md, readme)
  for file in ('README.md', 'REPRODUCTIONS.md'):  # the row (kept beside, without a target)
    assert any(p.startswith(f'{file}:') and '(card multi30k_transformer)' in p
               and '| 30.00 | 57.17 | 1 (0) | reported: no target for this row |' in p
               for p in found), found
  redrawn = evidence.load(folder)
  assert check.problems(folder, render.render(redrawn),
                        render.splice(readme, render.readme_blocks(redrawn))) == []


@pytest.mark.parametrize('change', ['target', 'deviation', 'source'])
def test_a_changed_definition_fails_the_check(change):
  """The definition lives in cards.py only: a changed target, deviation or source there no
  longer matches the committed docs."""
  card = cards.CARDS.get('multi30k_transformer')
  changed = {
      'target': dataclasses.replace(card, rows=(dataclasses.replace(card.rows[0], target=98.0),
                                                *card.rows[1:])),
      'deviation': dataclasses.replace(card, deviations=card.deviations[:-1] + ('Other.',)),
      'source': dataclasses.replace(card, rows=(card.rows[0], dataclasses.replace(
          card.rows[1], target_source='a made-up table'), *card.rows[2:])),
  }[change]
  with cards.CARDS.override(card.name, changed):
    found = _problems()
  assert found and all('(card multi30k_transformer)' in p for p in found), found
  expected = {'target': '| 98 (', 'deviation': 'Other.', 'source': 'a made-up table'}[change]
  assert any(expected in p for p in found), found


# ---- writing the evidence of a sweep -------------------------------------------------------------
def _write_sweep(root, card, results_of, curve_of=None):
  """A sweep dir of `card` whose run r has results.json results_of(i, r) (None: not finished)
  and metrics.jsonl rows curve_of(i, r)."""
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
    wd.write_json(run_dir / wd.CONFIG, {'model_name': 'test', 'seed': run.overrides['seed']})
    wd.write_json(run_dir / wd.RESULTS, {'wall_s': 60.0, **results})
    rows = curve_of(i, run) if curve_of else []
    (run_dir / wd.METRICS).write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return card


def _transformer_card():
  """The multi30k_transformer card with its two judged rows only (length chosen on validation)."""
  card = cards.CARDS.get('multi30k_transformer')
  return dataclasses.replace(card, rows=card.rows[:2],
                             config=card.config.replace('small_select+small_long', 'small_select'))


def _fake_sweep(root, values):
  """A sweep dir of the multi30k_transformer card with results.json of the given BLEU values
  (None: that run has not finished) and a curve of validation and test rows."""
  def results(i, run):
    if i >= len(values) or values[i] is None:
      return None
    return {'test': {'gen_bleu': values[i], 'gen_chrf': 50.0}, 'tokens_per_s': 1000.0,
            'final_evaluation': {'bleu_signature': 'nrefs:1|case:mixed|eff:no|tok:13a'}}

  def curve(i, run):
    return [{'step': 100, 'split': 'train', 'loss': 3.0},
            {'step': 100, 'split': 'validation', 'gen_bleu': 10.0 + i},
            {'step': 200, 'split': 'validation', 'gen_bleu': 20.0 + i},
            {'step': 200, 'split': 'test', 'gen_bleu': values[i]}]
  return _write_sweep(root, _transformer_card(), results, curve)


def _build(card, sweep_dir, tmp, conditions='', keep_from=None):
  """The report of `card` from the sweep, through its written evidence (a fresh folder, or a
  copy of `keep_from` joined with keep_rows)."""
  folder = tmp / 'evidence'
  shutil.rmtree(folder, ignore_errors=True)
  if keep_from:
    shutil.copytree(keep_from, folder)
  return evidence.write(card, sweep_dir, folder, conditions, keep_rows=bool(keep_from))


def test_write_stores_each_runs_files_and_load_derives_the_same_report(tmp_path):
  card = _fake_sweep(tmp_path / 'sweep', [37.0, 30.0])
  folder = tmp_path / 'reproductions'
  report = evidence.write(card, tmp_path / 'sweep', folder, 'alone')
  same = lambda x: json.dumps(x, sort_keys=True)  # (one seed: std NaN, which != itself)
  with cards.CARDS.override(card.name, card):
    assert same(evidence.load(folder)) == same({card.name: report})
  runs = folder / card.name / evidence.RUNS
  names = sorted(name for row in report['rows'] for name in row['runs'])
  assert sorted(p.name for p in runs.iterdir()) == names
  run = runs / names[0]
  assert sorted(p.name for p in run.iterdir()) == sorted(
      [wd.CONFIG, wd.RESULTS, evidence.CURVE, evidence.RUN])
  # the results and the config as the run wrote them; the curve: its validation rows only
  sweep_run = tmp_path / 'sweep' / wd.RUNS / names[0]
  assert (run / wd.RESULTS).read_bytes() == (sweep_run / wd.RESULTS).read_bytes()
  assert (run / wd.CONFIG).read_bytes() == (sweep_run / wd.CONFIG).read_bytes()
  assert [(r['step'], r['gen_bleu']) for r in wd.read_jsonl(run / evidence.CURVE)] == [
      (100, 10.0), (200, 20.0)]
  assert wd.read_json(run / evidence.RUN)['conditions'] == 'alone'
  assert report['evidence'] == {'runs': 2, 'results': 2, 'curves': 2, 'row_level': []}
  assert 'each with its config, results.json and validation curve.' in render.section(report)
  assert sorted(p.name for p in folder.iterdir()) == [card.name]  # no temp or old folder left


def test_build_judges_each_row_against_its_target(tmp_path):
  card = _fake_sweep(tmp_path / 'sweep', [37.0, 30.0])
  report = _build(card, tmp_path / 'sweep', tmp_path)
  de_en, en_de = report['rows']
  assert (de_en['verdict'], de_en['reason']) == ('reproduced', '37.00 ≥ target 36.5')
  assert (en_de['verdict'], en_de['reason']) == ('not reproduced', '30.00 < target 35')
  assert report['verdict'] == 'partly reproduced'
  assert report['signatures'] == {'bleu_signature': 'nrefs:1|case:mixed|eff:no|tok:13a'}
  assert report['wall_s'] == 120.0 and de_en['wall_s'] == 60.0
  table = render.table(report)
  assert '37.00' in table and 'partly reproduced' in render.section(report)
  # every target names its source; one with none cited reads "reported"
  assert '| 36.5 (bentrevett/pytorch-seq2seq, notebook 6) |' in table
  assert '| 35 (reported) |' in table
  # A shown 0-100 score keeps 2 decimals (chrF 50.00, not 50.0000); fractions keep 4.
  assert '| 50.00 |' in table and '50.0000' not in table
  assert render._shown_digits({'mean': 0.98693}) == 4  # pylint: disable=protected-access
  # The seeds column counts them: one run of seed 0 reads '1 (0)', never a bare '0'.
  assert '| 1 (0) |' in table and '| 0 |' not in table


def test_every_cited_target_has_a_source_and_the_multi30k_length_choice_is_stated():
  for card in map(cards.CARDS.get, cards.CARDS.names()):
    for row in card.rows:
      if row.target is not None and row.target_source:
        # (the source names the row by its model and direction: the label before any comma)
        assert any(row.label.partition(',')[0] in s for s in card.sources), (card.name, row)
  text = reproduce.REPRODUCTIONS_MD.read_text()
  assert 'was chosen on the test split' in text and 'stayed below 35 test BLEU' in text
  assert 'length chosen on validation' in text
  assert 'at the step of the highest validation BLEU' in text


def test_a_seed_parallel_run_counts_its_share_of_the_group_wall_time(tmp_path):
  # two runs trained as one seed-parallel group of 2, each results.json with the group's 60 s
  card = _write_sweep(tmp_path / 'sweep', _transformer_card(),
                      lambda i, run: {'test': {'gen_bleu': 36.0, 'gen_chrf': 50.0},
                                      'seed_group_size': 2})
  report = _build(card, tmp_path / 'sweep', tmp_path)
  assert [r['wall_s'] for r in report['rows']] == [30.0, 30.0] and report['wall_s'] == 60.0


def test_a_run_without_wall_s_keeps_the_time_between_its_files(tmp_path):
  card = _write_sweep(tmp_path / 'sweep', _transformer_card(),
                      lambda i, run: {'test': {'gen_bleu': 36.0}, 'wall_s': None})
  for run_dir in (tmp_path / 'sweep' / wd.RUNS).iterdir():
    os.utime(run_dir / wd.CONFIG, (1000.0, 1000.0))
    os.utime(run_dir / wd.RESULTS, (1042.0, 1042.0))  # written 42 s after the config
  report = _build(card, tmp_path / 'sweep', tmp_path)
  assert [r['wall_s'] for r in report['rows']] == [42.0, 42.0] and report['wall_s'] == 84.0
  run = tmp_path / 'evidence' / card.name / evidence.RUNS / report['rows'][0]['runs'][0]
  assert wd.read_json(run / evidence.RUN)['wall_s_from_file_times'] == 42.0


def test_unfinished_rows_are_not_run_and_stray_variants_are_errors(tmp_path):
  card = _fake_sweep(tmp_path / 'sweep', [37.0])  # only the first run finished
  report = _build(card, tmp_path / 'sweep', tmp_path)
  assert report['rows'][1]['verdict'] == 'not run' and report['rows'][1]['runs'] == []
  other = dataclasses.replace(card, rows=card.rows[1:])
  with pytest.raises(ValueError, match='does not list'):
    _build(other, tmp_path / 'sweep', tmp_path)


def test_keep_rows_keeps_the_committed_runs_of_rows_without_runs_here(tmp_path):
  card = _fake_sweep(tmp_path / 'a', [37.0, 30.0])
  first = tmp_path / 'first'
  evidence.write(card, tmp_path / 'a', first, 'first sitting')
  _fake_sweep(tmp_path / 'b', [None, 36.0])  # a later sitting ran only en->de
  report = _build(card, tmp_path / 'b', tmp_path, 'second sitting', keep_from=first)
  de_en, en_de = report['rows']
  assert (de_en['by_seed'], de_en['conditions'], de_en['verdict']) == (
      {0: 37.0}, 'first sitting', 'reproduced')
  assert (en_de['by_seed'], en_de['conditions'], en_de['verdict']) == (
      {0: 36.0}, 'second sitting', 'reproduced')
  assert report['verdict'] == 'reproduced'
  assert report['conditions'] == ('Transformer de→en, length chosen on validation: first '
                                  'sitting; Transformer en→de, length chosen on validation: '
                                  'second sitting')
  assert report['wall_s'] == 120.0
  assert _build(card, tmp_path / 'b', tmp_path)['rows'][0]['verdict'] == 'not run'


def test_rows_reading_splits_of_one_run_count_its_time_once(tmp_path):
  # joint bAbI: 2 runs (60 s each), each read by the 20 rows, one split a row
  card = dataclasses.replace(cards.CARDS.get('babi_memn2n_joint'),
                             config='configs/babi_memn2n.py:tasks=joint,seeds=2')
  _write_sweep(tmp_path / 'sweep', card, lambda i, run: {
      **{f'test_task{t}': {'accuracy': 0.9} for t in range(1, 21)},
      'train': {'accuracy': 0.9, 'loss': 1.0}})
  report = _build(card, tmp_path / 'sweep', tmp_path)
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
  _write_sweep(tmp_path / 'sweep', card, results)
  report = _build(card, tmp_path / 'sweep', tmp_path)
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
  assert 'Target 13.9 (Sukhbaatar et al. (2015), Table 1, PE LS RN: mean error)' in text


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

  _write_sweep(tmp_path / 'a', card, sitting({0, 1}, lambda s: 5.0))  # s0 replaced below
  first = tmp_path / 'first'
  evidence.write(card, tmp_path / 'a', first, 'first sitting')
  _write_sweep(tmp_path / 'b', card, sitting({0, 2}, lambda s: s + 1.0))
  report = _build(card, tmp_path / 'b', tmp_path, 'second sitting', keep_from=first)
  task2 = report['rows'][1]
  assert task2['seeds'] == [0, 1, 2]
  assert task2['by_seed'] == pytest.approx({0: 0.02, 1: 0.10, 2: 0.06})  # seed 0 re-run: 1 · 2 %
  assert task2['summary']['mean'] == pytest.approx(0.06)
  assert task2['selected'] == {'seed': 0, 'value': pytest.approx(0.02), 'of': 3}
  assert task2['conditions'] == 'seeds 0, 2: second sitting; seeds 1: first sitting'


def test_runs_older_than_per_run_files_and_row_level_numbers(tmp_path):
  """A run kept as record.json (no results.json, no curve) is read as its record; legacy.json
  fills a row's timings and selected seed only where no run of the row has its own."""
  card = dataclasses.replace(cards.CARDS.get('babi_memn2n'),
                             config='configs/babi_memn2n.py:tasks=all,seeds=2')
  folder = tmp_path / card.name
  for row in card.rows:
    for seed in (0, 1):
      run = folder / evidence.RUNS / f'{row.variant},seed={seed}'
      run.mkdir(parents=True)
      wd.write_json(run / wd.CONFIG, {})
      wd.write_json(run / evidence.RUN, {'variant': row.variant, 'seed': seed,
                                         'conditions': 'then', 'machine': '2 CPUs (x86_64)'})
      wd.write_json(run / evidence.RECORD, {
          'note': 'kept by an earlier report', 'select_key': None, 'wall_s': None,
          'tokens_per_s': None, 'steps_per_s': None, 'final_evaluation': None,
          'splits': {'test': {'value': 0.01 * (seed + 1), 'shown': {}}}})
  wd.write_json(folder / evidence.LEGACY, {'note': '', 'rows': {
      row.variant: {'wall_s': 30.0, 'tokens_per_s': 5.0, 'steps_per_s': None,
                    'selected_seed': 1} for row in card.rows}})
  report = evidence.read_card(card, folder)
  task1 = report['rows'][0]
  assert task1['selected'] == {'seed': 1, 'value': 0.02, 'of': 2}
  assert (task1['wall_s'], task1['tokens_per_s'], task1['steps_per_s']) == (30.0, 5.0, None)
  assert report['wall_s'] == 20 * 2 * 30.0
  assert report['evidence'] == {'runs': 40, 'results': 0, 'curves': 0,
                                'row_level': ['selected_seed', 'tokens_per_s', 'wall_s']}
  line = render.evidence_line(report)
  assert 'none has a validation curve: they predate per-run files' in line
  assert 'Per-run wall time, tokens/s, training error (which picks the selected seed): not ' \
         'committed' in line
  # a run of the row with its own timing wins over the row-level number
  rec = wd.read_json(folder / evidence.RUNS / f'{card.rows[0].variant},seed=0' / evidence.RECORD)
  wd.write_json(folder / evidence.RUNS / f'{card.rows[0].variant},seed=0' / evidence.RECORD,
                {**rec, 'wall_s': 90.0})
  assert evidence.read_card(card, folder)['rows'][0]['wall_s'] == 90.0


def test_splice_replaces_only_the_marked_block():
  text = 'a\n<!-- card:x -->\nold\n<!-- /card:x -->\nb\n'
  assert render.splice(text, {'x': 'new\n', 'y': 'z\n'}) == (
      'a\n<!-- card:x -->\nnew\n<!-- /card:x -->\nb\n')


def test_an_ordering_on_an_error_card_wants_the_error_to_fall():
  """On a complement card (values are errors) "worse -> better" means a falling error."""
  base = cards.CARDS.get('seq2seq_ladder')
  row = lambda label, values: {'label': label, 'summary': {'n': len(values)},
                               'by_seed': dict(enumerate(values))}
  falling = {base.order[0]: row('a', [0.30, 0.32, 0.31]),
             base.order[1]: row('b', [0.20, 0.21, 0.22]),
             base.order[2]: row('c', [0.10, 0.12, 0.11])}
  rising = {k: row(v['label'], [1.0 - x for x in v['by_seed'].values()])
            for k, v in falling.items()}
  errors = dataclasses.replace(base, complement=True)
  assert derive.order_verdict(errors, falling)[0] == 'ordering reproduced'
  assert derive.order_verdict(errors, rising)[0] == 'not reproduced'
  assert derive.order_verdict(base, rising)[0] == 'ordering reproduced'
  assert derive.order_verdict(base, falling)[0] == 'not reproduced'


def test_a_verdict_shows_the_digit_that_decides_it():
  row = cards.Row('', 'mean', target=12.4)
  assert derive.row_verdict(row, 12.4242, False, 1) == ('not reproduced', '12.42 > target 12.4')
  assert derive.row_verdict(row, 12.5, False, 1) == ('not reproduced', '12.5 > target 12.4')
  assert derive.row_verdict(row, 12.39, False, 1) == ('reproduced', '12.4 ≤ target 12.4')


# ---- bounded intervals ---------------------------------------------------------------------------
def test_a_loss_interval_never_goes_below_zero():
  """The demo's report gave a near-zero loss the interval [-0.0002, 0.0044]: the t interval of a
  loss is clipped at 0 (and a perplexity at 1), and says so."""
  values = [0.0001, 0.0040, 0.0005]
  half = 4.302652729911275 * np.std(values, ddof=1) / math.sqrt(3)  # t(0.975, 2)
  assert np.mean(values) - half < 0  # the plain t interval leaves [0, ∞)
  for metric in ('loss', 'smoothed_loss', 'bits_per_char'):
    s = stats.summarize(values, stats.bounds(metric))
    assert s['ci95'] == [0.0, pytest.approx(np.mean(values) + half)]
    assert s['interval'] == 't, clipped to [0, ∞)'
  assert stats.summarize([1.001, 1.2, 1.0001], stats.bounds('perplexity'))['ci95'][0] == 1.0


def test_a_sweep_report_clips_the_loss_interval(tmp_path):
  """The report of a sweep (what `make demo` writes) clips the loss the same way."""
  losses = [0.0001, 0.0040, 0.0005]  # per seed
  _write_sweep(tmp_path, cards.CARDS.get('dates_combine'), lambda i, run: {
      'test': {'loss': losses[run.overrides['seed']], 'gen_exact_match': 0.99}})
  report = sweep_report.build(tmp_path)
  assert len(report['variants']) == 2
  for variant in report['variants']:
    loss = variant['metrics']['loss']
    assert loss['n'] == 3 and loss['ci95'][0] == 0.0 and loss['ci95'][1] > max(losses)


# ---- power ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('effect, seeds', [(0.5, 34), (0.8, 15), (1.0, 10), (2.0, 5)])
def test_seeds_for_power_match_the_published_sample_sizes(effect, seeds):
  """Paired (one-sample) t, two-sided α = 0.05, 80% power: the sample sizes G*Power gives
  (Faul et al. 2007) and Cohen (1988, Table 2.4.1 read for the one-sample case): d = 0.5 -> 34,
  0.8 -> 15, 1.0 -> 10; and d = 2 -> 5."""
  assert stats.seeds_for_power(effect) == seeds
  assert stats.t_power(effect, seeds) >= 0.8 > stats.t_power(effect, seeds - 1)
  assert stats.seeds_for_power(-effect) == seeds  # two-sided: the sign does not matter
  assert stats.seeds_for_power(0.0) is None


def test_t_power_matches_a_simulation():
  """The noncentral-t power against the rejection rate of scipy's own t-test on simulated
  differences N(δ, 1), n = 5, δ = 1.2, 40,000 draws (fixed seed): within 4 standard errors."""
  rng = np.random.default_rng(0)
  n, effect, draws = 5, 1.2, 40_000
  d = rng.normal(effect, 1.0, (draws, n))
  rate = np.mean(scipy_stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05)
  power = stats.t_power(effect, n)
  assert abs(rate - power) < 4 * math.sqrt(power * (1 - power) / draws), (rate, power)
  assert power == pytest.approx(0.5302, abs=1e-3)  # (noncentrality δ instead of δ√n: 0.154)


def test_detectable_effect_is_where_the_power_reaches_80_percent():
  for n in (2, 3, 10):
    d = stats.detectable_effect(n)
    assert stats.t_power(d, n) == pytest.approx(0.8, abs=1e-8)
  # n = 10 needs d ≈ 1.0 (the published 10 seeds at d = 1.0 reach 0.803)
  assert stats.detectable_effect(10) == pytest.approx(0.9960, abs=1e-3)


def _ladder_exact_match(variant):
  """{seed: test exact match in points} of a seq2seq_ladder row, read from its results.json."""
  runs = reproduce.EVIDENCE / 'seq2seq_ladder' / evidence.RUNS
  return {int(d.name.rpartition('=')[2]): 100 * json.loads((d / wd.RESULTS).read_text())['test'][
      'gen_exact_match'] for d in runs.glob(f'{variant},seed=*')}


def test_a_cards_seed_map_is_valid_and_in_its_command():
  from attention_zoo.train import seeds  # pylint: disable=import-outside-toplevel
  for name in cards.CARDS.names():
    card = cards.CARDS.get(name)
    if card.seed_map is not None:
      assert card.seed_map in seeds.CHOICES, name
      assert card.command.endswith(f' --seed_map={card.seed_map}'), name
  assert cards.CARDS.get('se_mnist').seed_map == 'processes'


def test_the_ladders_steps_and_their_power_by_hand():
  """Each step of the ladder on the book's operands (plain -> reversed -> reversed + peeky):
  per-seed differences from the runs' results.json, scipy's paired t-test, and the power entry
  the card states (the effect, the seeds it needs) from them."""
  card = cards.CARDS.get('seq2seq_ladder')
  report = EVIDENCE[card.name]
  labels = {r['variant']: r['label'] for r in report['rows']}
  for (worse, better), entry in zip(zip(card.order, card.order[1:]), report['power']):
    lo, hi = _ladder_exact_match(worse), _ladder_exact_match(better)
    assert sorted(lo) == sorted(hi) == list(range(10))
    d = [hi[s] - lo[s] for s in sorted(lo)]
    assert entry['label'] == f'{labels[better]} - {labels[worse]}'
    assert entry['mean_diff'] == pytest.approx(np.mean(d))
    assert entry['effect'] == pytest.approx(np.mean(d) / np.std(d, ddof=1))
    assert entry['p_value'] == pytest.approx(scipy_stats.ttest_rel(
        [hi[s] for s in sorted(lo)], [lo[s] for s in sorted(lo)]).pvalue)
    assert entry['seeds_needed'] == stats.seeds_for_power(entry['effect'])
    assert entry['detectable'] == pytest.approx(stats.detectable_effect(10) * np.std(d, ddof=1))
    pilot = d[:card.pilot]  # the first 3 seeds, whose power estimate set the 10
    assert entry['pilot']['seeds'] == [0, 1, 2]
    assert entry['pilot']['seeds_needed'] == stats.seeds_for_power(
        np.mean(pilot) / np.std(pilot, ddof=1)) <= 10
  assert len(report['power']) == len(card.order) - 1
  # reversing the source is decided (p < 0.05); the peeky step is not, and needs more seeds than
  # the budget: the card says so rather than calling it either way
  reverse, peeky = report['power']
  assert reverse['p_value'] < 0.05 and peeky['p_value'] > 0.05 and not peeky['decidable']
  assert report['verdict'] == 'not reproduced' and 'not significantly ordered' in report['reason']


def test_power_is_stated_where_a_target_verdict_rests_on_noise():
  """dates: only rows whose seeds do not tell their mean from the 99 target (one-sample t,
  p >= 0.05) get a power line; the Transformer-additive row cannot be decided at this size."""
  report = EVIDENCE['dates']
  assert [e['label'] for e in report['power']] == ['seq2seq + Luong general - target 99',
                                                   'Transformer, additive - target 99']
  additive = report['power'][1]
  row = next(r for r in report['rows'] if r['label'] == 'Transformer, additive')
  values = [v * 100 - 99 for v in row['by_seed'].values()]
  assert additive['mean_diff'] == pytest.approx(np.mean(values))
  assert additive['seeds_needed'] > derive.SEED_BUDGET and not additive['decidable']
  lines = render.power_lines(report)
  assert any('Transformer, additive - target 99' in line and 'cannot be decided at this size'
             in line for line in lines)
  se = EVIDENCE['se_mnist']['power'][0]
  assert se['label'] == 'SE-ResNet (small) - ResNet (small)' and se['p_value'] == pytest.approx(
      0.159, abs=1e-3)
  assert se['n'] == 18 and not se['decidable']
  assert se['seeds_needed'] == stats.seeds_for_power(se['mean_diff'] / se['std'])


def test_se_mnist_decision_by_hand_from_the_results_files():
  """The 18-seed SE card from its runs' results.json read by hand: scipy's paired t-test of the
  test accuracies, and the verdict that follows (not significant: not reproduced)."""
  runs = reproduce.EVIDENCE / 'se_mnist' / evidence.RUNS
  acc = {m: [json.loads((runs / f'model_name={m},seed={s}' / wd.RESULTS).read_text())['test'][
      'accuracy'] for s in range(18)] for m in ('resnet_small', 'se_resnet_small')}
  test = scipy_stats.ttest_rel(acc['se_resnet_small'], acc['resnet_small'])
  report = EVIDENCE['se_mnist']
  se = next(r for r in report['rows'] if r['variant'] == 'model_name=se_resnet_small')
  assert se['paired']['p_value'] == pytest.approx(test.pvalue)
  assert se['paired']['mean_diff'] == pytest.approx(
      np.mean(acc['se_resnet_small']) - np.mean(acc['resnet_small']))
  assert test.pvalue > 0.05 and report['verdict'] == 'not reproduced'


def test_the_babi_forms_are_chosen_on_validation_by_hand():
  """babi_memn2n_forms from its 50 runs' results.json read by hand: each text form's validation
  error against the code's on its task, scipy's paired t-test, and the verdicts that follow;
  the card's rows read the validation split, never test."""
  card = cards.CARDS.get('babi_memn2n_forms')
  runs = reproduce.EVIDENCE / card.name / evidence.RUNS
  assert {r.split for r in card.rows} == {'validation'}
  error = {r.variant: [1 - json.loads((runs / f'{r.variant},seed={s}' / wd.RESULTS).read_text())[
      'validation']['accuracy'] for s in range(10)] for r in card.rows}
  report = EVIDENCE[card.name]
  judged = [r for r in card.rows if r.versus]
  assert len(judged) == 3
  for row in judged:
    test = scipy_stats.ttest_rel(error[row.variant], error[row.versus])
    found = next(r for r in report['rows'] if r['variant'] == row.variant)
    assert found['paired']['p_value'] == pytest.approx(test.pvalue)
    diff = np.mean(error[row.variant]) - np.mean(error[row.versus])
    assert found['paired']['mean_diff'] == pytest.approx(diff)
    assert found['verdict'] == ('reproduced' if diff > 0 and test.pvalue < 0.05 else
                                'not reproduced')
  assert report['verdict'] == 'reproduced'


@pytest.mark.parametrize('index', [0, 1], ids=['de-en', 'en-de'])
def test_the_multi30k_length_is_the_best_validation_step_by_hand(index):
  """Each Transformer run chosen on validation: its committed curve read by hand (the first
  validation row of each step after 0), the step of the highest BLEU, the checkpoints averaged up
  to it, and the card's test BLEU is the run's, read once, judged against the row's target."""
  card = cards.CARDS.get('multi30k_transformer')
  row = card.rows[index]
  run = reproduce.EVIDENCE / card.name / evidence.RUNS / f'{row.variant},seed=0'
  rows = [json.loads(line) for line in (run / evidence.CURVE).read_text().splitlines()]
  curve = {}
  for r in rows:
    if r['step'] > 0:
      curve.setdefault(r['step'], r['gen_bleu'])
  assert sorted(curve) == list(range(400, 4_001, 400))
  best = max(curve, key=lambda s: (curve[s], -s))
  results = json.loads((run / wd.RESULTS).read_text())
  assert results['final_evaluation']['selected']['step'] == best
  assert results['final_evaluation']['averaged_steps'] == list(range(best - 800, best + 1, 200))
  found = EVIDENCE[card.name]['rows'][index]
  assert found['length']['seeds'][0]['step'] == best
  assert found['by_seed'] == {0: pytest.approx(results['test']['gen_bleu'])}
  assert found['verdict'] == ('reproduced' if results['test']['gen_bleu'] >= row.target else
                              'not reproduced')


def test_a_row_set_against_another_is_judged_on_the_paired_difference():
  card = cards.CARDS.get('babi_memn2n_forms')
  base = {'name': 'x', 'conditions': '', 'machine': 'm', 'select_key': None, 'wall_s': 1.0,
          'tokens_per_s': None, 'steps_per_s': None, 'final_evaluation': None, 'curve': None,
          'results': True}

  def record(variant, seed, error):
    return {**base, 'name': f'{variant},seed={seed}', 'variant': variant, 'seed': seed,
            'splits': {'validation': {'value': error, 'shown': {}}}}

  code, text = card.rows[0].variant, card.rows[1].variant
  records = {}
  for seed, (a, b) in enumerate([(0.10, 0.12), (0.20, 0.19), (0.15, 0.18)]):  # not separable
    records[f'{code},{seed}'] = record(code, seed, a)
    records[f'{text},{seed}'] = record(text, seed, b)
  small = dataclasses.replace(card, rows=card.rows[:2])
  report = derive.report(small, records)
  row = report['rows'][1]
  assert row['verdict'] == 'not reproduced' and 'p = ' in row['reason']
  assert row['paired']['mean_diff'] == pytest.approx(np.mean([0.02, -0.01, 0.03]))
  bad = dataclasses.replace(card, rows=(dataclasses.replace(card.rows[1], versus='nothing'),))
  with pytest.raises(ValueError, match='no row of it'):
    derive.report(bad, {k: v for k, v in records.items() if v['variant'] == text})


def test_the_plateau_rule_by_hand():
  """dates_alignment's Transformer-additive runs (the demo's 1,500 steps): their validation exact
  match at the last two evaluations, read from the committed curves by hand, rises on the mean,
  so the rule asks for a longer run; a flat curve is at its plateau."""
  card = cards.CARDS.get('dates_alignment')
  want, additive = {}, 'family=transformer,score=additive'
  for seed in (0, 1, 2):
    run = reproduce.EVIDENCE / card.name / evidence.RUNS / f'{additive},seed={seed}'
    rows = [json.loads(line) for line in (run / evidence.CURVE).read_text().splitlines()]
    want[seed] = [[r['step'], 100 * r['gen_exact_match']] for r in rows[-2:]]
  plateaus = {e['label']: e for e in EVIDENCE[card.name]['plateaus']}
  found = plateaus['Transformer, additive']
  # what the demo cards' choices state: every seq2seq row and the additive Transformer still rise
  # at the demo's lengths; the scaled-dot Transformer does not
  assert sorted(label for label, e in plateaus.items() if not e['rising']) == [
      'Transformer, scaled dot']
  assert found['metric'] == 'gen_exact_match' and found['missing'] == 0
  assert {s['seed']: s['last_two'] for s in found['seeds']} == want
  assert [want[s][0][0] for s in want] == [1_200] * 3  # the demo evaluates every 600 steps
  assert found['mean_before'] == pytest.approx(np.mean([w[0][1] for w in want.values()]))
  assert found['mean_last'] == pytest.approx(np.mean([w[1][1] for w in want.values()]))
  assert found['rising'] and found['mean_last'] - found['mean_before'] == pytest.approx(1.2)
  curve = lambda values: [{'step': 100 * i, 'gen_exact_match': v} for i, v in enumerate(values)]
  records = [{'seed': 0, 'curve': curve([0.5, 0.99, 0.99])},
             {'seed': 1, 'curve': curve([0.5, 1.0, 0.98])}, {'seed': 2, 'curve': None}]
  flat = derive.plateau(card, 'x', records)
  assert not flat['rising'] and flat['missing'] == 1 and len(flat['seeds']) == 2
  line = render.plateau_lines({'digits': 2, 'plateaus': [flat]})[-1]
  assert 'seed 0 99.00 (step 100) → 99.00 (step 200)' in line and 'at its plateau' in line


# ---- a card whose metric is an attention measure -------------------------------------------------
def _alignment(values, chance=0.25):
  """measures_<split>.json of a run whose source-target arrays have these argmax_in_gold values
  ({path: value}); {} : a model without attention."""
  if not values:
    return {'alignment': {'gold': None, 'note': 'the model has no attention over the source or '
                                                'memory'}}
  return {'alignment': {'gold': '...', 'by_attention': {
      path: {'argmax_in_gold': [v], 'gold_mass': [v / 2], 'aer': [1 - v],
             'chance_in_gold': chance} for path, v in values.items()}}}


def test_chance_in_gold_by_hand():
  """Uniform attention over the real keys: |gold| / K_b per step with gold, averaged over the
  steps: example 0 (4 real keys) steps {0, 1} and {3}, example 1 (2 real keys) step {0}."""
  from attention_zoo.analysis import measure_run
  from attention_zoo.data.base import Alignment
  keys = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], bool)
  gold = [Alignment(sure=(frozenset(), frozenset()), possible=(frozenset({0, 1}), frozenset({3}))),
          Alignment(sure=(frozenset(),) * 2, possible=(frozenset({0}), frozenset()))]
  assert measure_run.chance_in_gold(keys, 2, gold) == pytest.approx((2 / 4 + 1 / 4 + 1 / 2) / 3)
  # a gold position on padding counts nothing: uniform attention puts no weight there
  gold[1] = Alignment(sure=(frozenset(),) * 2, possible=(frozenset({0, 4}), frozenset()))
  assert measure_run.chance_in_gold(keys, 2, gold) == pytest.approx((2 / 4 + 1 / 4 + 1 / 2) / 3)


def test_the_attention_array_is_chosen_on_validation_not_test():
  card = cards.CARDS.get('dates_alignment')
  layers = ('decoder/layers/0/cross_attn', 'decoder/layers/1/cross_attn')
  found = {'validation': _alignment(dict(zip(layers, (0.6, 0.9)))),
           'test': _alignment(dict(zip(layers, (0.95, 0.8))))}
  record = evidence.record_of_measures(card, found)
  assert record['measured'] == layers[1]  # best on validation, though layer 0 is best on test
  assert record['splits']['test'] == {'value': 0.8, 'shown': {'gold_mass': 0.4,
                                                              'chance_in_gold': 0.25}}
  none = evidence.record_of_measures(card, {'validation': _alignment({}), 'test': _alignment({})})
  assert none['splits']['test']['value'] is None and 'no attention' in none['note']


def _measured_sweep(root, value_of):
  """A sweep dir of the dates_alignment card: run r's arrays have argmax_in_gold value_of(r)
  ({} for no attention) on both splits, chance 0.25."""
  card = cards.CARDS.get('dates_alignment')
  _write_sweep(root, card, lambda i, run: {'test': {'gen_exact_match': 0.9}})
  for run in sweeps.expand(str(reproduce.ROOT / card.config)):
    analysis = root / wd.RUNS / run.name / wd.ANALYSIS
    analysis.mkdir(parents=True)
    for split in card.measures.splits:
      wd.write_json(analysis / f'measures_{split}.json', _alignment(value_of(run)))
  return card


def test_a_measures_card_commits_the_measures_and_tests_each_row_against_chance(tmp_path):
  def value_of(run):
    if 'score=none' in run.arg:
      return {}  # the plain encoder-decoders: no attention
    seed = run.overrides['seed']
    if 'score=general' in run.arg:  # at chance, up or down by seed: not above it
      return {'attention_weights': 0.25 + 0.01 * (seed - 1)}
    return {'attention_weights': 0.9 + 0.01 * seed}
  card = _measured_sweep(tmp_path / 'sweep', value_of)
  report = _build(card, tmp_path / 'sweep', tmp_path)
  run = next((tmp_path / 'evidence' / card.name / evidence.RUNS).iterdir())
  assert {'measures_validation.json', 'measures_test.json', wd.RESULTS} <= {
      p.name for p in run.iterdir()}
  rows = {r['label']: r for r in report['rows']}
  plain = rows['seq2seq LSTM']
  assert plain['verdict'] == 'not measured' and 'no attention' in plain['reason']
  dot = rows['seq2seq + Luong dot']
  assert dot['summary']['mean'] == pytest.approx(0.91)
  assert dot['vs_against']['mean_diff'] == pytest.approx(0.66) and dot['verdict'] == 'reproduced'
  assert dot['measured'] == {'attention_weights': 3}
  general = rows['seq2seq + Luong general']
  assert general['verdict'] == 'not reproduced' and general['vs_against']['p_value'] == 1.0
  assert report['verdict'] == 'partly reproduced'
  # the row at chance rests on noise: its power is stated (a zero mean difference: no seeds)
  assert [(e['label'], e['seeds_needed']) for e in report['power']] == [
      ('seq2seq + Luong general - chance_in_gold', None)]
  assert 'cannot be decided at this size' in render.power_lines(report)[-1]
  table = render.table(report)
  assert 'Δ vs chance_in_gold (p)' in table and '| attention_weights (3 of 3) |' in table
  assert '+66.00 (p = ' in table
  # a run whose measures were not committed is refused, naming the file
  (run / 'measures_test.json').unlink()
  with pytest.raises(FileNotFoundError, match='measures_test.json is missing'):
    evidence.read_card(card, tmp_path / 'evidence' / card.name)


def test_the_dates_alignment_evidence_chance_recomputed_from_the_task(tmp_path):
  """The committed chance level of the dates_alignment card, recomputed here from the dates task
  of one committed run's config (its test split's gold spans and source lengths), equals what the
  runs' measures hold; every run measured the same examples, so every run holds that number."""
  from attention_zoo import build
  from attention_zoo.analysis import load
  from attention_zoo.specials import PAD
  card = cards.CARDS.get('dates_alignment')
  runs = sorted((reproduce.EVIDENCE / card.name / evidence.RUNS).iterdir())
  measured = [wd.read_json(r / 'measures_test.json') for r in runs]
  chances = {round(entry['chance_in_gold'], 6) for m in measured
             for entry in (m['alignment'].get('by_attention') or {}).values()}
  assert len(chances) == 1, chances
  config = load.load_config(runs[0])
  config.task.tfds_dir = str(tmp_path)  # the task built afresh, apart from any cache
  task = build.get_task(config)
  n = min(card.measures.examples, len(task.splits['test']))
  gold = task.gold_alignment('test', range(n))
  ratios = []
  for i, a in enumerate(gold):
    length = int(np.sum(np.asarray(task.splits['test'][i]['source']) != PAD))
    ratios += [len(p) / length for p in a.possible if p]
  assert measured[0]['examples'] == n == 1_000
  assert chances.pop() == pytest.approx(np.mean(ratios), abs=1e-6)
  # the plain encoder-decoders have no source attention to measure
  report = EVIDENCE[card.name]
  for row in report['rows']:
    assert (row['verdict'] == 'not measured') == ('score=none' in row['variant']), row['label']


def test_a_memory_networks_hops_are_each_shown_and_one_chosen_on_validation():
  card = dataclasses.replace(
      cards.CARDS.get('dates_alignment'),
      shown=('hop1_argmax_in_gold', 'hop2_argmax_in_gold', 'hop3_argmax_in_gold',
             'chance_in_gold'),
      measures=cards.Measures(per_head='hop'))

  def hops(values):
    return {'alignment': {'by_attention': {'attention_weights': {
        'argmax_in_gold': values, 'chance_in_gold': 0.1}}}}
  record = evidence.record_of_measures(card, {'validation': hops([0.2, 0.7, 0.5]),
                                              'test': hops([0.3, 0.6, 0.9])})
  assert record['measured'] == 'attention_weights hop 2'  # best on validation
  assert record['splits']['test'] == {'value': 0.6, 'shown': {
      'hop1_argmax_in_gold': 0.3, 'hop2_argmax_in_gold': 0.6, 'hop3_argmax_in_gold': 0.9,
      'chance_in_gold': 0.1}}


def test_se_selectivity_is_read_by_depth():
  card = dataclasses.replace(
      cards.CARDS.get('dates_alignment'), metric='se_selectivity',
      shown=('block1_se_selectivity', 'block2_se_selectivity', 'block3_se_selectivity'),
      measures=cards.Measures(section='se_selectivity', splits=('test',)))
  blocks = {'stages/10/se': 0.5, 'stages/2/se': 0.2, 'stages/0/se': 0.01}  # listed out of order
  record = evidence.record_of_measures(card, {'test': {'se_selectivity': {'blocks': blocks}}})
  assert record['splits']['test'] == {'value': 0.5, 'shown': {
      'block1_se_selectivity': 0.01, 'block2_se_selectivity': 0.2, 'block3_se_selectivity': 0.5}}
  plain = evidence.record_of_measures(card, {'test': {'alignment': {}}})
  assert plain['splits']['test']['value'] is None and 'no squeeze-and-excitation' in plain['note']
  with pytest.raises(ValueError, match="no reader of measures section 'entropy'; readers: "):
    evidence.record_of_measures(dataclasses.replace(
        card, measures=cards.Measures(section='entropy')), {})


@pytest.mark.parametrize('task_id', [1, 2, 3])
def test_the_babi_hops_evidence_chance_recomputed_from_the_task(tmp_path, data_dir, task_id):
  """The committed chance level of a babi_hops card, recomputed from bAbI's raw files: per test
  question, |supporting-fact slots| / non-empty memory slots, averaged; and each run shows
  every hop."""
  from attention_zoo import build
  from attention_zoo.analysis import load
  from attention_zoo.specials import PAD
  card = cards.CARDS.get(f'babi_hops_{task_id}')
  runs = sorted((reproduce.EVIDENCE / card.name / evidence.RUNS).iterdir())
  measured = [wd.read_json(r / 'measures_test.json') for r in runs]
  chances = {round(m['alignment']['by_attention']['attention_weights']['chance_in_gold'], 6)
             for m in measured}
  assert len(chances) == 1, chances
  config = load.load_config(runs[0])
  config.task.data_dir, config.task.tfds_dir = f'{data_dir}/babi/en', str(tmp_path)
  task = build.get_task(config)
  n = min(card.measures.examples, len(task.splits['test']))
  ratios = []
  for i, a in enumerate(task.gold_alignment('test', range(n))):
    if a.possible[0]:
      story = np.asarray(task.splits['test'][i]['story'])  # [M, W]
      ratios.append(len(a.possible[0]) / np.any(story != PAD, -1).sum())
  assert measured[0]['examples'] == n
  assert chances.pop() == pytest.approx(np.mean(ratios), abs=1e-6)
  row = EVIDENCE[card.name]['rows'][0]
  assert set(row['shown']) == {'hop1_argmax_in_gold', 'hop2_argmax_in_gold',
                               'hop3_argmax_in_gold', 'chance_in_gold'}
  # the card's value per run is one of its hops
  for seed, value in row['by_seed'].items():
    run = wd.read_json(reproduce.EVIDENCE / card.name / evidence.RUNS /
                       f'task_id={task_id},size=small,seed={seed}' / 'measures_test.json')
    assert value in run['alignment']['by_attention']['attention_weights']['argmax_in_gold']


def test_the_dates_additive_length_is_where_the_plateau_rule_stopped():
  """The dates card's choice: each longer length of the additive Transformer was run because the
  one before still rose on validation (the demo's 1,500 steps, read from the dates_alignment runs,
  then 3,000), and the longest is the first at its plateau; each read from its committed curves."""
  card = cards.CARDS.get('dates')
  assert any('the longest is the one the rule stopped at' in c for c in card.choices)
  assert EVIDENCE['dates_alignment']['plateaus'][0]['rising']  # 1,500 steps: still rising
  found = EVIDENCE['dates']['plateaus']
  assert [p['label'] for p in found] == ['Transformer, additive, 3,000 steps',
                                         'Transformer, additive, 6,000 steps']
  assert [p['rising'] for p in found] == [True, False]
  runs = reproduce.EVIDENCE / 'dates' / evidence.RUNS
  for steps, p in zip((3_000, 6_000), found):
    assert len(p['seeds']) == 3 and p['missing'] == 0
    for seed in (0, 1, 2):
      curve = wd.read_jsonl(runs / f'{card.plateau[0].rpartition(",")[0]},steps={steps},'
                                   f'seed={seed}' / evidence.CURVE)
      assert [[r['step'], 100 * r['gen_exact_match']] for r in curve[-2:]] == p['seeds'][seed][
          'last_two']
      assert curve[-1]['step'] == steps


def test_a_length_chosen_on_validation_is_recomputed_from_the_curve(tmp_path):
  """A run that chose its final step on validation (eval.select_metric): the card recomputes
  the step from the committed curve, shows the curve and the step, and refuses a results.json
  that names another step."""
  values = {400: 20.0, 800: 31.0, 1200: 30.5}  # validation BLEU: highest at 800, not the last

  def results(i, run):
    curve = [[s, v + i] for s, v in values.items()]
    return {'test': {'gen_bleu': 36.0 + i, 'gen_chrf': 50.0}, 'step': 1200,
            'final_evaluation': {'averaged_steps': [400, 800], 'selected': {
                'metric': 'gen_bleu', 'mode': 'max', 'step': 800, 'curve': curve}}}

  def curve(i, run):
    return ([{'step': 0, 'split': 'validation', 'gen_bleu': 0.0}]
            + [{'step': s, 'split': 'validation', 'gen_bleu': v + i} for s, v in values.items()]
            + [{'step': 1200, 'split': 'validation', 'gen_bleu': 99.0},  # the final evaluation's
               {'step': 1200, 'split': 'test', 'gen_bleu': 36.0 + i}])

  card = _write_sweep(tmp_path / 'sweep', _transformer_card(), results, curve)
  report = _build(card, tmp_path / 'sweep', tmp_path)
  de_en = report['rows'][0]['length']
  assert de_en['seeds'] == [{'seed': 0, 'step': 800, 'last': 1200, 'averaged_steps': [400, 800],
                             'curve': [[400, 20.0], [800, 31.0], [1200, 30.5]]}]
  lines = '\n'.join(render.length_lines(report))
  assert ('400: 20.00, **800: 31.00**, 1,200: 30.50. The highest is at step 800, before the '
          'last validated step (1,200); the final evaluation averages the checkpoints of steps '
          '400–800') in lines
  assert '**Training length, on validation**' in render.section(report)
  # a results.json that names the last step instead: the committed files contradict each other
  run = tmp_path / 'evidence' / card.name / evidence.RUNS / report['rows'][0]['runs'][0]
  tampered = wd.read_json(run / wd.RESULTS)
  tampered['final_evaluation']['selected']['step'] = 1200
  wd.write_json(run / wd.RESULTS, tampered)
  with cards.CARDS.override(card.name, card), pytest.raises(derive.EvidenceError,
                                                            match='chose step 1200'):
    evidence.load(tmp_path / 'evidence')
