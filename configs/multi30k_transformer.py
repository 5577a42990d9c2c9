r"""Transformer on Multi30k (de -> en by default): Vaswani et al. (2017)'s recipe, scaled down.

  python -m experiments.main --workdir=runs/multi30k_transformer \
    --config=configs/multi30k_transformer.py:source=de,target=en,size=small

The recipe of the paper (sec. 5): Adam b1 = 0.9, b2 = 0.98, eps = 1e-9; the rsqrt schedule of
eq. 3 (lr = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)); label smoothing 0.1 (sec. 5.4);
residual dropout 0.1; shared source / target / output embeddings over a joint vocabulary
(sec. 3.4); beam search with beam 4 and length penalty alpha = 0.6 (sec. 6.1); the final
evaluation averages the last 5 checkpoints (sec. 6.1). `base` is the paper's base model
(d_model 512, 8 heads, 6 + 6 layers, ffn 2048) for a GPU.
Deviations, all sizes: a joint BPE vocabulary of 8,000 pieces (the paper: 37,000 on WMT);
batches of 128 sentences in length buckets (the paper: ~25,000 tokens a batch); warmup capped at
a tenth of the steps. `small` (d_model 256, 4 heads, 3 + 3 layers, ffn 1024, 2,000 steps) is
sized for a 2-core CPU, with the rsqrt scale 0.25 instead of 1 (see SIZES). `small_select`, the
multi30k_transformer card of REPRODUCTIONS.md, is the same model and recipe with its length
chosen on validation: up to 4,000 steps, greedy validation BLEU every 400, the final evaluation
(the only reading of test) at the step of the highest (eval.select_metric,
attention_zoo/train/selection.py). `small_long`, 3,000 steps, is the card's earlier length, kept
beside it: it was chosen on test BLEU, for en -> de to reach its target.
Args: source, target = de | en, size = tiny | small | small_long | small_select | base.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=dict(vocab_size=500),
                 model=dict(d_model=16, num_heads=2, num_layers=1, ffn_dim=32),
                 train=dict(steps=6, batch_size=16, log_every=2, eval_every=3, warmup_steps=2,
                            checkpoint_every=3, num_buckets=2),
                 eval=dict(batch_size=64, max_examples=64, average_checkpoints=2, beam_size=2)),
    # lr: the rsqrt scale, 0.25 instead of the paper's 1, which with d_model 256 and the warmup
    # capped at 200 steps would peak at 4.4e-3; 0.25 peaks at 1.1e-3, near the paper's base
    # model's 7.0e-4 (d_model 512, warmup 4,000).
    'small': dict(model=dict(d_model=256, num_heads=4, num_layers=3, ffn_dim=1024),
                  train=dict(steps=2_000, batch_size=128, checkpoint_every=200, lr=0.25)),
    'base': dict(model=dict(d_model=512, num_heads=8, num_layers=6, ffn_dim=2048),
                 train=dict(steps=100_000, batch_size=256, checkpoint_every=1_000)),
}
# small, 3,000 steps; the warmup stays 200 (the cap would make it 300).
SIZES['small_long'] = dict(SIZES['small'],
                           train=dict(SIZES['small']['train'], steps=3_000, warmup_steps=200))
# small, its length chosen on validation: up to 4,000 steps (a budget, set before any of its runs)
# with greedy validation BLEU every 400; the final evaluation (beam 4, the 5 checkpoints up to
# the chosen step averaged) runs once, at the step of the highest validation BLEU. The rsqrt
# schedule does not depend on train.steps, so the run's first N steps are a run of N steps.
SIZES['small_select'] = dict(
    SIZES['small'],
    train=dict(SIZES['small']['train'], steps=4_000, warmup_steps=200, eval_every=400,
               keep_checkpoints=20),
    eval=dict(select_metric='gen_bleu', select_mode='max'))


def config(source: str = 'de', target: str = 'en',
           size: str = 'small') -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = common.multi30k_task(source, target)
  c.model_name = 'transformer'
  c.model = common.transformer_model(
      share_embeddings=True,  # source, target and output embeddings tied (sec. 3.4)
      max_len=128,  # longest sentence the positions cover (Multi30k: 49 pieces + EOS)
  )
  c.eval.update(beam_size=4, length_penalty=0.6, average_checkpoints=5)  # sec. 6.1
  return common.finish(c, SIZES, size,
                       schedule='rsqrt', lr=1.0, warmup_steps=4_000, b1=0.9, b2=0.98, eps=1e-9,
                       label_smoothing=0.1, keep_checkpoints=5, eval_every=500,
                       **common.BUCKETED)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Both directions at each `size` ('+'-joined, e.g. small_select+small_long), `seeds` seeds
  each (default 3)."""
  arg = common.parse_arg(arg, size='small', seeds=3)
  return [{'config_arg': f'source={s},target={t},size={size}', 'seed': seed}
          for size in arg.size.split('+') for s, t in (('de', 'en'), ('en', 'de'))
          for seed in common.seeds(arg.seeds)]
