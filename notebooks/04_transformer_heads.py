# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. The Transformer's heads: maps, entropy, ablation, rollout
#
# The Transformer (Vaswani et al. 2017) runs several attention heads side by side in every
# layer: self-attention in the encoder and the decoder (causal there), and source-target
# attention from the decoder to the encoder. What do the heads do? Four ways to look, each a
# function of `attention_zoo.analysis.measures`, all computed at once by `measure_run.measure`:
#
# - **maps**: each head's weights $a_{q,k}$ [B, N, Q, K] (`maps.plot_examples`);
# - **entropy** per head, $H = -\sum_k a_{q,k} \log a_{q,k}$ averaged over queries (Clark et al.
#   2019): $\log K$ for uniform attention, 0 for one-hot; and for self-attention the mean
#   **distance** attended, $\sum_k a_{q,k} |q - k|$ (Vig & Belinkov 2019);
# - **ablation**: the drop of the metric when one head's output is zeroed (Michel, Levy & Neubig
#   2019, "Are sixteen heads really better than one?");
# - **rollout** (Abnar & Zuidema 2020): $\hat A_l = \mathrm{rows}(\tfrac12 \bar A_l + \tfrac12 I)$
#   multiplied through the layers, how much each input position flows into each position.
#
# On two models: a small Transformer on dates (the task knows where each output digit should
# look, so its source-target heads can be scored against the gold alignment), and a tiny one on
# Multi30k German -> English (`$ATTENTION_ZOO_DATA/multi30k`).
#
# **What this notebook asserts:** on dates, the best source-target head of the last decoder
# layer puts its largest weight on the gold span for at least **0.5** of the output digits, at
# least 0.15 more than the best head of the untrained model (about 0.3: the gold spans cover
# about a quarter of a date), and ablating the most important head costs at least **0.02** of
# token accuracy. On Multi30k, the
# masks hold in the measured weights: the decoder's self-attention gives exactly 0 to future
# positions, the source-target attention gives exactly 0 to padding, and each rollout row
# sums to 1.

# %%
import pathlib
import sys

import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from IPython.display import Image, display

import attention_zoo
from attention_zoo import build
from attention_zoo.analysis import load_run, maps, measure_run, measures
from attention_zoo.data import pipeline
from attention_zoo.specials import PAD

# notebooks/notebook_setup.py: the repository root (found through the installed package) as the
# working directory, SIZE and RUNS from the environment, treescope as the renderer; train() is the
# loop's train_and_evaluate (a finished run is read back, a stale one trained afresh).
sys.path.insert(0, str(pathlib.Path(attention_zoo.__file__).resolve().parents[1]))
from notebooks.notebook_setup import setup, train  # noqa: E402

ROOT, SIZE, RUNS = setup()
from configs import common, dates_transformer, multi30k_transformer  # noqa: E402

# %% [markdown]
# ## A Transformer on dates
#
# `configs/dates_transformer.py` (scaled dot-product attention, sinusoidal positions, Adam with
# a cosine schedule), made small: d_model 32, 4 heads, 2 + 2 layers.

# %%
MODEL = dict(d_model=32, num_heads=4, num_layers=2, ffn_dim=64, dropout_rate=0.0)
SIZES = {  # notebook size -> overrides of the dates config's sections
    'small': dict(task=dict(num_train=8_000, num_validation=256, num_test=256), model=MODEL,
                  train=dict(steps=1_000, batch_size=64, lr=3e-3, warmup_steps=100)),
    'tiny': dict(task=dict(num_train=2_000, num_validation=128, num_test=128), model=MODEL,
                 train=dict(steps=500, batch_size=64, lr=3e-3, warmup_steps=50),
                 eval=dict(generate=False)),
}
config = dates_transformer.get_config('score=scaled_dot')
common.apply_size(config, SIZES[SIZE])
config.train.update(log_every=50, eval_every=0, checkpoint_every=config.train.steps)
config.eval.batch_size = 128
dates_dir = RUNS / 'transformer' / 'dates'
results = train(config, dates_dir)
print('test', {k: round(v, 3) for k, v in results['test'].items()})

# %% [markdown]
# The loaded model, one source-target attention layer unfolded by treescope:

# %%
config, model, task = load_run(dates_dir, capture_weights=True)
nnx.display(model.decoder.layers[-1].cross_attn)

# %% [markdown]
# ### Measure everything on 64 validation dates

# %%
rows = np.arange(64)
batch = pipeline.read_rows(task.splits['validation'], rows)
captured = maps.capture(model, task, batch)
found = measure_run.measure(model, task, batch, task.gold_alignment('validation', rows),
                            captured=captured, examples=1)
print(f'{"layer":28s} {"role":14s} entropy per head (uniform)      distance per head')
for name, entry in found['attention'].items():
  distance = np.round(entry['distance'], 2) if 'distance' in entry else ''
  print(f'{name:28s} {entry["role"]:14s} {np.round(entry["entropy"], 2)} '
        f'({entry["uniform_entropy"]:.2f})  {distance}')

# %% [markdown]
# ### Maps: the last decoder layer's source-target heads
#
# Rows: output characters; columns: the date as written. Some heads find the field each digit
# comes from; others spread out.

# %%
out_dir = RUNS / 'transformer' / 'dates_maps'
records = maps.plot_examples(model, task, batch, out_dir, examples=1)
last_cross = f'decoder/layers/{len(model.decoder.layers) - 1}/cross_attn/attention_weights'
display(Image(filename=next(r['file'] for r in records if r['path'] == last_cross)))

# %% [markdown]
# ### Alignment against the gold, per head
#
# `argmax_in_gold` per head of each source-target layer, and of the heads' mean.

