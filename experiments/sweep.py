r"""A sweep: every run of a config's get_sweep(arg), then the report with error bars.

  python -m experiments.sweep --config=configs/dates_seq2seq.py:size=small \
    --workdir=runs/dates_sweep --parallel=2

Writes DIR/sweep.json, DIR/runs/<name>/ (one workdir each), DIR/report.md, DIR/report.json and
DIR/plots/. Re-running the command skips finished runs and resumes interrupted ones. The report
compares every variant with --baseline (default: the first variant of the sweep):
  python -m experiments.sweep --config=configs/dates_demo.py --workdir=runs/demo --report_only \
    --baseline=family=seq2seq,score=none
"""

import pathlib

from absl import app, flags

from attention_zoo import sweeps
from attention_zoo.analysis import report
from attention_zoo.train import workdir as wd

ROOT = pathlib.Path(__file__).resolve().parents[1]  # holds experiments/ and configs/

_CONFIG = flags.DEFINE_string('config', None, 'configs/<file>.py[:arg] with get_sweep(arg)')
_WORKDIR = flags.DEFINE_string('workdir', None, 'the sweep directory (created)')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'runs at a time, each in its own process')
_PIN = flags.DEFINE_bool('pin_cpus', True, 'give each of the parallel runs its own CPUs '
                          '(XLA single-threaded when that is one CPU each)')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'only (re)write the report')
_BASELINE = flags.DEFINE_string('baseline', None, 'the variant the report compares the others '
                                'with (paired t-test on shared seeds), e.g. "score=dot"; '
                                'default: the first variant of the sweep')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  status = {}
  if not _REPORT_ONLY.value:
    status = sweeps.run_sweep(_CONFIG.value, _WORKDIR.value, parallel=_PARALLEL.value,
                              pin=_PIN.value, root=ROOT)
  result = report.write(_WORKDIR.value, title=f'Sweep {_CONFIG.value}', baseline=_BASELINE.value)
  print(f'report: {_WORKDIR.value}/{wd.REPORT_MD} ({len(result["variants"])} variants)')
  failed = [name for name, s in status.items() if s == 'failed']
  if failed:
    raise SystemExit(f'{len(failed)} run(s) failed: {", ".join(failed)}')


if __name__ == '__main__':
  app.run(main)
