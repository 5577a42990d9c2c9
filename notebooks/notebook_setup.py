"""What every notebook of this folder starts with (`ROOT, SIZE, RUNS = setup()`):

- the repository root as the working directory and on sys.path, so that `configs` imports and
  `runs/` paths mean what they mean in BUILD.md, wherever the kernel was started (`pip install
  -e .` keeps the package in the repository, which is how the root is found);
- the size from ATTENTION_ZOO_NOTEBOOK_SIZE: `small` (the reader's, the default) or `tiny`
  (CI's, tests/test_notebooks.py);
- the runs folder, ATTENTION_ZOO_NOTEBOOK_RUNS (default runs/notebooks) / size;
- treescope as the renderer of modules and arrays (`nnx.display`, a cell's last value).
"""

from __future__ import annotations

import os
import pathlib
import sys

import treescope

import attention_zoo

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
