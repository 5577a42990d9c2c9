"""Shared fixtures: `data_dir` (the real-data folder), `tiny_models` (see tests/fixtures.py)."""

import os

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT = os.path.join(os.path.dirname(_REPO), 'shared', 'data')


@pytest.fixture(scope='session')
def data_dir() -> str:
  """$ATTENTION_ZOO_DATA, else the real-data folder beside the repo root. When neither exists the
  test skips, or fails with ATTENTION_ZOO_REQUIRE_DATA=1 (CI: real-data tests never skip there)."""
  path = os.environ.get('ATTENTION_ZOO_DATA') or _DEFAULT
  if not os.path.isdir(path):
    message = f'real data not found at {path}: set ATTENTION_ZOO_DATA to the real-data folder'
    if os.environ.get('ATTENTION_ZOO_REQUIRE_DATA') == '1':
      pytest.fail(message + ' (ATTENTION_ZOO_REQUIRE_DATA=1)')
    pytest.skip(message)
  return path


@pytest.fixture
def tiny_models():
  """The tiny models of tests/fixtures.py in the model registry for one test (removed after)."""
  from tests import fixtures  # pylint: disable=import-outside-toplevel
  with fixtures.tiny_models_registered():
    yield
