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
# # 2. The memory network's hops on bAbI
#
# The end-to-end memory network (Sukhbaatar, Szlam, Weston & Fergus 2015) reads a story, one
# sentence per memory slot, with attention over the slots instead of a recurrent state. Each hop
# $k$ turns the question state $u^k$ into a distribution over the slots and reads them:
#
# $$p^k_i = \mathrm{softmax}_i\big((u^k)^\top m^k_i\big), \quad o^k = \sum_i p^k_i c^k_i, \quad
# u^{k+1} = u^k + o^k,$$
#
# and the answer is $\mathrm{softmax}(W(o^K + u^K))$. The paper's fig. 2 shows the hops landing
# on the question's *supporting facts*, which bAbI lists for every question. The zoo knows them
# too: `Task.gold_alignment` maps the supporting facts to the memory slots that hold them (after
# the memory keeps only the most recent sentences).
#
# The model is the paper's best bAbI 1k model, PE LS RN (position encoding, linear start, random
# noise), trained with its recipe (`configs/babi_memn2n.py`); task 1 ("single supporting fact")
# and, at the reader's size, task 2 ("two supporting facts"). Data: `$ATTENTION_ZOO_DATA/babi/en`.
#
# **What this notebook asserts:** on task 1, the share of validation questions whose
# most-attended memory is the supporting fact (`measures.argmax_in_gold`) is at least **0.8** at
# the last hop, where the untrained model's is at most 0.5; and the test accuracy is at least
# **0.9**.

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
from configs import babi_memn2n, common  # noqa: E402

# %% [markdown]
# ## Train
#
# `small` is the paper's recipe as the config has it: 20 epochs of linear start (no softmax over
# the memories), then 100 epochs of SGD, 28 steps an epoch. `tiny` (CI's) trains task 1 alone,
# for 5 + 15 epochs.

# %%
EPOCH = babi_memn2n.epoch_steps(1)  # steps of one epoch on one task
SIZES = {  # notebook size -> (bAbI tasks, overrides of the config's sections)
    'small': ((1, 2), {}),
    'tiny': ((1,), dict(train=dict(steps=20 * EPOCH, decay_every=5 * EPOCH, eval_every=0,
                                   checkpoint_every=20 * EPOCH,
                                   start_phase=dict(max_steps=5 * EPOCH)))),
}
TASKS, OVERRIDES = SIZES[SIZE]

workdirs, test_accuracy = {}, {}
for task_id in TASKS:
  config = babi_memn2n.get_config(f'task_id={task_id}')
  common.apply_size(config, OVERRIDES)
  workdirs[task_id] = RUNS / 'babi' / f'task{task_id}'
  results = train(config, workdirs[task_id])
  test_accuracy[task_id] = results['test']['accuracy']
  print(f'task {task_id}: test accuracy {test_accuracy[task_id]:.3f} '
        f'({results["num_params"]:,} params, {results["step"]} steps)')

# %% [markdown]
# ## Look inside: where each hop reads
#
# The model, loaded from its checkpoint with `capture_weights=True`, sows its memory attention
# `[B, hops, M]`. Below: one validation story, its sentences (the memory slots that hold one),
# each hop's weight on them, and `*` on the supporting facts.

# %%
config, model, task = load_run(workdirs[1], capture_weights=True)
nnx.display(model)

# %%
rows = np.arange(len(task.splits['validation']))
batch = pipeline.read_rows(task.splits['validation'], rows)
gold = task.gold_alignment('validation', rows)
weights = maps.capture(model, task, batch)['attention_weights']  # [B, hops, M]
print('memory attention', weights.shape)


def show_story(i):
  sentences = maps.axis_labels(task, batch, i)[weights.shape[-1]][1]
  print('question:', ' '.join(task.vocab.labels(batch['query'][i])),
        '| answer:', task.vocab.labels([batch['label'][i]])[0])
  print('  hops:', ' '.join(f'{k + 1:>5d}' for k in range(weights.shape[1])))
  for slot, sentence in enumerate(sentences):
    if sentence != '(empty)':
      mark = '*' if slot in gold[i].possible[0] else ' '
      print(f'{mark} slot {slot:2d}', ' '.join(f'{w:5.2f}' for w in weights[i, :, slot]),
            ' ', sentence)


show_story(0)

# %%
records = maps.plot_examples(model, task, batch, RUNS / 'babi' / 'maps', examples=1)
display(Image(filename=records[0]['file']))

# %% [markdown]
# ## Per hop, against the supporting facts
#
# `argmax_in_gold`: the share of questions whose most-attended slot holds a supporting fact;
# `gold_mass`: the weight on the supporting facts. The control is the same model at its
# initialization.

# %%
by_task = {}
for task_id, workdir in workdirs.items():
  found = measure_run.measure_workdir(workdir, num_examples=len(rows))
  by_task[task_id] = found['alignment']['by_attention']['attention_weights']
  print(f'task {task_id}: per hop, argmax in gold {by_task[task_id]["argmax_in_gold"]}, '
        f'gold mass {by_task[task_id]["gold_mass"]}')

fresh_config = config.copy_and_resolve_references()
fresh_config.model.capture_weights = True
untrained = measure_run.measure(build.build_model(fresh_config, task), task, batch, gold)
untrained = untrained['alignment']['by_attention']['attention_weights']
print('task 1, untrained: argmax in gold', np.round(untrained['argmax_in_gold'], 3))

# %% [markdown]
# ## The check

# %%
last_hop = float(by_task[1]['argmax_in_gold'][-1])
untrained_last = float(untrained['argmax_in_gold'][-1])
accuracy = float(test_accuracy[1])
assert last_hop >= 0.8, f'last hop on the supporting fact for {last_hop:.3f} < 0.8 of questions'
assert untrained_last <= 0.5, f'untrained model already on the fact: {untrained_last:.3f}'
assert accuracy >= 0.9, f'task 1 test accuracy {accuracy:.3f} < 0.9'
print(f'task 1: last hop on the supporting fact for {last_hop:.3f} of the questions '
      f'(untrained {untrained_last:.3f}); test accuracy {accuracy:.3f}')
