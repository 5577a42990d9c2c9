"""Every notebook of notebooks/ runs end to end at CI's size (ATTENTION_ZOO_NOTEBOOK_SIZE=tiny)
through `make notebooks`, the command the README and BUILD.md show: jupytext renders the
percent-format source to .ipynb, nbclient executes it in a fresh kernel. Each notebook asserts
the numbers its text states (alignment accuracy above a threshold, and so on), so a notebook that
breaks, or whose model stops learning what the text says, fails here."""

import os
import pathlib
import re
import subprocess
import sys

import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / 'notebooks').glob('[0-9]*.py'))


def test_the_five_notebooks_are_there_and_state_what_they_assert():
  names = [p.stem for p in NOTEBOOKS]
  assert len(names) >= 5, names
  for path in NOTEBOOKS:
    text = path.read_text()
    assert text.startswith('# ---\n# jupyter:'), f'{path.name}: not a jupytext percent file'
    assert '**What this notebook asserts:**' in text, path.name
    assert re.search(r'^assert ', text, re.M), f'{path.name} asserts nothing'
    assert 'ROOT, SIZE, RUNS = setup()' in text, f'{path.name}: not started by notebook_setup'


def test_notebook_setup_refuses_an_unknown_size(monkeypatch, tmp_path):
  from notebooks.notebook_setup import SIZES, setup  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(tmp_path)  # setup() moves to the repository root; restored after the test
  monkeypatch.setenv('ATTENTION_ZOO_NOTEBOOK_SIZE', 'huge')
  with pytest.raises(ValueError, match='huge.*small, tiny'):
    setup()
  assert SIZES == ('small', 'tiny')


def test_documented_make_notebooks_commands_are_those_run_here():
  """README.md and BUILD.md show `make notebooks` with the variables that test_notebook_executes
  sets (the size through the environment, the notebooks and the output folder through make), on
  notebooks that exist; the full render at the reader's size is left to the reader (by hand)."""
  commands = [line.split('#')[0].split() for name in ('README.md', 'BUILD.md')
              for line in (REPO / name).read_text().splitlines()
              if re.match(r'(\w+=\S+ )*make notebooks', line)]
  assert len(commands) >= 2, commands
  for words in commands:
    at = words.index('make')
    env = dict(w.split('=', 1) for w in words[:at])
    variables = dict(w.split('=', 1) for w in words[at + 2:])
    assert set(env) <= {'ATTENTION_ZOO_NOTEBOOK_SIZE'} and set(variables) <= {
        'NOTEBOOKS', 'NOTEBOOKS_OUT'}, words
    assert env.get('ATTENTION_ZOO_NOTEBOOK_SIZE', 'small') in ('small', 'tiny'), words
    assert all((REPO / n).exists() for n in variables.get('NOTEBOOKS', '').split()), words


def test_notebook_train_replaces_a_run_of_another_config(monkeypatch, tmp_path):
  """train() reads a finished run back, and trains afresh where the folder holds a run of
  another config (which train_and_evaluate alone refuses)."""
  from configs import dates_demo  # pylint: disable=import-outside-toplevel
  from notebooks.notebook_setup import train  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  config = dates_demo.get_config('family=seq2seq,score=dot,size=tiny')
  config.train.update(steps=6, log_every=3, eval_every=0, checkpoint_every=6)
  config.eval.generate = False
  first = train(config, tmp_path / 'run')
  assert first['step'] == 6 and train(config, tmp_path / 'run') == first  # read back
  config.train.update(steps=4, checkpoint_every=4)
  assert train(config, tmp_path / 'run')['step'] == 4  # another config: trained afresh
  assert sorted(p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir()) == ['4']


@pytest.fixture(scope='session')
def shared_dirs(tmp_path_factory):
  """A dataset cache and a runs folder shared by the notebooks of one test worker."""
  return tmp_path_factory.mktemp('tfds'), tmp_path_factory.mktemp('notebook_runs')


@pytest.mark.parametrize('notebook', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(notebook, tmp_path, shared_dirs, data_dir):
  tfds_dir, runs = shared_dirs
  env = dict(os.environ, ATTENTION_ZOO_NOTEBOOK_SIZE='tiny', ATTENTION_ZOO_NOTEBOOK_RUNS=str(runs),
             TFDS_DATA_DIR=str(tfds_dir), ATTENTION_ZOO_DATA=data_dir)
  venv = pathlib.Path(sys.prefix)  # this interpreter's environment: its jupytext, jupyter-execute
  command = ['make', '-o', f'{venv}/.installed', 'notebooks', f'VENV={venv}',
             f'NOTEBOOKS=notebooks/{notebook.name}', f'NOTEBOOKS_OUT={tmp_path}']
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, f'{notebook.name}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
  nb = nbformat.read(tmp_path / f'{notebook.stem}.ipynb', as_version=4)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code and all(c.execution_count is not None for c in code), 'a cell did not run'
  outputs = [o for c in code for o in c.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  html = [o['data']['text/html'] for o in outputs if 'text/html' in o.get('data', {})]
  assert any('treescope' in h for h in html), 'no module rendered by treescope'
  last = ''.join(o.get('text', '') for o in code[-1].outputs if o.output_type == 'stream')
  assert last.strip(), 'the last cell (the check) printed nothing'
