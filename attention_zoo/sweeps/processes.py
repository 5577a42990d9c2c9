"""One run of a sweep as a child process: its command line, its environment, its CPUs.

With N > 1 runs at a time, each worker has its own share of the CPUs (one each on a 2-core
machine, with XLA single-threaded), so that parallel runs do not preempt each other's XLA
threads. Every run reads and writes one persistent compilation cache.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any, Callable, Sequence

SINGLE_THREAD_XLA = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
DEFAULT_CACHE = pathlib.Path.home() / '.cache' / 'attention_zoo' / 'jax'  # = the Makefile's


def _flag_value(value: Any) -> str:
  return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def command(config: str, overrides: dict[str, Any],
            run_dirs: pathlib.Path | Sequence[pathlib.Path],
            flags: Sequence[str] = ()) -> list[str]:
  """The experiments.main command line of a run (or of several seeds, one workdir each, with
  --seeds in `flags`): `config` is 'configs/x.py[:arg]'; `flags` passed on as they are (e.g. a
  multi-process run's, distributed.Settings.flags())."""
  if isinstance(run_dirs, (str, pathlib.Path)):
    run_dirs = [run_dirs]
  return ([sys.executable, '-m', 'experiments.main', f'--config={config}']
          + [f'--workdir={d}' for d in run_dirs]
          + [f'--config.{k}={_flag_value(v)}' for k, v in overrides.items()] + list(flags))


def cpu_lanes(parallel: int) -> list[set[int]] | None:
  """The CPUs of each of `parallel` workers (disjoint, equal shares), or None: no pinning."""
  if parallel < 2 or not hasattr(os, 'sched_getaffinity'):
    return None
  cpus = sorted(os.sched_getaffinity(0))
  share = len(cpus) // parallel
  if share < 1:
    return None
  return [set(cpus[i * share:(i + 1) * share]) for i in range(parallel)]


def run_env(cpus: set[int] | None, root: str | os.PathLike | None = None) -> dict[str, str]:
  """The environment of a run: a persistent compilation cache shared by the sweep's runs, which
  keeps every program (even the eager ops of a model's initialization, which each process would
  otherwise compile again); XLA single-threaded on a one-CPU lane; `root`
  (the folder that holds experiments/ and configs/) first on PYTHONPATH, so that a run starts
  from any working directory."""
  env = dict(os.environ)
  env.setdefault('JAX_COMPILATION_CACHE_DIR', str(DEFAULT_CACHE))
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  if cpus is not None and len(cpus) == 1:
    env['XLA_FLAGS'] = ' '.join(filter(None, [env.get('XLA_FLAGS'), SINGLE_THREAD_XLA]))
  if root is not None:
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [os.fspath(root), env.get('PYTHONPATH')]))
  return env


def share_run_cache() -> None:
  """This process reads and writes the compilation cache of the runs (analysis after a sweep
  then finds the programs of model initialization and evaluation already compiled)."""
  import jax  # pylint: disable=import-outside-toplevel
  env = run_env(None)
  jax.config.update('jax_compilation_cache_dir', env['JAX_COMPILATION_CACHE_DIR'])
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    float(env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))


_LIBC = ctypes.CDLL(None) if sys.platform.startswith('linux') else None


def _die_with_parent(parent: int) -> None:
  """In a child between fork and exec (Linux): SIGKILL when the thread that started it ends, so
  that a sweep process killed with -9 leaves no run behind to race the process taking it over."""
  if _LIBC is not None:
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl
      os._exit(1)


def launch(cmd: list[str], cpus: set[int] | None, root: str | os.PathLike | None = None, *,
           stop: Callable[[], bool] | None = None) -> subprocess.CompletedProcess:
  """Runs `cmd` on `cpus` (a child inherits the affinity of the thread that starts it), with
  run_env(cpus, root). `stop`: polled every second; when true, the child is killed (returncode
  -9). The child dies with this process."""
  if cpus is not None:
    os.sched_setaffinity(0, cpus)  # this worker thread, hence its children
  with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=run_env(cpus, root),
                        preexec_fn=functools.partial(_die_with_parent, os.getpid())) as proc:
    while True:
      try:
        out, err = proc.communicate(timeout=None if stop is None else 1.0)
        break
      except subprocess.TimeoutExpired:
        if stop():
          proc.kill()
  return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
