r"""End-to-end memory network on bAbI 1k (one of the 20 tasks).

  python -m experiments.main --workdir=runs/babi1_memn2n \
    --config=configs/babi_memn2n.py:task_id=1,size=small

Needs $ATTENTION_ZOO_DATA/babi/en (or --config.task.data_dir). Args: task_id = 1..20,
encoding = position | bow, tying = adjacent | layerwise, size = tiny | small.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(model=dict(embed_dim=8, hops=2, linear_start_steps=3),
                 train=dict(steps=6, batch_size=16, log_every=2, eval_every=3, checkpoint_every=3),
                 eval=dict(batch_size=64, max_examples=128)),
    'small': dict(model=dict(linear_start_steps=600), train=dict(steps=3_000, batch_size=32)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, task_id=1, encoding='position', tying='adjacent', size='small')
  c = common.base_config()
  c.task = dict(
      name='babi',  # bAbI QA: story + question -> one answer word
      task_id=arg.task_id,  # 1..20
      memory_size=50,  # M, the most recent sentences kept
      unknown_words='unk',  # test words missing from train -> UNK (task 8 needs it)
      data_dir=common.optional(str),  # raw files (None: $ATTENTION_ZOO_DATA/babi/en)
      tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
  )
  c.model_name = 'memn2n'
  c.model = dict(
      embed_dim=20,  # E, the paper's d
      hops=3,  # memory hops
      tying=arg.tying,  # adjacent | layerwise weight tying
      encoding=arg.encoding,  # position | bow sentence encoding
      temporal=True,  # learned temporal encodings
      random_noise=0.1,  # fraction of empty memories inserted during training
      linear_start_steps=0,  # training steps without the memory softmax (linear start; 0 = off)
  )
  # SGD, lr 0.01, gradient norm clipped at 40 (section 4.2). NOT the paper's schedule: it halves
  # the lr every 25 epochs over 100; this config decays it with a cosine.
  return common.finish(c, SIZES, arg.size,
                       optimizer='sgd', momentum=0.0, lr=0.01, schedule='cosine', clip_norm=40.0)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Position vs bag-of-words encoding, with and without linear start, 3 seeds each."""
  del arg
  return [{'model.encoding': e, 'model.linear_start_steps': ls, 'seed': seed}
          for e in ('position', 'bow') for ls in (0, 600) for seed in common.seeds()]
