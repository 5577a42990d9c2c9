r"""One run, or several seeds of one config: train and evaluate in a workdir (resuming there if
it holds a checkpoint).

  python -m experiments.main --config=configs/dates_seq2seq.py:score=additive,size=tiny \
    --workdir=runs/dates --config.train.steps=200

The config is locked: a misspelled override fails, naming the nearest valid keys.

Seeds: --seeds=0,1,2 trains those seeds of the config (config.seed replaced), each in its own
workdir (one --workdir per seed, or one folder that gets seed=<s>/ per seed), as one program
mapped over the seeds (--seed_map=map or vmap; default: map on CPU, vmap elsewhere), or as one
child process per seed (--seed_map=processes; the default for a model registered to train its
seeds apart on this platform: the conv nets on CPU). attention_zoo.train.seeds says what each does.

  python -m experiments.main --config=configs/dates_demo.py:family=seq2seq,score=dot \
    --seeds=0,1,2 --workdir=runs/dot

Several processes, one run (one process per host, or several on one machine; see BUILD.md):
start the same command in each process with --coordinator_address (host:port of process 0),
--num_processes and --process_id. Each falls back to $JAX_COORDINATOR_ADDRESS,
$JAX_NUM_PROCESSES, $JAX_PROCESS_ID, then to jax's cluster detection (SLURM, Open MPI, Cloud TPU),
where --multihost alone is enough. Giving any of the three implies --multihost. A process that
dies makes the others stop within about --heartbeat_timeout_s, with an error naming it
(attention_zoo/train/distributed.py). Two processes on this machine:

  python -m experiments.main --config=... --workdir=runs/x \
    --coordinator_address=localhost:12345 --num_processes=2 --process_id=0 &
  python -m experiments.main --config=... --workdir=runs/x \
    --coordinator_address=localhost:12345 --num_processes=2 --process_id=1
"""

import concurrent.futures
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from attention_zoo.sweeps import processes
from attention_zoo.train import distributed, seeds

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/<file>.py[:arg]',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_multi_string(
    'workdir', None, 'directory of the run (created); with --seeds, one per seed in their order, '
    'or one folder that gets a subfolder seed=<s> per seed')
_SEEDS = flags.DEFINE_list('seeds', None, 'train these seeds of the config (config.seed '
                           'replaced), each in its own workdir; default: config.seed alone')
_SEED_MAP = flags.DEFINE_enum('seed_map', None, list(seeds.CHOICES),
                              'with --seeds: one program mapped over the seeds (map, vmap; '
                              'default: the platform\'s) or one process per seed (processes)')
_FRESH = flags.DEFINE_bool('fresh', False, 'delete what a previous run left in --workdir and '
                           'start over instead of resuming')
_DISTRIBUTED = distributed.define_flags()
flags.mark_flags_as_required(['config', 'workdir'])
_PER_SEED_FLAGS = ('seeds', 'workdir', 'seed_map')  # what a child of --seed_map=processes gets anew


def _workdir_arg():
  if _SEEDS.value is None:
    if len(_WORKDIR.value) != 1:
      raise app.UsageError(f'one --workdir per run; got {_WORKDIR.value} without --seeds')
    return _WORKDIR.value[0]
  return _WORKDIR.value[0] if len(_WORKDIR.value) == 1 else _WORKDIR.value


def _own_argv(argv: list[str]) -> list[str]:
  """This command's flags but the per-seed ones (both --flag=value and --flag value forms)."""
  names = {f'--{n}' for n in _PER_SEED_FLAGS}
  out, skip = [], False
  for token in argv:
    if skip:
      skip = False
    elif token in names:
      skip = True
    elif token.split('=', 1)[0] not in names:
      out.append(token)
  return out


def _one_process_per_seed(seed_list: list[int]) -> None:
  """--seed_map=processes: one child experiments.main per seed, at once, each on its own CPUs
  where there are enough (processes.cpu_lanes)."""
  workdir = _workdir_arg()
  if isinstance(workdir, str):
    workdirs = [pathlib.Path(workdir) / f'{seeds.SEED}={s}' for s in seed_list]
  else:
    workdirs = [pathlib.Path(w) for w in workdir]
  if len(workdirs) != len(seed_list):
    raise app.UsageError(f'{len(seed_list)} seeds for {len(workdirs)} workdirs')
  base = [sys.executable, '-m', 'experiments.main', *_own_argv(sys.argv[1:])]
  lanes = processes.cpu_lanes(len(seed_list)) or [None] * len(seed_list)
  with concurrent.futures.ThreadPoolExecutor(len(seed_list)) as pool:
    procs = list(pool.map(
        lambda job: processes.launch(base + [f'--config.seed={job[0]}', f'--workdir={job[1]}'],
                                     job[2]), zip(seed_list, workdirs, lanes)))
  failed = [(s, p) for s, p in zip(seed_list, procs) if p.returncode != 0]
  for seed, proc in failed:
    logging.error('seed %d failed:\n%s', seed, '\n'.join(proc.stderr.splitlines()[-30:]))
  if failed:
    raise SystemExit(f'seeds {[s for s, _ in failed]} failed')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  import jax  # pylint: disable=import-outside-toplevel
  seed_list = None if _SEEDS.value is None else [int(s) for s in _SEEDS.value]
  if seed_list is not None and (_SEED_MAP.value == seeds.PROCESSES or (
      _SEED_MAP.value is None and len(seed_list) > 1
      and seeds.apart_by_default(_CONFIG.value.model_name))):
    _one_process_per_seed(seed_list)
    return
  multihost, settings = _DISTRIBUTED()
  if multihost:
    distributed.initialize(settings)
  with distributed.fail_fast():
    from attention_zoo.train import loop  # pylint: disable=import-outside-toplevel
    logging.info('devices: %s', jax.devices())
    results = loop.train_and_evaluate(_CONFIG.value, _workdir_arg(), seeds=seed_list,
                                      seed_map=_SEED_MAP.value, fresh=_FRESH.value)
    for one in results if isinstance(results, list) else [results]:
      logging.info('results: %s', {k: one[k] for k in ('step', 'validation', 'test') if k in one})
    distributed.finish()


if __name__ == '__main__':
  app.run(main)
