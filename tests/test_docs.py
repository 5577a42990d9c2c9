"""The commands that BUILD.md shows are run here (tiny sizes, temp dirs), so the docs stay true."""

import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PREFIX = '.venv/bin/python -m '


def documented_commands() -> list[tuple[str, bool]]:
  """(command, by_hand) for every `.venv/bin/python -m ...` line of BUILD.md, in order."""
  out = []
  for line in (REPO / 'BUILD.md').read_text().splitlines():
    if line.startswith(PREFIX):
      command, _, comment = line.partition('#')
      out.append((command.strip(), 'by hand' in comment))
  return out


def test_build_md_commands_run(tmp_path, data_dir):
  commands = documented_commands()
  assert len(commands) >= 8
  env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / 'tfds'))
  env.setdefault('ATTENTION_ZOO_DATA', data_dir)  # the real-data commands (multi30k)
  ran = []
  for command, by_hand in commands:
    if by_hand:
      continue
    args = command[len(PREFIX):].replace('runs/', f'{tmp_path}/runs/').split()
    proc = subprocess.run([sys.executable, '-m', *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f'{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    ran.append(args[0])
  assert {'experiments.main', 'experiments.analyze', 'experiments.demo', 'experiments.sweep',
          'experiments.bench'} <= set(ran)
  demo = tmp_path / 'runs' / 'demo_tiny'
  assert (demo / 'report.md').exists() and len(list((demo / 'heatmaps').glob('*.png'))) == 5
  assert (tmp_path / 'runs' / 'dates_tiny' / 'analysis' / 'summary.txt').exists()
  assert (tmp_path / 'runs' / 'alignment' / 'scores.png').exists()  # bench alignment


def test_build_md_by_hand_commands_parse():
  """The commands BUILD.md leaves to the reader (processes started together, a shared folder on
  several hosts) are not run above, but their module accepts every flag they give and the
  config file they name exists (tests/test_distributed.py and tests/test_sweep_cluster.py run
  the same flags)."""
  by_hand = [c for c, hand in documented_commands() if hand]
  assert len(by_hand) >= 5
  for command in by_hand:
    module, *args = command[len(PREFIX):].rstrip('&').split()
    if module == 'experiments.bench':  # its sections keep their flags in their own module
      module, args = f'experiments.bench.{args[0]}', args[1:]
    code = ('import sys, importlib; from absl import flags; '
            f'importlib.import_module({module!r}); flags.FLAGS(sys.argv); '
            "print('parsed')")
    proc = subprocess.run([sys.executable, '-c', code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split()[-1:] == ['parsed'], \
        f'{command}\n{proc.stderr[-2000:]}'
    for config in [a.split('=', 1)[1].split(':')[0] for a in args if a.startswith('--config=')]:
      assert (REPO / config).exists(), command


def test_readme_starts_with_the_two_commands():
  text = (REPO / 'README.md').read_text()
  block = re.search(r'```\n(.*?)```', text, re.S).group(1)
  assert [l.split('#')[0].strip() for l in block.strip().splitlines()] == ['make demo', 'make test']
  makefile = (REPO / 'Makefile').read_text()
  assert 'experiments.demo ' in makefile and 'pytest' in makefile
  assert 'make test' in (REPO / '.ci' / 'run').read_text()


def test_readme_map_names_symbols_that_exist():
  """Every `file.py:Symbol` (and each bare `Symbol` after it in the same cell) of the README's
  map resolves in that file, so the map cannot drift from the code."""
  import importlib  # pylint: disable=import-outside-toplevel
  text = (REPO / 'README.md').read_text()
  rows = [l for l in text.splitlines() if l.startswith('|') and '.py:' in l]
  assert len(rows) >= 20
  checked = 0
  for row in rows:
    cell = row.rstrip('|').rsplit('|', 1)[-1]
    names = re.findall(r'`([^`]+)`', cell)
    path, _, first = names[0].partition(':')
    assert (REPO / path).exists(), row
    module = importlib.import_module(path[:-3].replace('/', '.'))
    for symbol in [first] + [n for n in names[1:] if '=' not in n]:
      obj = module
      for part in symbol.split('.'):
        assert hasattr(obj, part), f'{path} has no {symbol} ({row})'
        obj = getattr(obj, part)
      checked += 1
  assert checked >= 25


ENTRY_POINTS = {'main', 'sweep', 'demo', 'analyze', 'reproduce', 'bench'}


def test_experiments_holds_entry_points_only():
  """experiments/ is the entry points; the bench's sections run only through its dispatcher."""
  import importlib  # pylint: disable=import-outside-toplevel
  folder = REPO / 'experiments'
  modules = {p.stem for p in folder.glob('*.py')} - {'__init__'}
  packages = {p.name for p in folder.iterdir() if (p / '__init__.py').exists()}
  assert modules | packages == ENTRY_POINTS
  sections = importlib.import_module('experiments.bench.__main__').SECTIONS
  helpers = {'__init__', '__main__', 'train_torch'}  # train_torch: the train section's PyTorch
  assert {p.stem for p in (folder / 'bench').glob('*.py')} - helpers == set(sections)
  for path in (folder / 'bench').glob('*.py'):
    if path.stem != '__main__':
      assert '__name__ ==' not in path.read_text(), f'{path.name} runs alone: make it a section'


def test_docs_spell_each_command_one_way():
  """Every `-m experiments...` in the docs, the Makefile and the code names an entry point, and a
  bench command names a section after it (`experiments.bench data`, never `bench_data`)."""
  import importlib  # pylint: disable=import-outside-toplevel
  sections = importlib.import_module('experiments.bench.__main__').SECTIONS
  files = [REPO / name for name in ('README.md', 'BUILD.md', 'REPRODUCTIONS.md', 'Makefile')]
  files += [p for folder in ('attention_zoo', 'configs', 'experiments', 'tests')
            for p in (REPO / folder).rglob('*.py')]
  command = re.compile(r"-m\W+(experiments(?:\.\w+)+)(\W*)(\w*)")  # module, gap, next word
  found = 0
  for path in files:
    for module, gap, word in command.findall(path.read_text()):
      found += 1
      assert module.split('.')[1:] in ([e] for e in ENTRY_POINTS), f'{path.name}: -m {module}'
      if module == 'experiments.bench' and not set(gap) & set('<{'):  # not a placeholder
        assert word in sections, f'{path.name}: -m experiments.bench {word}'
  assert found >= 20
