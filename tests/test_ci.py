"""CI never passes without the real data: .ci/run stops, and data tests fail instead of skip."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_ci_run_fails_naming_a_missing_data_folder(tmp_path):
  missing = tmp_path / 'no_data_here'
  proc = subprocess.run(['bash', str(REPO / '.ci' / 'run')], capture_output=True, text=True,
                        env=dict(os.environ, ATTENTION_ZOO_DATA=str(missing)), timeout=60)
  assert proc.returncode != 0
  assert str(missing) in proc.stderr


def test_data_tests_fail_instead_of_skipping_when_data_is_required(tmp_path):
  missing = str(tmp_path / 'no_data_here')
  test = 'tests/test_data_multi30k.py::test_multi30k_options_are_checked'
  run = lambda **env: subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-n', '0', '-p', 'no:cacheprovider', test],
      capture_output=True, text=True, cwd=REPO, timeout=120,
      env=dict(os.environ, ATTENTION_ZOO_DATA=missing, **env))
  skipped = run(ATTENTION_ZOO_REQUIRE_DATA='0')
  assert skipped.returncode == 0 and '1 skipped' in skipped.stdout
  failed = run(ATTENTION_ZOO_REQUIRE_DATA='1')
  assert failed.returncode != 0 and missing in failed.stdout
