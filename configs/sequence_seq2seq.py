r"""RNN encoder-decoder on the symbolic sequence tasks: copy, reverse, sort, associative recall.

  python -m experiments.main --workdir=runs/reverse_seq2seq \
    --config=configs/sequence_seq2seq.py:task=reverse,score=additive,size=small

Args: task = copy | reverse | sort | recall, score = none | additive | dot | general | ...,
size = tiny | small.
"""

import ml_collections

from configs import common

TASKS = {  # task arg -> task options
    'copy': dict(name='copy', num_symbols=10, min_len=5, max_len=20),
    'reverse': dict(name='reverse', num_symbols=10, min_len=5, max_len=20),
    'sort': dict(name='sort', num_symbols=10, min_len=5, max_len=20),
    'recall': dict(name='recall', num_pairs=8),
}
SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=common.TINY_SPLITS, model=dict(embed_dim=8, hidden=16),
                 train=common.TINY_TRAIN, eval=dict(batch_size=64)),
    'small': dict(model=dict(embed_dim=32, hidden=128), train=dict(steps=5_000, batch_size=128)),
}


def config(task: str = 'reverse', score: str = 'additive',
           size: str = 'small') -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = common.generated_task(**common.pick('task', task, TASKS))  # name, own sizes
  c.model_name = 'seq2seq'
  # The pre-paper wiring (not Luong's: no input feeding; see common.PRE_PAPER_SEQ2SEQ) keeps
  # this config's numbers.
  c.model = common.seq2seq_model(**common.PRE_PAPER_SEQ2SEQ, embed_dim=32, score=score)
  return common.finish(c, SIZES, size,
                       lr=3e-3, clip_norm=5.0, schedule='cosine', warmup_steps=100)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def get_sweep(arg: str | None = None) -> list[dict]:
  """No attention vs dot vs additive, 3 seeds each (task chosen by the arg)."""
  del arg
  return [{'model.score': s, 'seed': seed}
          for s in ('none', 'dot', 'additive') for seed in common.seeds()]
