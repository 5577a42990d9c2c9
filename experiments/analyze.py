r"""Look inside a run: attention maps, SE channel weights, learning curves, a text summary.

  python -m experiments.analyze --examples=2 \
    --workdir=runs/demo/runs/family=seq2seq,score=additive,size=demo,seed=0

Writes PNGs, summary.txt, measures.json (the attention measures: alignment against gold,
entropy, distance, head ablation, rollout, SE selectivity) and attention.html (the attention maps
to explore in a browser) into WORKDIR/analysis[_step<N>]/. Without --step it reads the newest
checkpoint that reads back intact (a warning names the newer, damaged ones); when none does, or
the --step asked for does not, it exits with an error naming the checkpoint(s).
"""

import sys

from absl import app, flags

from attention_zoo.analysis import analyze_run
from attention_zoo.analysis.measure_run import write_measures
from attention_zoo.train.checkpoints import CorruptCheckpointError

_WORKDIR = flags.DEFINE_string('workdir', None, 'the workdir of one run')
_STEP = flags.DEFINE_integer('step', None,
                             'checkpoint step (default: the newest that reads back intact)')
_EXAMPLES = flags.DEFINE_integer('examples', 2, 'examples to draw per attention layer')
_SPLIT = flags.DEFINE_string('split', 'validation', 'split the examples come from')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    analyze_run(_WORKDIR.value, _STEP.value, _EXAMPLES.value, _SPLIT.value)
    write_measures(_WORKDIR.value, _STEP.value, _EXAMPLES.value, _SPLIT.value)
  except CorruptCheckpointError as e:
    sys.exit(f'analyze: {e}')


if __name__ == '__main__':
  app.run(main)
