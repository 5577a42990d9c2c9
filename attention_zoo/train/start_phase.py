"""A start phase: the first part of training, in which the model and the lr differ, ended on a
validation plateau or after a number of steps. One object, called by the loop as a hook.

Sukhbaatar et al. (2015), sec. 4.2, linear start (LS): "the softmax in each memory layer is
removed ... When the validation loss stopped decreasing, the softmax layers were re-inserted and
training recommenced." config.train.start_phase = {lr, patience, max_steps, restart_schedule}
(absent or None: no phase). Three parts, all here:
  - the model's switch: a model with a phase has `start_phase`, a bool nnx.Variable (True during
    the phase; models.memory.MemN2N with linear_start), set False when the phase ends;
  - the optimizer's lr: start_phase.lr during the phase, then the schedule, continuing its count
    or from count 0 with restart_schedule (`scale_by_phase_lr`, a transformation of
    train.optim.make_optimizer, whose state StartPhaseState is checkpointed with the optimizer's);
  - the rule that ends it: `patience` validations in a row (every train.eval_every steps) without
    a new lowest validation loss (patience 0: never), or `max_steps` steps (0: no limit),
    whichever comes first.
The flags and the lowest loss live in the checkpointed state, and a validation runs before the
checkpoint of its step, so a resumed run ends the phase where an uninterrupted one does. A config
with a start phase and a model without one ends it at step 0 (the schedule's lr).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax import nnx

from attention_zoo.train.state import TrainState, split_model


class StartPhaseState(NamedTuple):
  """The optimizer's record of a start phase (checkpointed with the optimizer state)."""
  on: jax.Array  # bool []: in the start phase, whose lr is train.start_phase.lr
  best: jax.Array  # float32 []: the lowest validation loss seen in it (inf: none yet)
  stale: jax.Array  # int32 []: validations since that lowest one
  count: jax.Array  # int32 []: updates done (the schedule's count)
  lr: jax.Array  # float32 []: the lr of the latest update (0 before any)


def scale_by_phase_lr(schedule: optax.Schedule, start_lr: float) -> optax.GradientTransformation:
  """updates · lr, lr = start_lr while the start phase is on, else schedule(count): the last
  transformation of an optimizer built with lr 1 (every optax optimizer ends by scaling with
  -lr, so this equals it run with this lr). The phase starts on; `StartPhase` ends it. The
  schedule counts every update, those of the phase included: after the phase it continues,
  unless the phase ends with `restart=True`, which sets the count to 0 (the authors' code of
  Sukhbaatar et al. 2015 runs its full schedule after LS)."""

  def init(params):
    del params
    return StartPhaseState(jnp.asarray(True), jnp.asarray(jnp.inf, jnp.float32),
                           jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32),
                           jnp.asarray(0.0, jnp.float32))

  def update(updates, state, params=None):
    del params
    lr = jnp.where(state.on, start_lr, schedule(state.count)).astype(jnp.float32)
    updates = jax.tree.map(lambda u: (lr * u).astype(u.dtype), updates)
    return updates, state._replace(count=state.count + 1, lr=lr)

  return optax.GradientTransformation(init, update)


def _is_phase(x) -> bool:
  return isinstance(x, StartPhaseState)


