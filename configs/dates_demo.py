r"""The default comparison (`make demo`): the story of attention on date normalization.

  python -m experiments.main --workdir=runs/demo_one \
    --config=configs/dates_demo.py:family=seq2seq,score=additive

The whole comparison (the variants below x 3 seeds, then the report):
  python -m experiments.sweep --config=configs/dates_demo.py --workdir=runs/demo --parallel=2
Variants: the seq2seq RNN plain, with reversed input and peeky; seq2seq + Luong attention with
each registered score but those `get_sweep` leaves out (the dot, general and additive scores);
the Transformer with its scaled_dot score and with the additive one. Sizes and steps were set
for the demo's wall time on a 2-core CPU (1,200 steps for the RNNs, 1,500 for the Transformers),
not chosen on validation: by the plateau rule on validation (the dates_alignment card of
REPRODUCTIONS.md) every seq2seq variant and the additive Transformer still improve at their last
evaluation, so the demo compares the models at equal, short budgets, not at convergence. The
runs, their times included, are the evidence in reproductions/dates.
Args: family = seq2seq | transformer, score = none | a name in attention_zoo.attention.SCORES,
peeky, reverse = false | true, size = demo | tiny, steps = training steps (0: the family's own).
"""

import ml_collections

from attention_zoo.attention import SCORES
from configs import common, dates_seq2seq, dates_transformer

FAMILIES = {  # family -> its config at size small, with the demo's score (and peeky)
    'seq2seq': lambda score, peeky: dates_seq2seq.config(score=score, peeky=peeky, size='small'),
    'transformer': lambda score, peeky: dates_transformer.config(score=score, size='small'),
}
SIZES = {  # size -> overrides shared by every variant
    'demo': dict(task=dict(num_train=10_000, num_validation=250, num_test=1_000),
                 train=dict(log_every=100, eval_every=600, checkpoint_every=10_000,
                            warmup_steps=100),
                 eval=dict(batch_size=250)),  # divides both evaluation splits: no padded rows
    'tiny': dict(task=dict(num_train=512, num_validation=64, num_test=64),
                 train=dict(steps=20, batch_size=32, log_every=5, eval_every=10,
                            checkpoint_every=10, warmup_steps=2)),
}
FAMILY = {  # family -> model size and training steps of the demo
    # 1,200 steps: the demo's budget (validation still rises there: see the module docstring).
    'seq2seq': dict(model=dict(embed_dim=16, hidden=64),
                    train=dict(steps=1_200, batch_size=64, lr=3e-3)),
    # One head with A = 16: the two Transformers differ in the score alone, and the additive
    # score's [B, Q, K, A] block stays small; batch 32 x 1,500 steps, the demo's budget.
    'transformer': dict(model=dict(d_model=64, num_heads=1, num_layers=2, ffn_dim=128,
                                   dropout_rate=0.0, score_dim=16),
                        train=dict(steps=1_500, batch_size=32, lr=3e-3)),
}


def config(family: str = 'seq2seq', score: str = 'none', peeky: bool = False,
           reverse: bool = False, size: str = 'demo', steps: int = 0) -> ml_collections.ConfigDict:
  if steps < 0:
    raise ValueError(f'dates_demo: steps must be >= 0 (0: the family\'s own), got {steps}')
  c = common.pick('family', family, FAMILIES)(score, peeky)
  c.task.reverse_source = reverse
  common.apply_size(c, FAMILY[family])
  common.apply_size(c, common.pick('size', size, SIZES))
  if steps:
    c.train.steps = steps
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def variants() -> list[str]:
  """The demo's variants (config args), the scores read from the registry when asked: a newly
  registered score gets a seq2seq row and a Transformer row."""
  same = "additive's function class (attention/scores.py): the additive row stands for it"
  seq2seq = common.axis(
      SCORES, concat=same,
      scaled_dot='dot with the fixed scale 1/sqrt(F): the dot row stands for it')
  transformer = common.axis(
      SCORES, 'scaled_dot', concat=same,
      dot='compared with scaled_dot on the score axis of configs/dates_transformer.py',
      general='compared with scaled_dot on the score axis of configs/dates_transformer.py')
  return (['family=seq2seq,score=none', 'family=seq2seq,score=none,reverse=true',
           'family=seq2seq,score=none,peeky=true']
          + [f'family=seq2seq,score={s}' for s in seq2seq]
          + [f'family=transformer,score={s}' for s in transformer])


def get_sweep(arg: str | None = None) -> list[dict]:
  """The variants of the demo, 3 seeds each (arg: e.g. 'size=tiny,seeds=1'); `longer`: a
  '+'-separated list of 'variant@steps' run again at that many steps beside the demo's own, e.g.
  'family=transformer;score=additive@3000' (';' for the variant's ',')."""
  arg = common.parse_arg(arg, size='demo', seeds=3, longer='')
  size = '' if arg.size == 'demo' else f',size={arg.size}'
  longer = []
  for item in filter(None, arg.longer.split('+')):
    variant, at, steps = item.partition('@')
    variant = variant.replace(';', ',')
    if variant not in variants() or not (at and steps.isdigit() and int(steps) > 0):
      raise ValueError(f'dates_demo sweep: longer item {item!r} is not <variant>@<steps> with '
                       f'a variant of {variants()} (\';\' for \',\') and steps > 0')
    longer.append(f'{variant},steps={steps}')
  return [{'config_arg': v + size, 'seed': s}
          for v in variants() + longer for s in common.seeds(arg.seeds)]
