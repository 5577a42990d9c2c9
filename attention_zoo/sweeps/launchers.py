"""Where a sweep's runs run: LAUNCHERS[name].launch(spec, sweep_dir, options).

  local   here, `parallel` at a time (run_sweep); other sweep processes may share the folder.
  slurm   one SLURM array task per run: writes DIR/sweep.sbatch (`sbatch --array=0-(N-1)`),
          and submits it with `submit`. Array task i runs run i of sweep.json in the shared
          folder, by `python -m experiments.sweep --run_index=i`, under the run's claim.

The cluster's nodes must see the sweep folder and the repository at the same paths (a shared
file system), and run the Python of the submitting process.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
import subprocess
import sys
from typing import Callable, Protocol

from attention_zoo.sweeps import claims
from attention_zoo.sweeps.plan import write_plan
from attention_zoo.sweeps.sweep import run_sweep
from attention_zoo.train.distributed_settings import Settings

SBATCH = 'sweep.sbatch'
SLURM_LOGS = 'slurm'  # DIR/slurm/<job>_<index>.out: each array task's output


@dataclasses.dataclass(frozen=True)
class Options:
  """What a launcher may use (each reads its own fields)."""
  root: pathlib.Path | None = None  # holds experiments/ and configs/
  parallel: int = 1  # local: runs at a time
  pin: bool = True  # local: each parallel run on its own CPUs
  run_index: int | None = None  # local: run this run of the listing alone
  claim_timeout_s: float = claims.DEFAULT_TIMEOUT_S
  seed_map: str | None = None  # local: how seeds of a variant train (attention_zoo.train.seeds)
  multihost: Settings | None = None  # local: run_index as one process of a multi-process run
  partition: str | None = None  # slurm: --partition
  time: str | None = None  # slurm: --time, e.g. '04:00:00'
  cpus_per_task: int | None = None  # slurm: --cpus-per-task
  gpus: int = 0  # slurm: --gpus per array task
  processes_per_run: int = 1  # slurm: > 1: each run is that many processes (srun, jax.distributed)
  submit: bool = False  # slurm: run sbatch on the script
  log: Callable[[str], None] = print


class Launcher(Protocol):
  runs_here: bool  # whether launch() returns with the runs finished (then the report follows)

  def launch(self, spec: str, sweep_dir: pathlib.Path, options: Options) -> dict[str, str]:
    """Starts the sweep's runs -> {name: status} of those it ran ({} when it only submitted)."""


class Local:
  runs_here = True

  def launch(self, spec: str, sweep_dir: pathlib.Path, options: Options) -> dict[str, str]:
    return run_sweep(spec, sweep_dir, parallel=options.parallel, pin=options.pin,
                     root=options.root, run_index=options.run_index,
                     claim_timeout_s=options.claim_timeout_s,
                     seed_map=options.seed_map, multihost=options.multihost,
                     log=options.log)


class Slurm:
  runs_here = False

  def launch(self, spec: str, sweep_dir: pathlib.Path, options: Options) -> dict[str, str]:
    if options.run_index is not None:
      raise ValueError('--run_index runs one run here (--launcher=local); the slurm launcher '
                       'submits every run')
    path, _, arg = spec.partition(':')
    spec = os.path.abspath(path) + (f':{arg}' if arg else '')  # the nodes do not share our cwd
    sweep_dir = pathlib.Path(sweep_dir).resolve()
    runs = write_plan(spec, sweep_dir)
    (sweep_dir / SLURM_LOGS).mkdir(exist_ok=True)
    script = sweep_dir / SBATCH
    script.write_text(sbatch_script(spec, sweep_dir, len(runs), options))
    options.log(f'wrote {script}: {len(runs)} array tasks, one per run')
    if options.submit:
      proc = subprocess.run(['sbatch', '--parsable', str(script)], capture_output=True, text=True)
      if proc.returncode != 0:
        raise RuntimeError(f'sbatch {script} failed ({proc.returncode}): {proc.stderr.strip()}')
      options.log(f'submitted job {proc.stdout.strip()}; its output: {sweep_dir / SLURM_LOGS}/')
    else:
      options.log(f'submit it with: sbatch {script}')
    options.log('the report, of what has finished: python -m experiments.sweep '
                f'--config={spec} --workdir={sweep_dir} --report_only')
    return {}


def sbatch_script(spec: str, sweep_dir: pathlib.Path, num_runs: int, options: Options) -> str:
  """The SLURM array job of a sweep: task i runs run i (flags given to sbatch after the script's
  name reach every task's experiments.sweep, e.g. `sbatch sweep.sbatch --claim_timeout=600`).
  With processes_per_run N > 1, array task i is N SLURM tasks (`--ntasks=N`), started by `srun`:
  each runs experiments.sweep --run_index=i --multihost, and so one process of run i, whose
  process 0 claims it (run_sweep's `multihost`)."""
  if num_runs < 1:
    raise ValueError(f'the sweep {spec} has no runs')
  root = pathlib.Path(options.root or os.getcwd()).resolve()
  directives = [f'--job-name={sweep_dir.name}', f'--array=0-{num_runs - 1}',
                f'--output={sweep_dir / SLURM_LOGS}/%A_%a.out']
  multi = options.processes_per_run > 1  # each run: `srun` starts its processes
  directives += [f'--{key}={value}' for key, value in (
      ('partition', options.partition), ('time', options.time),
      ('ntasks', options.processes_per_run if multi else None),
      ('cpus-per-task', options.cpus_per_task), ('gpus', options.gpus or None))
                 if value is not None]
  spaced = [d for d in directives if any(c.isspace() for c in d)]
  if spaced:
    raise ValueError(f'#SBATCH directives cannot hold spaces: {spaced}')
  command = [sys.executable, '-m', 'experiments.sweep', f'--config={spec}',
             f'--workdir={sweep_dir}', f'--claim_timeout={options.claim_timeout_s:g}']
  if multi:  # one sweep process per task; jax reads its process id from $SLURM_PROCID
    command = ['srun', *command, '--multihost']
  return '\n'.join([
      '#!/bin/bash',
      f'# The {num_runs} runs of the sweep {spec}: array task i runs run i of',
      f'# {sweep_dir}/sweep.json. Written by experiments.sweep --launcher=slurm.',
      *[f'#SBATCH {d}' for d in directives],
      'set -euo pipefail',
      f'cd {shlex.quote(str(root))}',
      ' '.join(shlex.quote(c) for c in command) + ' --run_index="$SLURM_ARRAY_TASK_ID" "$@"',
      ''])


LAUNCHERS: dict[str, Launcher] = {'local': Local(), 'slurm': Slurm()}


def get(name: str) -> Launcher:
  if name not in LAUNCHERS:
    raise ValueError(f'unknown launcher {name!r}; known: {sorted(LAUNCHERS)}')
  return LAUNCHERS[name]
