r"""Transformer encoder-decoder on date normalization.

  python -m experiments.main --workdir=runs/dates_transformer \
    --config=configs/dates_transformer.py:score=scaled_dot,size=small

Args: score = a name in attention_zoo.attention.SCORES (scaled_dot, dot, general, additive,
concat: additive's function class, initialized as one matrix), combine = residual (x + f) | gate
(x + σ(W_g[x; f]) ⊙ f, a learned gate on the branch; both keep the identity path), positional =
sinusoidal | learned | rotary, size = tiny | small | base.

  python -m experiments.sweep --config=configs/dates_transformer.py:axis=score \
    --workdir=runs/dates_scores --parallel=2
"""

import ml_collections

from attention_zoo.attention import COMBINES, SCORES
from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=common.TINY_SPLITS,
                 model=dict(d_model=16, num_heads=2, num_layers=1, ffn_dim=32),
                 train=common.TINY_TRAIN, eval=dict(batch_size=64)),
    'small': dict(model=dict(d_model=64, num_heads=4, num_layers=2, ffn_dim=128),
                  train=dict(steps=3_000, batch_size=128)),
    'base': dict(task=dict(num_train=40_000, num_validation=2_000, num_test=2_000),
                 model=dict(d_model=128, num_heads=4, num_layers=3, ffn_dim=256),
                 train=dict(steps=10_000, batch_size=128)),
}


def config(score: str = 'scaled_dot', combine: str = 'residual', positional: str = 'sinusoidal',
           size: str = 'small') -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = common.dates_task()
  c.model_name = 'transformer'
  c.model = common.transformer_model(
      positional=positional, score=score, combine=combine,
      max_len=64,  # longest source / target the positions cover
  )
  return common.finish(c, SIZES, size,
                       lr=1e-3, clip_norm=1.0, schedule='cosine', warmup_steps=200)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def axes() -> dict[str, list[tuple[str, str]]]:
  """axis -> the (score, combine) pairs its sweep compares, read from the registries when asked
  (a score registered later joins), the paper's pair first (the report's baseline)."""
  scores = common.axis(SCORES, 'scaled_dot', concat=(
      "additive's function class, initialized as one matrix (attention/scores.py): the additive "
      'row stands for it'))
  combines = common.axis(COMBINES, 'residual')
  return {'score': [(s, 'residual') for s in scores],
          'combine': [('scaled_dot', c) for c in combines],
          'both': [(s, c) for s in scores for c in combines]}


def get_sweep(arg: str | None = None) -> list[dict]:
  """One axis (score: the scores with the residual combine; combine: every combine with
  scaled_dot; both: every pair) at `size`, `seeds` seeds each (default: both, small, 3)."""
  arg = common.parse_arg(arg, axis='both', size='small', seeds=3)
  return [{'config_arg': f'score={s},combine={c},size={arg.size}', 'seed': seed}
          for s, c in common.pick('axis', arg.axis, axes()) for seed in common.seeds(arg.seeds)]
