r"""The `alignment` section of the benchmark: can each score learn to align? A toy, drawn.

  python -m experiments.bench alignment [--steps=300] [--out=runs/alignment]

Six keys are random vectors; the query for key j is a noisy, linearly distorted copy of it
(q = M k_j + noise), so no score aligns it out of the box. Each registered score (with its own
parameters) is trained with optax Adam for --steps steps to put its weight on the matching key,
through the dense kernel. The table gives, per score, its parameter count, the mean weight on the
matching key before and after training, and for how many queries that key has the largest
weight; the weights [query x key] of every score, before and after, are saved as one PNG.
Scores without parameters (dot, scaled_dot) have nothing to learn: their rows show what a fixed
similarity does with the distortion.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from attention_zoo.attention import kernels, scores

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

flags.DEFINE_string('out', 'runs/alignment', 'Output folder for the heatmap PNG.')
flags.DEFINE_integer('steps', 300, 'Adam steps per score.')
FLAGS = flags.FLAGS

N, D = 6, 8


def toy(seed: int = 0):
  """-> (queries, keys), each [1, N, 1, D]: query j is a noisy, distorted copy of key j."""
  rng = np.random.default_rng(seed)
  keys = rng.normal(size=(N, D)).astype(np.float32)
  distort = (np.eye(D) + 0.8 * rng.normal(size=(D, D))).astype(np.float32)
  queries = keys @ distort + 0.1 * rng.normal(size=(N, D)).astype(np.float32)
  return jnp.asarray(queries)[None, :, None], jnp.asarray(keys)[None, :, None]  # [1, N, 1, D]


def weights_of(score, q, k):
  """The dense kernel's weights [Q, K] of `score` (batch 0, head 0)."""
  return kernels.dense(score, q, k, k, return_weights=True)[1][0, 0]  # [Q, K]


def train_score(name: str, q, k, steps: int):
  """-> (score, its weights [Q, K] before training, after) for score `name` on the toy."""
  score = scores.make_score(name, D, D, score_dim=16, rngs=nnx.Rngs(0))
  before = weights_of(score, q, k)
  if not jax.tree.leaves(nnx.state(score, nnx.Param)):
    return score, before, before  # dot and scaled_dot have nothing to learn
  opt = nnx.Optimizer(score, optax.adam(3e-2), wrt=nnx.Param)

  @nnx.jit
  def step(score, opt):
    loss, grads = nnx.value_and_grad(
        lambda s: -jnp.mean(jnp.log(jnp.diagonal(weights_of(s, q, k)) + 1e-9)))(score)
    opt.update(score, grads)
    return loss

  for _ in range(steps):
    step(score, opt)
  return score, before, weights_of(score, q, k)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  q, k = toy()
  names = scores.SCORES.names()
  fig, axes = plt.subplots(2, len(names), figsize=(3 * len(names), 6), squeeze=False)
  rows = []
  for col, name in enumerate(names):
    score, before, after = train_score(name, q, k, FLAGS.steps)
    hits = int(np.sum(np.argmax(after, -1) == np.arange(N)))
    params = sum(x.size for x in jax.tree.leaves(nnx.state(score, nnx.Param)))
    rows.append((name, params, float(jnp.mean(jnp.diagonal(before))),
                 float(jnp.mean(jnp.diagonal(after))), hits))
    print(f'\n{name}: trained weights [query x key]')
    print(np.array2string(np.asarray(after), precision=2, suppress_small=True))
    for row, (w, tag) in enumerate(((before, 'initial'), (after, 'trained'))):
      ax = axes[row, col]
      ax.imshow(np.asarray(w), vmin=0, vmax=1, cmap='viridis')
      ax.set_title(f'{name} ({tag})')
      ax.set_xlabel('key')
      ax.set_ylabel('query')
  print(f'\n{FLAGS.steps} Adam steps per score; weight on the matching key, mean over {N} '
        f'queries (chance: 1/{N})')
  print('| score | parameters | initial | trained | argmax right |')
  print('|---|---|---|---|---|')
  for name, params, first, last, hits in rows:
    print(f'| {name} | {params} | {first:.3f} | {last:.3f} | {hits}/{N} |')
  fig.tight_layout()
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.join(FLAGS.out, 'scores.png')
  fig.savefig(path, dpi=80)
  print(f'\nwrote {path}')