def phase_state(opt_state) -> StartPhaseState | None:
  """The StartPhaseState inside `opt_state` (None: the optimizer has no start phase)."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_phase) if _is_phase(s)]
  return found[0] if found else None


def _replace_phase(opt_state, **fields):
  return jax.tree.map(lambda s: s._replace(**fields) if _is_phase(s) else s, opt_state,
                      is_leaf=_is_phase)


def end(opt_state, restart: bool = False):
  """`opt_state` with its start phase ended: the lr follows the schedule from the next update,
  at its count so far, or from count 0 with `restart`."""
  if restart:
    return _replace_phase(opt_state, on=jnp.asarray(False), count=jnp.asarray(0, jnp.int32))
  return _replace_phase(opt_state, on=jnp.asarray(False))


def record_validation(opt_state, loss: float, patience: int,
                      restart: bool = False) -> tuple[Any, bool]:
  """Records a validation loss in the start phase -> (opt_state, whether the phase ends now).

  The phase ends when `patience` validations in a row (patience > 0) bring no loss below the
  lowest one seen in it: "when the validation loss stopped decreasing" (Sukhbaatar et al. 2015,
  sec. 4.2), with patience 1 the first validation that does not decrease it.
  """
  phase = phase_state(opt_state)
  if phase is None or not bool(phase.on):
    return opt_state, False
  best, stale = float(phase.best), int(phase.stale)
  best, stale = (loss, 0) if loss < best else (best, stale + 1)
  ends = patience > 0 and stale >= patience
  opt_state = _replace_phase(opt_state, best=jnp.asarray(best, jnp.float32),
                             stale=jnp.asarray(stale, jnp.int32))
  return (end(opt_state, restart) if ends else opt_state), ends


def applied_lr(opt_state, scheduled: jax.Array) -> jax.Array:
  """The lr of the update that gave `opt_state`: `scheduled` (the schedule's, lr_fn(step)),
  unless the optimizer has a start phase, which records the lr it applied."""
  phase = phase_state(opt_state)
  return scheduled if phase is None else phase.lr


class StartPhase:
  """The loop's hook (attention_zoo.train.hooks.Hook) for config.train.start_phase."""

  seed_group = 'train.start_phase is set: each seed would end its start phase at its own step'

  def __init__(self, config: ml_collections.ConfigDict, graphdef: nnx.GraphDef):
    self.cfg = config.train.get('start_phase') or None
    self.graphdef = graphdef
    self.on = False
    if self.cfg is not None and self.cfg.patience > 0 and config.train.eval_every <= 0:
      raise ValueError(f'train.start_phase.patience={self.cfg.patience} needs validations: set '
                       'train.eval_every > 0')

  @property
  def active(self) -> bool:
    return self.on

  def _model_on(self, state: TrainState) -> bool:
    model = nnx.merge(self.graphdef, state.params, state.rngs, state.other, copy=True)
    return hasattr(model, 'start_phase') and bool(model.start_phase[...])

  def _end(self, state: TrainState, step: int) -> TrainState:
    """`state` with the phase ended in the optimizer and in the model."""
    model = nnx.merge(self.graphdef, state.params, state.rngs, state.other, copy=True)
    if hasattr(model, 'start_phase'):
      model.start_phase[...] = jnp.zeros_like(model.start_phase[...])
    logging.info('start phase ended at step %d', step)
    self.on = False
    opt_state = end(state.opt_state, self.cfg.get('restart_schedule', False))
    return state._replace(opt_state=opt_state, other=split_model(model)[3])

  def on_start(self, state: TrainState) -> TrainState | None:
    """After initialization or a restore: whether the phase is on; ends it at once for a model
    without one. ValueError when the model has a phase that nothing would end."""
    model_on = self._model_on(state)
    phase = phase_state(state.opt_state)
    if phase is None:
      if model_on:
        raise ValueError('the model has a start phase (e.g. the memory network\'s linear start) '
                         'but config.train.start_phase is not set: nothing would end it')
      return None
    self.on = bool(phase.on)
    if self.on and not model_on:
      return self._end(state, 0)
    return None

  def after_step(self, step: int, state: TrainState) -> TrainState | None:
    if self.on and 0 < self.cfg.max_steps <= step:
      return self._end(state, step)
    return None

  def after_validation(self, step: int, state: TrainState,
                       metrics: dict[str, float]) -> TrainState | None:
    if not self.on:
      return None
    opt_state, ends = record_validation(state.opt_state, metrics['loss'], self.cfg.patience)
    state = state._replace(opt_state=opt_state)
    return self._end(state, step) if ends else state
