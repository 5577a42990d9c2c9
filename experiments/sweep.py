r"""A sweep: every run of a config's get_sweep(arg), then the report with error bars.

  python -m experiments.sweep --config=configs/dates_seq2seq.py:size=small \
    --workdir=runs/dates_sweep --parallel=2

Writes DIR/sweep.json, DIR/runs/<name>/ (one workdir each), DIR/report.md, DIR/report.json and
DIR/plots/. Re-running the command skips finished runs and resumes interrupted ones. The report
compares every variant with --baseline (default: the first variant of the sweep):
  python -m experiments.sweep --config=configs/dates_demo.py --workdir=runs/demo --report_only \
    --baseline=family=seq2seq,score=none

Several sweep processes may share one DIR, on one host or many (a shared file system): each run
is claimed (runs/<name>/claim.json), so never run twice, and the run of a process that died is
taken over and resumed from its checkpoint (--claim_timeout). On a SLURM cluster, one array task
per run (writes DIR/sweep.sbatch; --submit runs sbatch on it):
  python -m experiments.sweep --config=configs/dates_demo.py --workdir=runs/demo \
    --launcher=slurm --partition=gpu --time=01:00:00 --cpus_per_task=4 --gpus=1 --submit
Array task i runs `--run_index=i`; --dry_run lists the runs (index, name, state) and stops.
With --processes_per_run=N, array task i is N SLURM tasks (srun), which run run i together as one
multi-process run (jax.distributed). By hand, the processes of run i each start
  python -m experiments.sweep --config=... --workdir=DIR --run_index=i \
    --coordinator_address=host0:12345 --num_processes=2 --process_id=K
and pass these flags on to their experiments.main; process 0 claims the run.

Every run is trained by `python -m experiments.main`. Runs that differ only in their seed train
as one program over the seeds, in one process (`experiments.main --seeds=...`; --seed_map=map or
vmap, default: the platform's), each seed in its own runs/<name>/ folder;
--seed_map=processes gives one process per run (attention_zoo.train.seeds).
"""

import pathlib

from absl import app, flags

from attention_zoo import sweeps
from attention_zoo.train import distributed_settings
from attention_zoo.train import workdir as wd

SEED_MAPS = ('map', 'vmap', 'processes')  # attention_zoo.train.seeds.CHOICES (which loads JAX)
ROOT = pathlib.Path(__file__).resolve().parents[1]  # holds experiments/ and configs/
REPORT_LOCK = 'report.lock'  # one sweep process at a time writes the report

_CONFIG = flags.DEFINE_string('config', None, 'configs/<file>.py[:arg] with get_sweep(arg)')
_WORKDIR = flags.DEFINE_string('workdir', None, 'the sweep directory (created)')
_LAUNCHER = flags.DEFINE_enum('launcher', 'local', sorted(sweeps.LAUNCHERS),
                              'where the runs run: here, or one SLURM array task each')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'local: runs at a time, each in its own process')
_PIN = flags.DEFINE_bool('pin_cpus', True, 'local: give each of the parallel runs its own CPUs '
                          '(XLA single-threaded when that is one CPU each)')
_RUN_INDEX = flags.DEFINE_integer('run_index', None, 'local: run only run i of the listing (a '
                                  'cluster array task); no report', lower_bound=0)
_CLAIM_TIMEOUT = flags.DEFINE_float(
    'claim_timeout', sweeps.claims.DEFAULT_TIMEOUT_S, 'seconds without a heartbeat after which '
    'the claim of a run is taken over (a dead process on this host: at once)', lower_bound=1)
_PARTITION = flags.DEFINE_string('partition', None, 'slurm: partition (default: the cluster\'s)')
_TIME = flags.DEFINE_string('time', None, 'slurm: time limit of each run, e.g. 04:00:00')
_CPUS = flags.DEFINE_integer('cpus_per_task', None, 'slurm: CPUs of each run', lower_bound=1)
_GPUS = flags.DEFINE_integer('gpus', 0, 'slurm: GPUs of each run', lower_bound=0)
_SUBMIT = flags.DEFINE_bool('submit', False, 'slurm: submit the script with sbatch')
_PROCESSES_PER_RUN = flags.DEFINE_integer(
    'processes_per_run', 1, 'slurm: each run as this many processes (srun, jax.distributed: '
    'one global mesh over their devices)', lower_bound=1)
# Passed on to every run's experiments.main (with --run_index: this process's part of the run)
_DISTRIBUTED = distributed_settings.define_flags()
_SEED_MAP = flags.DEFINE_enum(
    'seed_map', None, list(SEED_MAPS), 'local: how runs that differ only in their seed train: '
    'as one program in one process, mapped over the seeds by map or vmap (default: the '
    'platform\'s), or one process per run (processes)')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'list the runs (index, name, state) and stop')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'only (re)write the report, of the runs '
                                 'finished so far')
_BASELINE = flags.DEFINE_string('baseline', None, 'the variant the report compares the others '
                                'with (paired t-test on shared seeds), e.g. "score=dot"; '
                                'default: the first variant of the sweep')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _DRY_RUN.value:
    print('\n'.join(sweeps.describe(_CONFIG.value, _WORKDIR.value, _RUN_INDEX.value)))
    return
  status = {}
  launcher = sweeps.LAUNCHERS[_LAUNCHER.value]
  if not _REPORT_ONLY.value:
    multihost, settings = _DISTRIBUTED()
    options = sweeps.Options(
        root=ROOT, parallel=_PARALLEL.value, pin=_PIN.value, run_index=_RUN_INDEX.value,
        claim_timeout_s=_CLAIM_TIMEOUT.value, partition=_PARTITION.value, time=_TIME.value,
        cpus_per_task=_CPUS.value, gpus=_GPUS.value, submit=_SUBMIT.value,
        processes_per_run=_PROCESSES_PER_RUN.value, seed_map=_SEED_MAP.value,
        multihost=settings if multihost else None)
    status = launcher.launch(_CONFIG.value, pathlib.Path(_WORKDIR.value), options)
  if _REPORT_ONLY.value or (launcher.runs_here and _RUN_INDEX.value is None):
    # Imported here: it loads JAX, SciPy and matplotlib (seconds), which --dry_run, a cluster
    # submission and an array task's run do without.
    from attention_zoo.analysis import report  # pylint: disable=import-outside-toplevel
    with sweeps.claims.lock(pathlib.Path(_WORKDIR.value) / REPORT_LOCK, _CLAIM_TIMEOUT.value):
      result = report.write(_WORKDIR.value, title=f'Sweep {_CONFIG.value}',
                            baseline=_BASELINE.value)
    print(f'report: {_WORKDIR.value}/{wd.REPORT_MD} ({len(result["variants"])} variants)')
  failed = [name for name, s in status.items() if s == 'failed']
  if failed:
    raise SystemExit(f'{len(failed)} run(s) failed: {", ".join(failed)}')


if __name__ == '__main__':
  app.run(main)