# %%
alignment = found['alignment']['by_attention']
for name, entry in alignment.items():
  print(f'{name:28s} per head {np.round(entry["argmax_in_gold"], 3)}  '
        f'heads mean {np.round(entry["heads_mean"]["argmax_in_gold"], 3)}')

# %% [markdown]
# ### Ablation: the token accuracy lost when one head is zeroed

# %%
importance = found['head_importance']
print(f'{importance["metric"]} with every head: {importance["base"]:.3f}')
for name, drop in importance['drop'].items():
  print(f'{name:28s} drop per head {np.round(drop, 3)}')

# %% [markdown]
# ### Rollout through the encoder
#
# How much each input character (columns) flows into each encoder output (rows) after the two
# self-attention layers and their residual paths.

# %%
rollout = found['rollout']['encoder/layers/*/self_attn']['examples'][0]
fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(np.asarray(rollout['matrix']), cmap='viridis')
ax.set_xticks(range(len(rollout['tokens'])), rollout['tokens'], fontsize=7)
ax.set_yticks(range(len(rollout['tokens'])), rollout['tokens'], fontsize=7)
ax.set_title('encoder rollout, one validation date')
plt.show()

# %% [markdown]
# ### The check on dates
#
# The control: the same architecture at its initialization (`build.build_model`, the run's
# seed), its source-target weights scored the same way.

# %%
last_layer = last_cross.rsplit('/', 1)[0]
fresh_config = config.copy_and_resolve_references()
fresh_config.model.capture_weights = True
untrained = maps.capture(build.build_model(fresh_config, task), task, batch)[last_cross]
gold = [a.possible for a in task.gold_alignment('validation', rows)]
untrained_best = float(np.max(measures.argmax_in_gold(untrained, gold)))
best_head = float(np.max(alignment[last_layer]['argmax_in_gold']))
top_drop = float(max(np.max(d) for d in importance['drop'].values()))
assert best_head >= 0.5, f'best head of {last_layer}: alignment accuracy {best_head:.3f} < 0.5'
assert best_head - untrained_best >= 0.15, (best_head, untrained_best)
assert top_drop >= 0.02, f'no head matters: the largest ablation drop is {top_drop:.3f}'
print(f'best source-target head: alignment accuracy {best_head:.3f} (untrained '
      f'{untrained_best:.3f}); largest ablation drop {top_drop:.3f}')

# %% [markdown]
# ## A tiny Transformer on Multi30k
#
# `configs/multi30k_transformer.py` at its `tiny` size (d_model 16, 2 heads, 1 + 1 layers, a
# joint 500-piece vocabulary), trained a little longer, on the same loop, with its label
# smoothing and rsqrt schedule (batches padded to one length here: one compiled step instead of
# one per length bucket). It translates nothing yet: here the point is the same look inside,
# and the masks.

# %%
M30K_STEPS = {'small': 300, 'tiny': 40}  # notebook size -> training steps
m30k = multi30k_transformer.get_config('size=tiny')
m30k.train.update(steps=M30K_STEPS[SIZE], warmup_steps=M30K_STEPS[SIZE] // 10, eval_every=0,
                  checkpoint_every=M30K_STEPS[SIZE], batching='padded')
m30k.eval.update(generate=False, average_checkpoints=1)
m30k_dir = RUNS / 'transformer' / 'multi30k'
results = train(m30k, m30k_dir)
print('test', {k: round(v, 3) for k, v in results['test'].items()})

# %%
m30k, m30k_model, m30k_task = load_run(m30k_dir, capture_weights=True)
m30k_batch = pipeline.read_rows(m30k_task.splits['validation'], np.arange(32))
m30k_weights = maps.capture(m30k_model, m30k_task, m30k_batch)
m30k_found = measure_run.measure(m30k_model, m30k_task, m30k_batch, captured=m30k_weights,
                                 examples=1)
for name, entry in m30k_found['attention'].items():
  print(f'{name:28s} {entry["role"]:14s} entropy {np.round(entry["entropy"], 2)} '
        f'(uniform {entry["uniform_entropy"]:.2f})')
print('ablation drops:', {k: np.round(v, 3) for k, v in
                          m30k_found['head_importance']['drop'].items()})
print(m30k_found['alignment']['note'])

# %%
records = maps.plot_examples(m30k_model, m30k_task, m30k_batch, RUNS / 'transformer' / 'm30k_maps',
                             examples=1)
display(Image(filename=next(r['file'] for r in records if 'cross_attn' in r['path'])))

# %% [markdown]
# ### The check on Multi30k: the masks, in the weights

# %%
self_w = m30k_weights['decoder/layers/0/self_attn/attention_weights']  # [B, N, T, T]
cross_w = m30k_weights['decoder/layers/0/cross_attn/attention_weights']  # [B, N, T, S]
future = np.triu(np.ones(self_w.shape[-2:], bool), k=1)  # [T, T]: key after query
padding = m30k_batch['source'] == PAD  # [B, S]
rollout = m30k_found['rollout']['encoder/layers/*/self_attn']['examples'][0]['matrix']
assert float(np.abs(self_w[..., future]).max()) == 0.0, 'the decoder looks ahead'
assert float(np.abs(cross_w * padding[:, None, None, :]).max()) == 0.0, 'weight on padding'
assert padding.any(), 'no padded source in the batch: the mask check would be empty'
np.testing.assert_allclose(np.sum(rollout, -1), 1.0, atol=1e-5)
print(f'future positions: max weight 0; padded source positions ({int(padding.sum())}): max '
      f'weight 0; rollout rows sum to 1')
