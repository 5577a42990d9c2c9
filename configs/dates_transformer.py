r"""Transformer encoder-decoder on date normalization.

  python -m experiments.main --workdir=runs/dates_transformer \
    --config=configs/dates_transformer.py:score=scaled_dot,size=small

Args: score = scaled_dot | dot | general | additive | concat, combine = residual | gate,
positional = sinusoidal | learned | rotary, size = tiny | small | base.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=dict(num_train=512, num_validation=64, num_test=64),
                 model=dict(d_model=16, num_heads=2, num_layers=1, ffn_dim=32),
                 train=dict(steps=20, batch_size=32, log_every=5, eval_every=10,
                            checkpoint_every=10), eval=dict(batch_size=64)),
    'small': dict(task=dict(num_train=20_000, num_validation=1_000, num_test=1_000),
                  model=dict(d_model=64, num_heads=4, num_layers=2, ffn_dim=128),
                  train=dict(steps=3_000, batch_size=128)),
    'base': dict(task=dict(num_train=40_000, num_validation=2_000, num_test=2_000),
                 model=dict(d_model=128, num_heads=4, num_layers=3, ffn_dim=256),
                 train=dict(steps=10_000, batch_size=128)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, score='scaled_dot', combine='residual', positional='sinusoidal',
                         size='small')
  c = common.base_config()
  c.task = dict(
      name='dates',  # human-written dates -> YYYY-MM-DD
      num_train=20_000,  # training examples
      num_validation=1_000,  # validation examples
      num_test=1_000,  # test examples
      reverse_source=False,  # feed the source reversed
      tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
  )
  c.model_name = 'transformer'
  c.model = dict(
      d_model=64,  # model width
      num_heads=4,  # attention heads
      num_layers=2,  # encoder and decoder layers each
      ffn_dim=128,  # feed-forward hidden size
      dropout_rate=0.1,  # residual dropout
      norm='post',  # post | pre layer norm
      positional=arg.positional,  # sinusoidal | learned | rotary
      score=arg.score,  # attention score
      score_dim=common.optional(int),  # additive / concat A per head (None: the head dim)
      kernel='dense',  # dense | chunked | fused
      combine=arg.combine,  # residual | gate
      max_len=64,  # longest source / target the positions cover
  )
  return common.finish(c, SIZES, arg.size,
                       lr=1e-3, clip_norm=1.0, schedule='cosine', warmup_steps=200)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Each score with residual and gated combine, 3 seeds each."""
  del arg
  return [{'model.score': s, 'model.combine': comb, 'seed': seed}
          for s in ('scaled_dot', 'dot', 'general', 'additive')
          for comb in ('residual', 'gate') for seed in common.seeds()]
