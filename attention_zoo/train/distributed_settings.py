"""How the processes of one run find each other, read from flags, the environment or the cluster,
without importing JAX (experiments.sweep passes them on to its runs; attention_zoo.train.distributed
starts them). Where each setting comes from (the first one set wins):

  coordinator_address  the flag, $JAX_COORDINATOR_ADDRESS, the cluster  host:port of process 0
  num_processes        the flag, $JAX_NUM_PROCESSES, the cluster
  process_id           the flag, $JAX_PROCESS_ID, the cluster             0 .. num_processes - 1
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

# setting -> the environment variable it falls back to (jax itself reads the first one)
ENV = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS', 'num_processes': 'JAX_NUM_PROCESSES',
       'process_id': 'JAX_PROCESS_ID'}


@dataclasses.dataclass(frozen=True)
class Settings:
  """How to join the other processes; None: from the environment or the cluster (see module)."""
  coordinator_address: str | None = None  # host:port of process 0's coordination service
  num_processes: int | None = None
  process_id: int | None = None
  heartbeat_timeout_s: int = 30  # a process silent this long is lost: the others abort
  initialization_timeout_s: int = 300  # how long to wait for every process to join
  shutdown_timeout_s: int = 60  # how long a process that ends waits for the others to end

  def requested(self) -> bool:
    """Whether any of the three was given (flags): then the run is multi-process."""
    return any(v is not None for v in (self.coordinator_address, self.num_processes,
                                       self.process_id))

  def flags(self) -> list[str]:
    """The experiments.main flags of these settings (what a launcher passes on); [] when none
    was given."""
    if not self.requested():
      return []
    out = [f'--{k}={getattr(self, k)}' for k in ENV if getattr(self, k) is not None]
    if self.heartbeat_timeout_s != Settings.heartbeat_timeout_s:
      out.append(f'--heartbeat_timeout_s={self.heartbeat_timeout_s}')
    return out


def from_environment(settings: Settings) -> Settings:
  """`settings` with each of coordinator_address / num_processes / process_id that is None taken
  from its environment variable (ENV), when set; ValueError naming the variable when it is not
  an integer."""
  values = {}
  for key, var in ENV.items():
    value = getattr(settings, key)
    if value is None and os.environ.get(var):
      value = os.environ[var]
      if key != 'coordinator_address':
        try:
          value = int(value)
        except ValueError:
          raise ValueError(f'${var}={value!r} is not an integer ({key})') from None
    values[key] = value
  return dataclasses.replace(settings, **values)


# The rank variables of the clusters that jax detects, for a process that must know its id
# before JAX starts (a sweep process: its process 0 alone claims the run).
CLUSTER_RANK = ('SLURM_PROCID', 'OMPI_COMM_WORLD_RANK')


def process_id_before_start(settings: Settings) -> int | None:
  """This process's id from the flag, $JAX_PROCESS_ID or a cluster's rank variable (CLUSTER_RANK),
  without starting JAX; None when none says."""
  s = from_environment(settings)
  if s.process_id is not None:
    return s.process_id
  return next((int(os.environ[v]) for v in CLUSTER_RANK if os.environ.get(v, '').isdigit()), None)


def define_flags() -> Callable[[], tuple[bool, Settings]]:
  """Defines --multihost, --coordinator_address, --num_processes, --process_id and
  --heartbeat_timeout_s (experiments.main, and experiments.sweep, which passes them on to its
  runs) -> a function that reads them after parsing: (multihost, Settings). Giving any of the
  three settings implies multihost."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  multihost = flags.DEFINE_bool(
      'multihost', False, 'one run over several processes: call jax.distributed.initialize() '
      'first (settings from the flags below, the environment or the cluster)')
  coordinator = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 '
                                    '(default: $JAX_COORDINATOR_ADDRESS, else the cluster)')
  num_processes = flags.DEFINE_integer('num_processes', None, 'processes of the run (default: '
                                       '$JAX_NUM_PROCESSES, else the cluster)', lower_bound=1)
  process_id = flags.DEFINE_integer('process_id', None, 'this process, 0 .. num_processes - 1 '
                                    '(default: $JAX_PROCESS_ID, else the cluster)',
                                    lower_bound=0)
  heartbeat = flags.DEFINE_integer('heartbeat_timeout_s', Settings.heartbeat_timeout_s,
                                   'a process silent this long counts as lost: the others stop '
                                   'with an error naming it', lower_bound=1)

  def read() -> tuple[bool, Settings]:
    settings = Settings(coordinator.value, num_processes.value, process_id.value,
                        heartbeat_timeout_s=heartbeat.value)
    return multihost.value or settings.requested(), settings

  return read
