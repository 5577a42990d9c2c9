"""What every notebook of this folder starts with (`ROOT, SIZE, RUNS = setup()`), and how it
trains (`train(config, workdir)`).

setup():

- the repository root as the working directory and on sys.path, so that `configs` imports and
  `runs/` paths mean what they mean in BUILD.md, wherever the kernel was started (`pip install
  -e .` keeps the package in the repository, which is how the root is found);
- the size from ATTENTION_ZOO_NOTEBOOK_SIZE: `small` (the reader's, the default) or `tiny`
  (CI's, tests/test_notebooks.py);
- the runs folder, ATTENTION_ZOO_NOTEBOOK_RUNS (default runs/notebooks) / size;
- treescope as the renderer of modules and arrays (`nnx.display`, a cell's last value).

train(config, workdir): the loop's train_and_evaluate, which reads a finished run of the same
config back instead of training it again; a folder that holds a run of another config (trained
before the zoo's configs gained a field, say) is trained afresh, the differing keys printed.
"""

from __future__ import annotations

import os
import pathlib
import sys

import ml_collections
import treescope

import attention_zoo
from attention_zoo.train import loop
from attention_zoo.train import workdir as wd

SIZES = ('small', 'tiny')


def setup() -> tuple[pathlib.Path, str, pathlib.Path]:
  """-> (repository root, size, runs folder of that size); changes the working directory."""
  root = pathlib.Path(attention_zoo.__file__).resolve().parents[1]
  if not (root / 'configs').is_dir():
    raise FileNotFoundError(f'{root} has no configs/: the notebooks need the zoo installed from '
                            'its repository (pip install -e .)')
  os.chdir(root)
  if str(root) not in sys.path:
    sys.path.insert(0, str(root))
  size = os.environ.get('ATTENTION_ZOO_NOTEBOOK_SIZE', 'small')
  if size not in SIZES:
    raise ValueError(f'ATTENTION_ZOO_NOTEBOOK_SIZE={size!r}; valid sizes: {", ".join(SIZES)}')
  runs = pathlib.Path(os.environ.get('ATTENTION_ZOO_NOTEBOOK_RUNS', 'runs/notebooks')) / size
  treescope.basic_interactive_setup(autovisualize_arrays=True)
  return root, size, runs


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """-> results.json of the run of `config` in `workdir` (trained, or read back when finished)."""
  try:
    return loop.train_and_evaluate(config, workdir)
  except wd.ConfigMismatchError as e:
    print(f'{e}\n-> {workdir}: training afresh')
    return loop.train_and_evaluate(config, workdir, fresh=True)
