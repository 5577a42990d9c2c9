r"""One run: train and evaluate a config in a workdir (resuming there if it holds a checkpoint).

  python -m experiments.main --config=configs/dates_seq2seq.py:score=additive,size=tiny \
    --workdir=runs/dates --config.train.steps=200

The config is locked: a misspelled override fails, naming the nearest valid keys.

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

from absl import app, flags, logging
from ml_collections import config_flags

from attention_zoo.train import distributed

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/<file>.py[:arg]',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'directory of the run (created)')
_FRESH = flags.DEFINE_bool('fresh', False, 'delete what a previous run left in --workdir and '
                           'start over instead of resuming')
_DISTRIBUTED = distributed.define_flags()
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  import jax  # pylint: disable=import-outside-toplevel
  multihost, settings = _DISTRIBUTED()
  if multihost:
    distributed.initialize(settings)
  with distributed.fail_fast():
    from attention_zoo.train import loop  # pylint: disable=import-outside-toplevel
    logging.info('devices: %s', jax.devices())
    results = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value, fresh=_FRESH.value)
    logging.info('results: %s', {k: results[k] for k in ('step', 'validation', 'test')
                                 if k in results})
    distributed.finish()


if __name__ == '__main__':
  app.run(main)
