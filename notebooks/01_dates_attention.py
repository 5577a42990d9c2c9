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
# # 1. Seq2seq, peeky, attention: date normalization
#
# The history in three models, on the zoo's date task ("tuesday, september 27, 1994",
# "27/09/1994", ... -> "1994-09-27"):
#
# 1. **seq2seq** (Sutskever et al. 2014; Cho et al. 2014): the LSTM encoder squeezes the whole
#    date into its last state, and the decoder starts from it.
# 2. **peeky** (Saito, *Deep Learning from Scratch 2*, ch. 7): that summary is fed to every
#    decoder step, not only the first.
# 3. **attention** (Bahdanau et al. 2015; Luong et al. 2015): every decoder step reads a weighted
#    mix of all encoder states, $c_t = \sum_k a_{t,k} h_k$, with
#    $a_{t,k} = \mathrm{softmax}_k\, v^\top \tanh(W_q q_t + W_k h_k)$ (the additive score).
#
# Only the third has an alignment to look at. The task knows the right one: each output digit
# comes from the year, the month or the day of the source (`Task.gold_alignment`). The
# **alignment accuracy** (`measures.argmax_in_gold`) is the share of output digits whose
# most-attended source character lies in that gold span.
#
# **What this notebook asserts:** the trained attention model's alignment accuracy is at least
# **0.6**, and at least 0.3 above the same model at initialization (its weights spread over the
# source, near chance). Runs are written under `runs/notebooks/` (or
# `$ATTENTION_ZOO_NOTEBOOK_RUNS`); a finished run is loaded, not trained again.

# %%
import pathlib
import sys

import numpy as np
from flax import nnx
from IPython.display import Image, display

import attention_zoo
from attention_zoo import build
from attention_zoo.analysis import load_run, maps, measure_run
from attention_zoo.data import pipeline

# notebooks/notebook_setup.py: the repository root (found through the installed package) as the
# working directory, SIZE and RUNS from the environment, treescope as the renderer; train() is the
# loop's train_and_evaluate (a finished run is read back, a stale one trained afresh).
sys.path.insert(0, str(pathlib.Path(attention_zoo.__file__).resolve().parents[1]))
from notebooks.notebook_setup import setup, train  # noqa: E402

ROOT, SIZE, RUNS = setup()
from configs import common, dates_demo  # noqa: E402

# %% [markdown]
# ## Train the three models
#
# The configs are the demo's (`configs/dates_demo.py`: LSTM, hidden 64, Adam 3e-3), with fewer
# examples and steps so that the three train in about a minute on a 2-core CPU (`make demo`
# trains them for 1,200 steps on 10,000 dates, 3 seeds each). `gen_exact_match` is the share of
# test dates whose greedy decoding is exactly right; `accuracy` is per character, teacher-forced
# (the right prefix given).

# %%
SIZES = {  # notebook size -> overrides of the demo config's sections
    'small': dict(task=dict(num_train=8_000, num_validation=256, num_test=256),
                  train=dict(steps=600)),
    # CI's: no greedy decoding (its compilation costs more than the training); the test metrics
    # are then teacher-forced only
    'tiny': dict(task=dict(num_train=2_000, num_validation=128, num_test=128),
                 train=dict(steps=400), eval=dict(generate=False)),
}
VARIANTS = {  # name -> the demo config's arg
    'seq2seq': 'family=seq2seq,score=none',
    'peeky': 'family=seq2seq,score=none,peeky=true',
    'attention': 'family=seq2seq,score=additive',
}


def dates_config(arg):
  c = dates_demo.get_config(arg)
  c.train.update(log_every=50, eval_every=0)  # validation once, at the end
  c.eval.batch_size = 128
  common.apply_size(c, SIZES[SIZE])
  c.train.update(checkpoint_every=c.train.steps, warmup_steps=c.train.steps // 10)
  return c


workdirs = {}
for name, arg in VARIANTS.items():
  workdirs[name] = RUNS / 'dates' / name
  results = train(dates_config(arg), workdirs[name])
  shown = {k: round(v, 3) for k, v in results['test'].items() if k != 'loss'}
  print(f'{name:10s} params {results["num_params"]:,}  test {shown}')

# %% [markdown]
# ## Look inside one checkpoint
#
# `load_run` rebuilds the model from the run's `config.json` and restores its parameters (never
# the optimizer). With `capture_weights=True` the attention layer sows its weights, which
# `maps.capture` collects by module path. treescope renders the module: click to unfold it.

# %%
config, model, task = load_run(workdirs['attention'], capture_weights=True)
nnx.display(model)

# %%
rows = np.arange(64)
batch = pipeline.read_rows(task.splits['validation'], rows)
weights = maps.capture(model, task, batch)
print({path: w.shape for path, w in weights.items()})  # [B, T target steps, S source positions]
for i in range(2):
  print(task.source_vocab.decode(batch['source'][i]), '->',
        task.vocab.decode(batch['target_out'][i]))

# %% [markdown]
# ## The alignment maps
#
# Rows: output characters; columns: input characters. The year digits should look at the
# year, the month digits at the month (a name or a number), the day digits at the day.

# %%
records = maps.plot_examples(model, task, batch, RUNS / 'dates' / 'maps', examples=2)
for record in records:
  display(Image(filename=record['file']))

# %% [markdown]
# ## Alignment accuracy, trained and untrained
#
# `measure_run.measure` computes every measure of a loaded model on a batch, against the task's
# gold alignment (`task.gold_alignment(split, rows)`). The control is the same architecture at
# its initialization (`build.build_model`, the run's seed): what the measure gives before any
# learning.

# %%
gold = task.gold_alignment('validation', rows)
print('gold spans of example 0, per output step:', [sorted(p) for p in gold[0].possible])
trained = measure_run.measure(model, task, batch, gold)['alignment']['by_attention']
fresh_config = config.copy_and_resolve_references()
fresh_config.model.capture_weights = True
untrained_model = build.build_model(fresh_config, task)
untrained = measure_run.measure(untrained_model, task, batch, gold)['alignment']['by_attention']
for label, found in (('trained', trained), ('untrained', untrained)):
  entry = found['attention_weights']
  print(f'{label:9s} alignment accuracy {entry["argmax_in_gold"][0]:.3f}  '
        f'gold mass {entry["gold_mass"][0]:.3f}  AER {entry["aer"][0]:.3f}')

# %% [markdown]
# The models without attention have no map: the measure says so instead of guessing.

# %%
_, plain, plain_task = load_run(workdirs['peeky'], capture_weights=True)
print(measure_run.measure(plain, plain_task, batch, gold)['alignment'])

# %% [markdown]
# ## The check
#
# A model whose attention did not learn where to look (a broken score, mask or gradient) stays
# near the untrained value and fails here.

# %%
accuracy = float(trained['attention_weights']['argmax_in_gold'][0])
chance = float(untrained['attention_weights']['argmax_in_gold'][0])
assert accuracy >= 0.6, f'alignment accuracy {accuracy:.3f} < 0.6'
assert accuracy - chance >= 0.3, f'trained {accuracy:.3f} vs untrained {chance:.3f}'
print(f'alignment accuracy {accuracy:.3f} (untrained {chance:.3f}): as the text says')
