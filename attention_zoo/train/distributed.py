"""One run over several processes (one per host, or several on one machine): jax.distributed.

Every process runs the same program on its own devices; together they form one global mesh
(batching.make_mesh), each loads its slice of every global train batch, and they meet in the
collectives of each jitted step. Where each setting comes from (the first one set wins):

  coordinator_address  the flag, $JAX_COORDINATOR_ADDRESS, the cluster  host:port of process 0
  num_processes        the flag, $JAX_NUM_PROCESSES, the cluster
  process_id           the flag, $JAX_PROCESS_ID, the cluster             0 .. num_processes - 1

"The cluster" is jax's own auto-detection (SLURM, Open MPI, Cloud TPU, Kubernetes), so the same
command runs on a laptop, under `srun` and on a TPU pod. On CPU, collectives between processes run
over gloo (jax_cpu_collectives_implementation: jax's default since 0.5.1, set here when unset),
and the persistent compilation cache is turned off (see `initialize`).

A lost process never leaves the others hanging:
  - killed, or its host gone: the coordination service (in process 0) misses its heartbeats for
    `heartbeat_timeout_s` and aborts every other process (exit code 134) with "The following
    tasks are unhealthy (stopped sending heartbeats): <process id>"; when the lost one is process
    0, the others abort with "the leader task was preempted/died". A process that meanwhile fails
    in a collective with the lost one waits for that verdict (`fail_fast`).
  - a Python error in one process: `fail_fast` prints it, naming the process, and ends that
    process at once (exit code 1) instead of waiting in jax's shutdown barrier, so the others
    learn of it as above.
A run that ends normally meets at a barrier first (`finish`), so no process waits out the
shutdown timeout for a slower one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from typing import Iterator

import jax
from absl import logging
from jax.experimental import multihost_utils

from attention_zoo.train.distributed_settings import (  # noqa: F401 (re-exported)
    ENV, Settings, define_flags, from_environment, process_id_before_start)

_active: Settings | None = None  # of the initialized run (fail_fast reads its heartbeat timeout)


def initialize(settings: Settings) -> None:
  """jax.distributed.initialize from `settings`, the environment and the cluster; before any other
  JAX call. ValueError, naming the flags and variables, when nothing gives a setting."""
  s = from_environment(settings)
  if s.num_processes is not None and s.process_id is not None \
     and not 0 <= s.process_id < s.num_processes:
    raise ValueError(f'process_id={s.process_id} must be in 0 .. num_processes - 1 = '
                     f'{s.num_processes - 1}')
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  global _active  # pylint: disable=global-statement
  _active = s
  try:
    jax.distributed.initialize(
        coordinator_address=s.coordinator_address, num_processes=s.num_processes,
        process_id=s.process_id, initialization_timeout=s.initialization_timeout_s,
        heartbeat_timeout_seconds=s.heartbeat_timeout_s,
        shutdown_timeout_seconds=s.shutdown_timeout_s)
  except ValueError as e:  # nothing set it and no cluster was detected
    raise ValueError(
        f'jax.distributed.initialize: {e} Outside a cluster that jax detects (SLURM, Open MPI, '
        'Cloud TPU), give ' + ', '.join(f'--{k} (or ${v})' for k, v in ENV.items())) from e
  logging.info('process %d of %d (coordinator %s): %d local devices of %d', jax.process_index(),
               jax.process_count(), s.coordinator_address or 'from the cluster',
               jax.local_device_count(), jax.device_count())
  if (jax.process_count() > 1 and jax.default_backend() == 'cpu'
      and jax.config.jax_enable_compilation_cache):
    # The persistent cache's keys differ between processes and only process 0 writes: process 0
    # would load every program while the others compile it, and a gloo rendezvous (new
    # collectives) fails when a process comes more than gloo's fixed 30 s after another.
    jax.config.update('jax_enable_compilation_cache', False)
    logging.info('persistent compilation cache off: several CPU processes (gloo)')


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (nothing to do with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
  """After jax.distributed.initialize, an exception in this process is printed, naming the
  process, and ends it with exit code 1 (see the module docstring); otherwise it propagates.

  A Python error ends the process at once. A runtime error (jax.errors.JaxRuntimeError, e.g. a
  gloo collective whose peer vanished) may mean that another process was lost: this one then
  waits up to 3 heartbeat timeouts + 10 s for jax's coordination service, which aborts it with
  the lost process's id, before it ends itself.
  """
  try:
    yield
  except BaseException as e:  # pylint: disable=broad-except
    if not jax.distributed.is_initialized() or isinstance(e, SystemExit) and not e.code:
      raise
    print(f'process {jax.process_index()} of {jax.process_count()} failed; ending it so that the '
          'others stop too', file=sys.stderr)
    traceback.print_exc()
    if isinstance(e, jax.errors.JaxRuntimeError):
      wait = 3 * (_active or Settings()).heartbeat_timeout_s + 10
      print(f'waiting up to {wait} s for jax.distributed to name a lost process, if one was lost',
            file=sys.stderr)
      sys.stderr.flush()
      time.sleep(wait)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


def finish() -> None:
  """The end of a multi-process run: a barrier, then jax.distributed.shutdown()."""
  if jax.distributed.is_initialized():
    barrier('attention_zoo run finished')
    jax.distributed.shutdown()
