r"""One run: train and evaluate a config in a workdir (resuming there if it holds a checkpoint).

  python -m experiments.main --config=configs/dates_seq2seq.py:score=additive,size=tiny \
    --workdir=runs/dates --config.train.steps=200

The config is locked: a misspelled override fails, naming the nearest valid keys.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/<file>.py[:arg]',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'directory of the run (created)')
_FRESH = flags.DEFINE_bool('fresh', False, 'delete what a previous run left in --workdir and '
                           'start over instead of resuming')
_MULTIHOST = flags.DEFINE_bool('multihost', False, 'call jax.distributed.initialize() first '
                               '(one process per host; cluster from the environment)')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  import jax  # pylint: disable=import-outside-toplevel
  if _MULTIHOST.value:
    jax.distributed.initialize()
  from attention_zoo.train import loop  # pylint: disable=import-outside-toplevel
  logging.info('devices: %s', jax.devices())
  results = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value, fresh=_FRESH.value)
  logging.info('results: %s', {k: results[k] for k in ('step', 'validation', 'test')
                               if k in results})


if __name__ == '__main__':
  app.run(main)
