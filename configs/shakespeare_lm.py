r"""Decoder-only Transformer language model on tiny Shakespeare (characters).

  python -m experiments.main --workdir=runs/shakespeare \
    --config=configs/shakespeare_lm.py:size=small

Needs $ATTENTION_ZOO_DATA/tinyshakespeare (or --config.task.data_dir). Args: score =
scaled_dot | dot | general | additive, kernel = dense | chunked | fused, positional =
sinusoidal | learned | rotary, size = tiny | small.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=dict(seq_len=32, stride=256),
                 model=dict(d_model=16, num_heads=2, num_layers=1, ffn_dim=32, max_len=32),
                 train=dict(steps=6, batch_size=16, log_every=2, eval_every=3,
                            checkpoint_every=3), eval=dict(batch_size=64, max_examples=128)),
    'small': dict(train=dict(steps=5_000, batch_size=64), eval=dict(max_examples=2_048)),
}


def config(score: str = 'scaled_dot', kernel: str = 'dense', positional: str = 'sinusoidal',
           size: str = 'small') -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = dict(
      name='tiny_shakespeare',  # next-character prediction
      seq_len=128,  # characters per example
      stride=common.optional(int),  # step between example starts (None: seq_len)
      data_dir=common.optional(str),  # text (None: $ATTENTION_ZOO_DATA/tinyshakespeare)
      tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
  )
  c.model_name = 'transformer_lm'
  c.model = common.transformer_model(
      num_layers=4,  # twice the default: the LM's one stack holds all its layers
      ffn_dim=512,  # 4 x d_model, Vaswani et al.'s ratio (the default's: 2 x)
      norm='pre',  # the LayerNorm before each sublayer (GPT-2's): steadier in a deeper stack
      positional=positional, score=score, kernel=kernel,
      max_len=128,  # longest context the positions cover
  )
  return common.finish(c, SIZES, size,
                       optimizer='adamw', lr=1e-3, weight_decay=0.1, clip_norm=1.0,
                       schedule='cosine', warmup_steps=200)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Positional encodings x scores, 3 seeds each."""
  del arg
  return [{'model.positional': p, 'model.score': s, 'seed': seed}
          for p in ('sinusoidal', 'learned', 'rotary') for s in ('scaled_dot', 'general')
          for seed in common.seeds()]
