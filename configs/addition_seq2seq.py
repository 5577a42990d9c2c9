r"""RNN encoder-decoder on multi-digit addition ("123+45" -> "168").

  python -m experiments.main --workdir=runs/addition_seq2seq \
    --config=configs/addition_seq2seq.py:score=dot,reverse=true,size=small

Args: score = none | additive | concat | dot | general | scaled_dot, reverse = false | true
(reverse the source, Sutskever et al. 2014), peeky = false | true, size = tiny | small.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=common.TINY_SPLITS, model=dict(embed_dim=8, hidden=16),
                 train=common.TINY_TRAIN, eval=dict(batch_size=64)),
    'small': dict(model=dict(embed_dim=16, hidden=128), train=dict(steps=5_000, batch_size=128)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, score='none', reverse=False, peeky=False, size='small')
  c = common.base_config()
  c.task = common.generated_task(
      'addition',  # "a+b" -> str(a + b)
      num_digits=3,  # a, b < 10**num_digits
      reverse_source=arg.reverse,  # feed the source reversed
  )
  c.model_name = 'seq2seq'
  # The pre-paper wiring (not Luong's: no input feeding; see common.PRE_PAPER_SEQ2SEQ) keeps
  # this config's numbers.
  c.model = common.seq2seq_model(**common.PRE_PAPER_SEQ2SEQ, peeky=arg.peeky, score=arg.score)
  return common.finish(c, SIZES, arg.size,
                       lr=3e-3, clip_norm=5.0, schedule='cosine', warmup_steps=100)


def get_sweep(arg: str | None = None) -> list[dict]:
  """The seed article's ladder: plain, reversed source, peeky, attention; 3 seeds each."""
  del arg
  variants = [{}, {'task.reverse_source': True},
              {'task.reverse_source': True, 'model.peeky': True},
              {'task.reverse_source': True, 'model.score': 'dot'},
              {'task.reverse_source': True, 'model.score': 'additive'}]
  return [dict(v, seed=s) for v in variants for s in common.seeds()]
