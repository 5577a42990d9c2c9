r"""Transformer classifier on ListOps (nested list operations -> a digit).

  python -m experiments.main --workdir=runs/listops \
    --config=configs/listops_transformer.py:score=scaled_dot,size=small

Args: score = scaled_dot | dot | general | additive, kernel = dense | chunked | fused,
pooling = cls | mean, size = tiny | small.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=dict(num_train=256, num_validation=64, num_test=64, max_length=32,
                           max_depth=2),
                 model=dict(d_model=16, num_heads=2, num_layers=1, ffn_dim=32, max_len=64),
                 train=dict(steps=20, batch_size=32, log_every=5, eval_every=10,
                            checkpoint_every=10), eval=dict(batch_size=64)),
    'small': dict(task=dict(num_train=20_000, num_validation=2_000, num_test=2_000),
                  model=dict(d_model=64, num_heads=4, num_layers=2, ffn_dim=128),
                  train=dict(steps=5_000, batch_size=64)),
}


def config(score: str = 'scaled_dot', kernel: str = 'dense', pooling: str = 'cls',
           size: str = 'small') -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = common.generated_task(
      'listops',  # ListOps, 10 classes
      num_validation=2_000, num_test=2_000,
      max_depth=4,  # nesting depth
      max_length=128,  # tokens per example (PAD-padded)
  )
  c.model_name = 'transformer_classifier'
  c.model = common.transformer_model(
      pooling=pooling,  # cls | mean: the summary the classifier reads
      score=score, kernel=kernel,
      max_len=256,  # longest input the positions cover (+1 for [CLS])
  )
  return common.finish(c, SIZES, size,
                       lr=1e-3, clip_norm=1.0, schedule='cosine', warmup_steps=200,
                       optimizer='adamw', weight_decay=0.01)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Scores x pooling, 3 seeds each."""
  del arg
  return [{'model.score': s, 'model.pooling': p, 'seed': seed}
          for s in ('scaled_dot', 'general', 'additive') for p in ('cls', 'mean')
          for seed in common.seeds()]
