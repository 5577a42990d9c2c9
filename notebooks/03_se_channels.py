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
# # 3. Squeeze-and-excitation: channel weights per class and depth
#
# Attention need not pick positions: a squeeze-and-excitation block (Hu, Shen & Sun 2018,
# eq. 2-4) weighs the *channels* of a feature map $x$ [B, height, width, C]:
#
# $$z = \mathrm{mean}_{\text{space}}\, x, \qquad s = \sigma\big(W_2\, \mathrm{ReLU}(W_1 z)\big),
# \qquad y = x \odot s,$$
#
# a gate per channel computed from the whole image. Hu et al. (sec. 6.4, fig. 6) report that
# the excitations $s$ are nearly the same for every class in early layers and become
# class-specific with depth. The zoo measures that claim with `measures.se_selectivity`: per
# block, with $\mu_{y,c}$ the mean excitation of channel $c$ over the images of class $y$,
#
# $$\mathrm{sel} = \mathrm{mean}_c\, \frac{\mathrm{Var}_y(\mu_{y,c})}{\mathrm{mean}_y(\mu_{y,c})},$$
#
# 0 when every class gets the same mean excitation.
#
# The model is `se_resnet_small` (three stages of one basic block each, 8 / 16 / 32 channels, SE
# on every residual branch) on MNIST digits (`configs/mnist_resnet.py`; data:
# `$ATTENTION_ZOO_DATA/mnist-t10k`).
#
# **What this notebook asserts:** after training, the last SE block's selectivity is at least
# **5 times** the first block's, and at least 20 times the last block's at initialization (where
# the excitations hardly depend on the image); the test accuracy is at least **0.4** (ten
# classes: chance is 0.1; CI's 150 steps reach about 0.57, the reader's 600 more).

# %%
import pathlib
import sys

import numpy as np
from flax import nnx
from IPython.display import Image, display

import attention_zoo
from attention_zoo import build
from attention_zoo.analysis import load_run, maps, measures
from attention_zoo.data import pipeline

# notebooks/notebook_setup.py: the repository root (found through the installed package) as the
# working directory, SIZE and RUNS from the environment, treescope as the renderer; train() is the
# loop's train_and_evaluate (a finished run is read back, a stale one trained afresh).
sys.path.insert(0, str(pathlib.Path(attention_zoo.__file__).resolve().parents[1]))
from notebooks.notebook_setup import setup, train  # noqa: E402

ROOT, SIZE, RUNS = setup()
from configs import common, mnist_resnet  # noqa: E402

# %% [markdown]
# ## Train
#
# SGD with momentum and a cosine schedule, as the config has it, for fewer steps than its
# `small` size (2,000), evaluated on part of the validation and test images.

# %%
SIZES = {  # notebook size -> overrides of the config's sections
    'small': dict(train=dict(steps=600, batch_size=64, warmup_steps=60),
                  eval=dict(max_examples=1_000)),
    'tiny': dict(train=dict(steps=150, batch_size=32, warmup_steps=15),
                 eval=dict(max_examples=256)),
}
config = mnist_resnet.get_config('model=se_resnet_small')
common.apply_size(config, SIZES[SIZE])
config.train.update(log_every=50, eval_every=0, checkpoint_every=config.train.steps)
workdir = RUNS / 'mnist' / 'se_resnet_small'
results = train(config, workdir)
print(f'test accuracy {results["test"]["accuracy"]:.3f}, {results["num_params"]:,} params')

# %% [markdown]
# ## Look inside: the SE blocks
#
# Loaded with `capture_weights=True`, each `SqueezeExcite` sows its channel weights $s$ [B, C].

# %%
config, model, task = load_run(workdir, capture_weights=True)
nnx.display(model.blocks[0].se)

# %%
rows = np.arange(512)
batch = pipeline.read_rows(task.splits['validation'], rows)
se = {path: w for path, w in maps.capture(model, task, batch).items()
      if path.endswith('se_weights')}
print({path: w.shape for path, w in se.items()})

# %% [markdown]
# The mean excitation per class (rows: digits 0-9; columns: channels), one panel per block,
# as in Hu et al.'s fig. 6. Early blocks: every row alike; the last block: rows differ.

# %%
record = maps.plot_se_per_class(se, batch['label'], RUNS / 'mnist' / 'se_per_class.png')
display(Image(filename=record['file']))

# %% [markdown]
# ## Selectivity per block, trained and untrained

# %%
fresh_config = config.copy_and_resolve_references()
fresh_config.model.capture_weights = True
untrained_model = build.build_model(fresh_config, task)
untrained_model.eval()
se_untrained = {path: w for path, w in maps.capture(untrained_model, task, batch).items()
                if path.endswith('se_weights')}
selectivity = {path: measures.se_selectivity(w, batch['label']) for path, w in se.items()}
selectivity_untrained = {path: measures.se_selectivity(w, batch['label'])
                         for path, w in se_untrained.items()}
for path in se:
  print(f'{path:28s} trained {selectivity[path]:.5f}   untrained '
        f'{selectivity_untrained[path]:.5f}')

# %% [markdown]
# ## The check

# %%
first, last = list(se)[0], list(se)[-1]
accuracy = float(results['test']['accuracy'])
assert selectivity[last] >= 5 * selectivity[first], (selectivity[first], selectivity[last])
assert selectivity[last] >= 20 * selectivity_untrained[last], \
    (selectivity[last], selectivity_untrained[last])
assert accuracy >= 0.4, f'test accuracy {accuracy:.3f} < 0.4'
print(f'last block {selectivity[last]:.5f} = {selectivity[last] / selectivity[first]:.0f} x the '
      f'first block; {selectivity[last] / selectivity_untrained[last]:.1f} x untrained; '
      f'test accuracy {accuracy:.3f}')
