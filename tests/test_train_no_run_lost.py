"""No run lost: a workdir holding results of another config is refused (checkpoints or not) with
its files unchanged; --fresh overwrites and says what it deletes; leftovers of the same config
restart; a bad value fails before the workdir or the dataset exists; a failed start leaves no
workdir it created."""

import hashlib
import logging
import pathlib
import shutil
import subprocess
import sys

import pytest

from attention_zoo.train import workdir as wd
from attention_zoo.train.loop import train_and_evaluate
from attention_zoo.train.workdir import ConfigMismatchError
from tests import fixtures as h

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures('tiny_models')


def _config(**train):
  return h.tiny_config('_tiny_seq2seq', **({'steps': 4, 'checkpoint_every': 2} | train))


def _checksums(folder: pathlib.Path) -> dict[str, str]:
  """{relative path: sha256} of every file under `folder`."""
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished run of _config() (results, metrics, samples, events, checkpoints)."""
  with h.tiny_models_registered():
    workdir = tmp_path_factory.mktemp('finished') / 'run'
    train_and_evaluate(_config(), workdir, task=h.reverse_task())
  return workdir


def _copy(finished, tmp_path, drop=()):
  """A copy of the finished run without the files `drop` names (checkpoints/: all pruned)."""
  workdir = tmp_path / 'run'
  shutil.copytree(finished, workdir)
  for name in drop:
    target = workdir / name
    if target.is_dir():
      shutil.rmtree(target)
    else:
      for path in workdir.glob(name):
        path.unlink()
  return workdir


# What is left of another config's run: every case but the last is refused.
LEFT = {
    'finished, no checkpoint': [wd.CHECKPOINTS],
    'finished, checkpoints': [],
    'metrics only': [wd.CHECKPOINTS, wd.RESULTS, wd.SAMPLES, 'events.out.tfevents*'],
    'events only': [wd.CHECKPOINTS, wd.RESULTS, wd.SAMPLES, wd.METRICS],
    'samples only': [wd.CHECKPOINTS, wd.RESULTS, wd.METRICS, 'events.out.tfevents*'],
    'results, no config.json': [wd.CHECKPOINTS, wd.CONFIG],
}


@pytest.mark.parametrize('case', sorted(LEFT))
def test_results_of_another_config_are_refused_and_unchanged(finished, tmp_path, case):
  workdir = _copy(finished, tmp_path, LEFT[case])
  before = _checksums(workdir)
  assert wd.RESULTS in before or wd.METRICS in before or any('events' in k for k in before) \
      or wd.SAMPLES in before
  other = _config(lr=0.5)  # another config
  match = 'no config.json' if 'no config.json' in case else r'train\.lr: 0\.003 -> 0\.5'
  with pytest.raises(ConfigMismatchError, match=match):
    train_and_evaluate(other, workdir, task=h.reverse_task())
  assert _checksums(workdir) == before  # every file kept, byte for byte; none added


def test_only_a_config_json_of_another_config_is_overwritten(finished, tmp_path):
  workdir = _copy(finished, tmp_path, LEFT['metrics only'] + [wd.METRICS])
  assert sorted(_checksums(workdir)) == [wd.CONFIG]  # no result: nothing to lose
  results = train_and_evaluate(_config(lr=0.5), workdir, task=h.reverse_task())
  assert results['step'] == 4 and '"lr": 0.5' in (workdir / wd.CONFIG).read_text()


def test_fresh_overwrites_and_says_what_it_deletes(finished, tmp_path, caplog):
  workdir = _copy(finished, tmp_path, [wd.CHECKPOINTS])
  with caplog.at_level(logging.WARNING):
    results = train_and_evaluate(_config(lr=0.5), workdir, task=h.reverse_task(), fresh=True)
  assert results['step'] == 4
  deleted = next(r.getMessage() for r in caplog.records if 'deleting' in r.getMessage())
  for name in (wd.CONFIG, wd.RESULTS, wd.METRICS, wd.SAMPLES, 'events.out.tfevents'):
    assert name in deleted, name
  assert 'fresh=True (--fresh)' in deleted
  assert '"lr": 0.5' in (workdir / wd.CONFIG).read_text()


def test_leftovers_of_the_same_config_without_checkpoint_restart_from_step_0(tmp_path):
  config = _config(checkpoint_every=3, eval_every=0, log_every=1)
  assert train_and_evaluate(config, tmp_path, task=h.reverse_task(), stop_after_step=2) == {}
  assert not wd.has_checkpoint(tmp_path) and (tmp_path / wd.METRICS).exists()
  results = train_and_evaluate(config, tmp_path, task=h.reverse_task())  # killed before step 3
  assert results['step'] == 4
  steps = [r['step'] for r in wd.read_jsonl(tmp_path / wd.METRICS) if r['split'] == 'train']
  assert steps == [1, 2, 3, 4]  # redone from step 0, no row twice


def test_finished_run_of_the_same_config_without_checkpoints_is_kept(finished, tmp_path):
  workdir = _copy(finished, tmp_path, [wd.CHECKPOINTS])
  before = _checksums(workdir)
  results = train_and_evaluate(_config(), workdir, task=h.reverse_task())
  assert results == wd.read_json(workdir / wd.RESULTS)
  assert _checksums(workdir) == before  # not trained again


# ---- a failed start ------------------------------------------------------------------------------
def _babi_without_data(tmp_path):
  config = h.tiny_config('_tiny_memory', model={'hidden': 8})
  with config.unlocked():
    config.task = {'name': 'babi', 'data_dir': str(tmp_path / 'no_babi_here'),
                   'tfds_dir': str(tmp_path / 'tfds')}
  return config


def test_a_task_that_fails_to_build_leaves_no_workdir(tmp_path):
  workdir = tmp_path / 'runs' / 'babi'
  with pytest.raises(Exception, match='no_babi_here'):
    train_and_evaluate(_babi_without_data(tmp_path), workdir)
  assert not (tmp_path / 'runs').exists()  # not even the parent it would have made


def test_a_model_that_fails_to_build_removes_only_the_workdir_it_made(tmp_path):
  config = h.tiny_config('_tiny_classifier', model={'hidden': 8, 'no_such_option': 1})
  made, existing = tmp_path / 'made', tmp_path / 'existing'
  with pytest.raises(Exception, match='no_such_option'):
    train_and_evaluate(config, made, task=h.blobs_task())
  assert not made.exists()
  existing.mkdir()
  (existing / 'notes.txt').write_text('mine')
  with pytest.raises(Exception, match='no_such_option'):
    train_and_evaluate(config, existing, task=h.blobs_task())
  assert (existing / 'notes.txt').read_text() == 'mine'  # a workdir that existed is kept


def test_main_refuses_a_bad_model_size_before_the_workdir_and_the_dataset(tmp_path):
  tfds_dir, workdir = tmp_path / 'tfds', tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.main',
       '--config=configs/dates_demo.py:family=seq2seq,score=dot,size=tiny',
       f'--workdir={workdir}', '--config.model.hidden=-4', f'--config.task.tfds_dir={tfds_dir}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'config value out of range: model.hidden=-4 must be an integer >= 1' in proc.stderr
  assert 'TypeError' not in proc.stderr
  assert not workdir.exists() and not tfds_dir.exists()
