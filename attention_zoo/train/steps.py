"""The pure, jit-compiled steps: train_step, eval_step, generate; the state they carry; the losses.

The model lives as (graphdef, TrainState): params (nnx.Param), rngs (nnx.RngState, reseeded each
step from fold_in(seed, step), so never checkpointed) and other (e.g. BatchNorm statistics).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attention_zoo.data.base import Task
from attention_zoo.registry import choose
from attention_zoo.specials import PAD
from attention_zoo.train.state import TrainState, split_model  # noqa: F401  (re-exported)

Metrics = dict[str, jax.Array]


def rng_tags(rngs: nnx.State) -> tuple[str, ...]:
  """The names of the model's RNG streams (e.g. 'default', 'dropout')."""
  leaves = jax.tree.leaves(rngs, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return tuple(sorted({v.tag for v in leaves if isinstance(v, nnx.RngKey)}))


def init_state(model: nnx.Module, tx: optax.GradientTransformation,
               sharding) -> tuple[nnx.GraphDef, nnx.GraphDef, TrainState]:
  """-> (train-mode graphdef, eval-mode graphdef, TrainState at step 0 placed on `sharding`)."""
  model.eval()
  graphdef_eval = split_model(model)[0]
  model.train()
  graphdef_train, params, rngs, other = split_model(model)
  state = TrainState(jnp.asarray(0, jnp.int32), params, tx.init(params), rngs, other)
  return graphdef_train, graphdef_eval, jax.device_put(state, sharding)


# ---- losses: (logits, targets, example_mask, label_smoothing) -> (loss_sum, objective_sum, weight,
# accuracy_sum) per task kind. example_mask [B] is 1 for real examples, 0 for the rows that pad an
# evaluation batch. loss is the plain cross-entropy -log p(y); objective is what training
# minimizes: the cross-entropy against the label-smoothed target of Szegedy et al. (2016), sec. 7,
#   q'(k) = (1 - eps) [k = y] + eps / V,   objective = -sum_k q'(k) log p(k)
#         = (1 - eps) (-log p(y)) + eps · mean_k(-log p(k))          (V classes, PAD included)
# equal to loss when eps = 0. PAD targets (and padding rows) weigh 0 in both.
def _cross_entropies(logits: jax.Array, targets: jax.Array, label_smoothing: float):
  # logits [..., V], targets [...] -> (ce [...], smoothed ce [...])
  logits = logits.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  if not label_smoothing:
    return ce, ce
  smooth = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), label_smoothing)
  return ce, optax.softmax_cross_entropy(logits, smooth)


def _token_loss(logits: jax.Array, targets: jax.Array, example_mask: jax.Array,
                label_smoothing: float = 0.0):
  # logits [B, T, V], targets [B, T] with PAD = 0 masked out
  mask = (targets != PAD).astype(jnp.float32) * example_mask[:, None]
  ce, objective = _cross_entropies(logits, targets, label_smoothing)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return jnp.sum(ce * mask), jnp.sum(objective * mask), jnp.sum(mask), jnp.sum(correct * mask)


def _label_loss(logits: jax.Array, labels: jax.Array, example_mask: jax.Array,
                label_smoothing: float = 0.0):
  # logits [B, C], labels [B]
  ce, objective = _cross_entropies(logits, labels, label_smoothing)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return (jnp.sum(ce * example_mask), jnp.sum(objective * example_mask), jnp.sum(example_mask),
          jnp.sum(correct * example_mask))


LOSSES = {'seq2seq': _token_loss, 'lm': _token_loss, 'classify': _label_loss, 'qa': _label_loss}


def _forward(graphdef, params, rngs, other, task: Task, batch: dict, example_mask=None,
             label_smoothing: float = 0.0):
  """Runs the model -> (objective, (metrics, loss_sum, weight, rngs', other', logits)).

  The objective (differentiated in training) is the label-smoothed cross-entropy per target;
  metrics['loss'] is always the plain cross-entropy, so train and evaluation losses (and runs
  with and without smoothing) compare; with label_smoothing > 0, metrics['smoothed_loss'] is the
  objective.
  """
  model = nnx.merge(graphdef, params, rngs, other, copy=True)
  logits = model(*task.model_inputs(batch))
  targets = batch[task.target_key]
  if example_mask is None:
    example_mask = jnp.ones(targets.shape[:1], jnp.float32)
  loss_fn = choose(LOSSES, task.kind, 'task kind')
  loss_sum, objective_sum, weight, correct = loss_fn(logits, targets, example_mask,
                                                     label_smoothing)
  loss = loss_sum / jnp.maximum(weight, 1.0)
  objective = objective_sum / jnp.maximum(weight, 1.0)
  metrics = {'loss': loss, 'accuracy': correct / jnp.maximum(weight, 1.0)}
  if label_smoothing:
    metrics['smoothed_loss'] = objective
  if task.metrics_fn is not None:
    metrics.update(task.metrics_fn(logits, batch))
  _, _, new_rngs, other = split_model(model)
  return objective, (metrics, loss_sum, weight, new_rngs, other, logits)


def per_example_metrics(task: Task, logits: jax.Array, batch: dict) -> Metrics:
  """task.metrics_fn of each example on its own -> {name: [B]} (a batch mean of one example)."""
  if task.metrics_fn is None:
    return {}
  one = lambda l, b: task.metrics_fn(l[None], jax.tree.map(lambda x: x[None], b))
  return jax.vmap(one)(logits, batch)


