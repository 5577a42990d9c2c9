"""Sweeps: a config module's get_sweep(arg) expanded into runs, each group of runs in its own
process.

  status = run_sweep('configs/dates_demo.py:size=tiny', 'runs/demo', parallel=2, root=REPO)

The sweep folder (its file names: attention_zoo.train.workdir): sweep.json, runs/<name>/ (one
workdir per run; error.log: the output tail of a failed run), then the report's files.
Re-running a sweep skips runs whose results.json exists and resumes the others from their
checkpoints (experiments.main resumes when the config is unchanged).

Several sweep processes, on one host or many, may share one sweep folder: a run is run under its
claim (runs/<name>/claim.json), so never twice at once, and a dead process's run is taken over.

  plan.py       the sweep as data: its runs (expand), their names, variants and configs, sweep.json
  groups.py     which runs train together (the seeds of one variant) and the child's command line
  sweep.py      the Runner: claims, child processes, statuses (run_sweep)
  schedule.py   which group starts next (Scheduler)
  processes.py  a child's command line and environment, CPU pinning, the shared compilation cache
  claims.py     claiming a run atomically; heartbeats; taking over the claim of a dead process
  launchers.py  where the runs run (LAUNCHERS): here, or as a SLURM array job
"""

from attention_zoo.sweeps.processes import (  # noqa: F401
    SINGLE_THREAD_XLA, command, cpu_lanes, launch, run_env, share_run_cache)
from attention_zoo.sweeps.schedule import Scheduler  # noqa: F401
from attention_zoo.sweeps.plan import (  # noqa: F401
    CONFIG_ARG, Run, expand, load_config_module, run_config, run_name, select, variant_name,
    write_plan)
from attention_zoo.sweeps.sweep import Runner, describe, run_sweep  # noqa: F401
from attention_zoo.sweeps import claims, launchers  # noqa: F401
from attention_zoo.sweeps.launchers import LAUNCHERS, Options  # noqa: F401
