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
    'tiny': dict(task=dict(num_train=512, num_validation=64, num_test=64),
                 model=dict(embed_dim=8, hidden=16),
                 train=dict(steps=20, batch_size=32, log_every=5, eval_every=10,
                            checkpoint_every=10), eval=dict(batch_size=64)),
    'small': dict(task=dict(num_train=20_000, num_validation=1_000, num_test=1_000),
                  model=dict(embed_dim=32, hidden=128), train=dict(steps=5_000, batch_size=128)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, task='reverse', score='additive', size='small')
  c = common.base_config()
  c.task = dict(
      num_train=20_000,  # training examples
      num_validation=1_000,  # validation examples
      num_test=1_000,  # test examples
      tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
      **common.pick('task', arg.task, TASKS),  # name and the task's own sizes (see TASKS)
  )
  c.model_name = 'seq2seq'
  c.model = dict(
      embed_dim=32,  # E, token embedding size
      hidden=128,  # F, encoder / decoder state size (hidden units)
      cell='lstm',  # lstm | lstm_unfused | gru
      score=arg.score,  # attention score, or 'none' for no attention
      style='luong',  # luong | bahdanau: where the attention sits in the decoder step
  )
  return common.finish(c, SIZES, arg.size,
                       lr=3e-3, clip_norm=5.0, schedule='cosine', warmup_steps=100)


def get_sweep(arg: str | None = None) -> list[dict]:
  """No attention vs dot vs additive, 3 seeds each (task chosen by the arg)."""
  del arg
  return [{'model.score': s, 'seed': seed}
          for s in ('none', 'dot', 'additive') for seed in common.seeds()]
