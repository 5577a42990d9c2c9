r"""The default comparison (`make demo`): the story of attention on date normalization.

  python -m experiments.sweep --config=configs/dates_demo.py --workdir=runs/demo --parallel=2

Variants (3 seeds each): the seq2seq RNN plain, with reversed input and peeky; seq2seq + Luong
attention with the dot, general and additive scores; the Transformer with scaled_dot and with
additive scores. Sizes are chosen so that the whole sweep trains on a 2-core CPU in minutes.
One run: python -m experiments.main --config=configs/dates_demo.py:family=seq2seq,score=dot \
  --workdir=runs/demo_one
"""

import ml_collections

from configs import common, dates_seq2seq, dates_transformer

FAMILIES = {'seq2seq': dates_seq2seq, 'transformer': dates_transformer}
TASK = dict(num_train=10_000, num_validation=500, num_test=1_000)  # shared by every variant
TRAIN = dict(steps=1_200, batch_size=64, log_every=100, eval_every=300, checkpoint_every=1_200,
             warmup_steps=100)
MODEL = {
    'seq2seq': dict(embed_dim=16, hidden=64),
    'transformer': dict(d_model=64, num_heads=4, num_layers=2, ffn_dim=128, dropout_rate=0.0),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, family='seq2seq', score='none', peeky=False, reverse=False)
  family = common.pick('family', arg.family, FAMILIES)
  if arg.family == 'seq2seq':
    c = family.get_config(f'score={arg.score},peeky={arg.peeky},size=small')
  else:
    c = family.get_config(f'score={arg.score},size=small')
  c.task.update(TASK, reverse_source=arg.reverse)
  c.model.update(MODEL[arg.family])
  c.train.update(TRAIN)
  c.eval.max_examples = 0  # the whole validation / test split
  return c


def get_sweep(arg: str | None = None) -> list[dict]:
  """The eight variants of the demo, 3 seeds each."""
  del arg
  variants = ['family=seq2seq,score=none', 'family=seq2seq,score=none,reverse=true',
              'family=seq2seq,score=none,peeky=true', 'family=seq2seq,score=dot',
              'family=seq2seq,score=general', 'family=seq2seq,score=additive',
              'family=transformer,score=scaled_dot', 'family=transformer,score=additive']
  return [{'config_arg': v, 'seed': s} for v in variants for s in common.seeds()]
