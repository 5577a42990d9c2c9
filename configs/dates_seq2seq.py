r"""RNN encoder-decoder (plain, peeky, or with attention) on date normalization.

  python -m experiments.main --workdir=runs/dates_seq2seq \
    --config=configs/dates_seq2seq.py:score=additive,size=small --config.train.steps=3000

Args (comma-separated key=value): score = none | additive | concat | dot | general | scaled_dot,
style = luong | bahdanau, cell = lstm | gru, peeky = false | true, size = tiny | small | base.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=dict(num_train=512, num_validation=64, num_test=64),
                 model=dict(embed_dim=8, hidden=16),
                 train=dict(steps=20, batch_size=32, log_every=5, eval_every=10,
                            checkpoint_every=10), eval=dict(batch_size=64)),
    'small': dict(task=dict(num_train=20_000, num_validation=1_000, num_test=1_000),
                  model=dict(embed_dim=16, hidden=128), train=dict(steps=3_000, batch_size=128)),
    'base': dict(task=dict(num_train=40_000, num_validation=2_000, num_test=2_000),
                 model=dict(embed_dim=32, hidden=256), train=dict(steps=10_000, batch_size=128)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, score='additive', style='luong', cell='lstm', peeky=False,
                         size='small')
  c = common.base_config()
  c.task = dict(
      name='dates',  # human-written dates -> YYYY-MM-DD
      num_train=20_000,  # training examples
      num_validation=1_000,  # validation examples
      num_test=1_000,  # test examples
      reverse_source=False,  # feed the source reversed (Sutskever et al. 2014)
      tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
  )
  c.model_name = 'seq2seq'
  c.model = dict(
      embed_dim=16,  # E, token embedding size
      hidden=128,  # F, encoder / decoder state size (hidden units)
      cell=arg.cell,  # lstm | lstm_unfused | gru
      bidirectional=False,  # bidirectional encoder
      peeky=arg.peeky,  # feed the encoder summary to every decoder step
      score=arg.score,  # attention score, or 'none' for the plain encoder-decoder
      style=arg.style,  # luong | bahdanau: where the attention sits in the decoder step
      kernel='dense',  # dense | chunked | fused
      dropout_rate=0.0,  # dropout on embeddings and read-out
  )
  return common.finish(c, SIZES, arg.size,
                       lr=3e-3, clip_norm=5.0, schedule='cosine', warmup_steps=100)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Plain vs peeky vs each attention score, 3 seeds each."""
  del arg
  variants = [{'model.score': 'none', 'model.peeky': False},
              {'model.score': 'none', 'model.peeky': True}]
  variants += [{'model.score': s} for s in ('dot', 'general', 'additive', 'concat')]
  return [dict(v, seed=s) for v in variants for s in common.seeds()]
