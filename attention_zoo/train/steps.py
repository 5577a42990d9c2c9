"""The pure, jit-compiled steps: train_step, eval_step, generate; the state they carry; the losses.

The model lives as (graphdef, TrainState): params (nnx.Param), rngs (nnx.RngState, reseeded each
step from fold_in(seed, step), so never checkpointed) and other (e.g. BatchNorm statistics).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attention_zoo.data.base import PAD, Task
from attention_zoo.registry import Registry

Metrics = dict[str, jax.Array]


class TrainState(NamedTuple):
  step: jax.Array  # int32 scalar: optimizer steps done
  params: nnx.State  # nnx.Param
  opt_state: optax.OptState
  rngs: nnx.State  # nnx.RngState
  other: nnx.State  # every other variable (BatchStat, ...)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State, nnx.State]:
  """model -> (graphdef, params, rngs, other); sown intermediates are dropped."""
  graphdef, params, rngs, _, other = nnx.split(
      model, nnx.Param, nnx.RngState, nnx.Intermediate, ...)
  return graphdef, params, rngs, other


def rng_tags(rngs: nnx.State) -> tuple[str, ...]:
  """The names of the model's RNG streams (e.g. 'default', 'dropout')."""
  leaves = jax.tree.leaves(rngs, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return tuple(sorted({v.tag for v in leaves if isinstance(v, nnx.RngKey)}))


# ---- losses: (logits, targets) -> (loss_sum, weight, accuracy_sum) per task kind ----------------
LOSSES: Registry[Callable[..., tuple[jax.Array, jax.Array, jax.Array]]] = Registry('loss kind')


def _token_loss(logits: jax.Array, targets: jax.Array):
  # logits [B, T, V], targets [B, T] with PAD = 0 masked out
  mask = (targets != PAD).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return jnp.sum(ce * mask), jnp.sum(mask), jnp.sum(correct * mask)


def _label_loss(logits: jax.Array, labels: jax.Array):
  # logits [B, C], labels [B]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return jnp.sum(ce), jnp.asarray(labels.shape[0], jnp.float32), jnp.sum(correct)


for _kind, _fn in (('seq2seq', _token_loss), ('lm', _token_loss),
                   ('classify', _label_loss), ('qa', _label_loss)):
  LOSSES.register(_kind)(_fn)


def _forward(graphdef, params, rngs, other, task: Task, batch: dict):
  """Runs the model; returns (loss, metrics, rngs', other')."""
  model = nnx.merge(graphdef, params, rngs, other, copy=True)
  logits = model(*task.model_inputs(batch))
  loss_sum, weight, correct = LOSSES.get(task.kind)(logits, batch[task.target_key])
  loss = loss_sum / jnp.maximum(weight, 1.0)
  metrics = {'loss': loss, 'accuracy': correct / jnp.maximum(weight, 1.0)}
  if task.metrics_fn is not None:
    metrics.update(task.metrics_fn(logits, batch))
  _, _, new_rngs, other = split_model(model)
  return loss, (metrics, loss_sum, weight, new_rngs, other)


def make_train_step(graphdef: nnx.GraphDef, task: Task, tx: optax.GradientTransformation,
                    seed: int, tags: tuple[str, ...],
                    lr_fn: Callable[[jax.Array], jax.Array]) -> Callable[..., Any]:
  """train_step(state, batch) -> (state, metrics); pure, to be jitted with the state donated."""
  base_key = jax.random.key(seed)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, Metrics]:
    key = jax.random.fold_in(base_key, state.step)  # dropout etc. of this step
    rngs = state.rngs
    if tags:
      model = nnx.merge(graphdef, state.params, state.rngs, state.other, copy=True)
      nnx.reseed(model, policy='match_shape',
                 **{t: jax.random.fold_in(key, i) for i, t in enumerate(tags)})
      _, _, rngs, _ = split_model(model)
    grad_fn = jax.value_and_grad(_forward, argnums=1, has_aux=True)
    (_, (metrics, _, _, new_rngs, other)), grads = grad_fn(
        graphdef, state.params, rngs, state.other, task, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads), lr=lr_fn(state.step))
    return TrainState(state.step + 1, params, opt_state, new_rngs, other), metrics

  return train_step


def make_eval_step(graphdef: nnx.GraphDef, task: Task) -> Callable[..., Metrics]:
  """eval_step(params, rngs, other, batch) -> {'loss_sum', 'weight', 'correct', task metrics}."""

  def eval_step(params, rngs, other, batch):
    _, (metrics, loss_sum, weight, _, _) = _forward(graphdef, params, rngs, other, task, batch)
    metrics = dict(metrics, loss_sum=loss_sum, weight=weight,
                   correct=metrics['accuracy'] * weight)
    return metrics

  return eval_step


def make_generate(graphdef: nnx.GraphDef, max_len: int) -> Callable[..., jax.Array]:
  """generate(params, rngs, other, source [B, S]) -> greedy tokens [B, max_len]."""

  def generate(params, rngs, other, source):
    model = nnx.merge(graphdef, params, rngs, other, copy=True)
    return model.generate(source, max_len=max_len, beam_size=1)

  return generate


def all_finite(tree: Any) -> jax.Array:
  """True when every float leaf of `tree` is finite (one bool, for the NaN guard)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