def applied_lr(opt_state, scheduled: jax.Array) -> jax.Array:
  """start_phase.applied_lr, imported when a train step is built (start_phase builds on this
  module's TrainState)."""
  from attention_zoo.train import start_phase  # pylint: disable=import-outside-toplevel
  return start_phase.applied_lr(opt_state, scheduled)


def make_train_step(graphdef: nnx.GraphDef, task: Task, tx: optax.GradientTransformation,
                    tags: tuple[str, ...], lr_fn: Callable[[jax.Array], jax.Array], *,
                    label_smoothing: float = 0.0) -> Callable[..., Any]:
  """train_step(state, batch, seed_key) -> (state, metrics); pure, to be jitted, state donated.

  The gradient is that of the label-smoothed cross-entropy (train.label_smoothing; see _forward),
  metrics['loss'] the plain cross-entropy.

  seed_key = jax.random.key(config.seed) is an argument, not a constant of the program, so runs
  that differ only in their seed compile to the same program and share the compilation cache.
  """

  def train_step(state: TrainState, batch: dict,
                 seed_key: jax.Array) -> tuple[TrainState, Metrics]:
    key = jax.random.fold_in(seed_key, state.step)  # dropout etc. of this step
    rngs = state.rngs
    if tags:
      model = nnx.merge(graphdef, state.params, state.rngs, state.other, copy=True)
      nnx.reseed(model, policy='match_shape',
                 **{t: jax.random.fold_in(key, i) for i, t in enumerate(tags)})
      _, _, rngs, _ = split_model(model)
    grad_fn = jax.value_and_grad(_forward, argnums=1, has_aux=True)
    (_, (metrics, _, _, new_rngs, other, _)), grads = grad_fn(
        graphdef, state.params, rngs, state.other, task, batch, None, label_smoothing)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                   lr=applied_lr(opt_state, lr_fn(state.step)))
    return TrainState(state.step + 1, params, opt_state, new_rngs, other), metrics

  return train_step


def flat_step(train_step: Callable[..., Any], treedef) -> Callable[..., Any]:
  """train_step over the TrainState's leaves: (leaves, batch, seed_key) -> (leaves, metrics).

  A compiled call flattens its arguments in Python; a TrainState is hundreds of nnx.Variable
  nodes (for the demo's Transformer), a cost paid on the core that also computes the step where
  XLA runs single-threaded; a flat list of arrays avoids it.
  """

  def step(leaves, batch, seed_key):
    state, metrics = train_step(jax.tree.unflatten(treedef, leaves), batch, seed_key)
    return jax.tree.leaves(state), metrics

  return step


def compile_train_step(graphdef: nnx.GraphDef, task: Task, tx: optax.GradientTransformation,
                       lr_fn: Callable[[jax.Array], jax.Array], state: TrainState, batch: dict,
                       seed_key: jax.Array, sharding, *, label_smoothing: float = 0.0,
                       over_seeds: Callable[[Callable[..., Any]], Callable[..., Any]] = (
                           lambda step: step)) -> tuple[Callable[..., Any], list, Any]:
  """-> (step, the state's leaves, its treedef): step(leaves, batch, seed_key) -> (leaves,
  metrics) is train_step over the leaves (see flat_step), compiled for these shapes, the leaves
  donated and the new ones placed on `sharding`. over_seeds: runs the single run's step over a
  leading seed axis of the state, batch and key (train.seeds.SeedAxis.over; default: none)."""
  leaves, treedef = jax.tree.flatten(state)
  train_step = make_train_step(graphdef, task, tx, rng_tags(state.rngs), lr_fn,
                               label_smoothing=label_smoothing)
  step_fn = jax.jit(flat_step(over_seeds(train_step), treedef), donate_argnums=0,
                    out_shardings=sharding)
  return step_fn.lower(leaves, batch, seed_key).compile(), leaves, treedef


def make_eval_step(graphdef: nnx.GraphDef, task: Task) -> Callable[..., Metrics]:
  """eval_step(params, rngs, other, batch, example_mask [B]) -> sums over the real examples.

  Returns {'loss_sum', 'weight', 'correct', 'count'} and, per task metric, the sum of its
  per-example values; rows with example_mask 0 (padding of a last batch) count for nothing, so
  every batch of a split can have the same shape and compile once.
  """

  def eval_step(params, rngs, other, batch, example_mask):
    _, (metrics, loss_sum, weight, _, _, logits) = _forward(graphdef, params, rngs, other, task,
                                                            batch, example_mask)
    sums = {k: jnp.sum(v * example_mask)
            for k, v in per_example_metrics(task, logits, batch).items()}
    return dict(sums, loss_sum=loss_sum, weight=weight, correct=metrics['accuracy'] * weight,
                count=jnp.sum(example_mask))

  return eval_step


def make_generate(graphdef: nnx.GraphDef, max_len: int, beam_size: int = 1,
                  length_penalty: float = 0.6) -> Callable[..., jax.Array]:
  """generate(params, rngs, other, source [B, S]) -> tokens [B, max_len]: greedy (beam_size 1)
  or model.generate's beam search with the GNMT length penalty alpha = `length_penalty`."""
  beam = {} if beam_size == 1 else {'length_penalty': length_penalty}  # greedy: no alpha

  def generate(params, rngs, other, source):
    model = nnx.merge(graphdef, params, rngs, other, copy=True)
    return model.generate(source, max_len=max_len, beam_size=beam_size, **beam)

  return generate


def all_finite(tree: Any) -> jax.Array:
  """True when every float leaf of `tree` is finite (one bool, for the NaN guard)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
