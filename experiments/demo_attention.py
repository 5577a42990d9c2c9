r"""Each score learns to align: a toy of the five attention scores, printed and drawn.

  python -m experiments.demo_attention --out=runs/attention_demo

Six keys are random vectors; the query for key j is a noisy, linearly distorted copy of it
(q = M k_j + noise), so no score aligns it out of the box. Each score (with its own parameters)
is trained with optax Adam for --steps steps to put its weight on the matching key, through the
dense kernel; then the weights [query x key] of every score are printed and saved as one PNG.
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

flags.DEFINE_string('out', 'runs/attention_demo', 'Output folder for the heatmap PNG.')
flags.DEFINE_integer('steps', 300, 'Adam steps per score.')
FLAGS = flags.FLAGS

N, D = 6, 8


def toy(seed: int = 0):
  rng = np.random.default_rng(seed)
  keys = rng.normal(size=(N, D)).astype(np.float32)
  distort = (np.eye(D) + 0.8 * rng.normal(size=(D, D))).astype(np.float32)
  queries = keys @ distort + 0.1 * rng.normal(size=(N, D)).astype(np.float32)
  return jnp.asarray(queries)[None, :, None], jnp.asarray(keys)[None, :, None]  # [1, N, 1, D]


def weights_of(score, q, k):
  return kernels.dense(score, q, k, k, return_weights=True)[1][0, 0]  # [Q, K]


def train_score(name: str, q, k, steps: int):
  score = scores.make_score(name, D, D, score_dim=16, rngs=nnx.Rngs(0))
  before = weights_of(score, q, k)
  if not jax.tree.leaves(nnx.state(score, nnx.Param)):
    return before, before  # dot and scaled_dot have nothing to learn
  opt = nnx.Optimizer(score, optax.adam(3e-2), wrt=nnx.Param)

  @nnx.jit
  def step(score, opt):
    loss, grads = nnx.value_and_grad(
        lambda s: -jnp.mean(jnp.log(jnp.diagonal(weights_of(s, q, k)) + 1e-9)))(score)
    opt.update(score, grads)
    return loss

  for _ in range(steps):
    step(score, opt)
  return before, weights_of(score, q, k)


def main(argv):
  del argv
  q, k = toy()
  names = scores.SCORES.names()
  fig, axes = plt.subplots(2, len(names), figsize=(3 * len(names), 6))
  for col, name in enumerate(names):
    before, after = train_score(name, q, k, FLAGS.steps)
    hits = int(np.sum(np.argmax(after, -1) == np.arange(N)))
    print(f'\n{name}: weight on the matching key, mean {float(jnp.mean(jnp.diagonal(after))):.3f} '
          f'(before training {float(jnp.mean(jnp.diagonal(before))):.3f}); argmax right for '
          f'{hits}/{N} queries')
    print(np.array2string(np.asarray(after), precision=2, suppress_small=True))
    for row, (w, tag) in enumerate(((before, 'initial'), (after, 'trained'))):
      ax = axes[row, col]
      ax.imshow(np.asarray(w), vmin=0, vmax=1, cmap='viridis')
      ax.set_title(f'{name} ({tag})')
      ax.set_xlabel('key')
      ax.set_ylabel('query')
  fig.tight_layout()
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.join(FLAGS.out, 'scores.png')
  fig.savefig(path, dpi=80)
  print(f'\nwrote {path}')


if __name__ == '__main__':
  app.run(main)
