r"""RNN encoder-decoder (plain, peeky, or with attention) on date normalization.

  python -m experiments.main --workdir=runs/dates_seq2seq \
    --config=configs/dates_seq2seq.py:score=additive,size=small --config.train.steps=3000

Args (comma-separated key=value): score = none | additive | concat | dot | general | scaled_dot,
style = luong | bahdanau, cell = lstm | gru, peeky = false | true, size = tiny | small | base.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=common.TINY_SPLITS, model=dict(embed_dim=8, hidden=16),
                 train=common.TINY_TRAIN, eval=dict(batch_size=64)),
    'small': dict(model=dict(embed_dim=16, hidden=128), train=dict(steps=3_000, batch_size=128)),
    'base': dict(task=dict(num_train=40_000, num_validation=2_000, num_test=2_000),
                 model=dict(embed_dim=32, hidden=256), train=dict(steps=10_000, batch_size=128)),
}


def config(score: str = 'additive', style: str = 'luong', cell: str = 'lstm', peeky: bool = False,
           size: str = 'small') -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = common.dates_task()
  c.model_name = 'seq2seq'
  # The pre-paper wiring (not Bahdanau's or Luong's; see common.PRE_PAPER_SEQ2SEQ) keeps this
  # config's and the demo's numbers.
  c.model = common.seq2seq_model(**common.PRE_PAPER_SEQ2SEQ | dict(cell=cell), peeky=peeky,
                                 score=score, style=style)
  return common.finish(c, SIZES, size,
                       lr=3e-3, clip_norm=5.0, schedule='cosine', warmup_steps=100)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Plain vs peeky vs each attention score, 3 seeds each."""
  del arg
  variants = [{'model.score': 'none', 'model.peeky': False},
              {'model.score': 'none', 'model.peeky': True}]
  variants += [{'model.score': s} for s in ('dot', 'general', 'additive', 'concat')]
  return [dict(v, seed=s) for v in variants for s in common.seeds()]
