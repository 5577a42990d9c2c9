"""Shared fixtures. `data_dir`: the real-data folder (../shared/data, see its README)."""

import os

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT = os.path.join(os.path.dirname(_REPO), 'shared', 'data')


@pytest.fixture(scope='session')
def data_dir() -> str:
  """$ATTENTION_ZOO_DATA, else ../shared/data next to the repo root; skips when neither exists."""
  path = os.environ.get('ATTENTION_ZOO_DATA') or _DEFAULT
  if not os.path.isdir(path):
    pytest.skip(f'real data not found at {path}: set ATTENTION_ZOO_DATA to the shared data folder')
  return path
