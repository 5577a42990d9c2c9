r"""Transformer classifier on flattened bAbI 1k (story words, BOS, question words -> answer).

  python -m experiments.main --workdir=runs/babi1_transformer \
    --config=configs/babi_transformer.py:task_id=1,size=small

Needs $ATTENTION_ZOO_DATA/babi/en (or --config.task.data_dir). Args: task_id = 1..20,
score = scaled_dot | dot | general | additive, size = tiny | small.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=dict(memory_size=10),
                 model=dict(d_model=16, num_heads=2, num_layers=1, ffn_dim=32),
                 train=dict(steps=6, batch_size=16, log_every=2, eval_every=3,
                            checkpoint_every=3), eval=dict(batch_size=64, max_examples=128)),
    'small': dict(train=dict(steps=3_000, batch_size=32)),
}


def config(task_id: int = 1, score: str = 'scaled_dot',
           size: str = 'small') -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = dict(
      name='babi',  # bAbI QA as token classification
      task_id=task_id,  # 1..20
      memory_size=50,  # the most recent sentences kept
      flat=True,  # one token sequence per question (kind 'classify')
      unknown_words='unk',  # test words missing from train -> UNK
      data_dir=common.optional(str),  # raw files (None: $ATTENTION_ZOO_DATA/babi/en)
      tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
  )
  c.model_name = 'transformer_classifier'
  c.model = common.transformer_model(
      d_model=64,  # half the default width: bAbI 1k has 900 training questions a task
      ffn_dim=128,  # 2 x d_model, the default's ratio
      pooling='cls',  # cls | mean: the summary the classifier reads
      score=score, positional='learned',
      max_len=1024,  # longest flattened story the positions cover
  )
  return common.finish(c, SIZES, size,
                       optimizer='adamw', lr=1e-3, weight_decay=0.01, clip_norm=1.0,
                       schedule='cosine', warmup_steps=200)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Scores, 3 seeds each."""
  del arg
  return [{'model.score': s, 'seed': seed}
          for s in ('scaled_dot', 'general', 'additive') for seed in common.seeds()]
