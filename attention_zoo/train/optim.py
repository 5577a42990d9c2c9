"""The optimizer of a run from config.train: [batch-cost scale] + clipping + optimizer(schedule).

Names are looked up in registries (an unknown name raises ValueError listing the known ones):
  OPTIMIZERS: 'adam', 'adamw' (decoupled weight decay), 'sgd' (with momentum); Adam's b1, b2, eps
              from train.b1 / b2 / eps (defaults: optax's 0.9, 0.999, 1e-8; Vaswani et al. 2017,
              sec. 5.3: 0.9, 0.98, 1e-9).
  SCHEDULES:  'constant', 'cosine' (decays to 0 at train.steps), 'linear' (likewise), 'step'
              (lr · train.decay_factor^floor(count / train.decay_every), a staircase), each after
              train.warmup_steps of linear warmup from 0; 'rsqrt', the inverse square root of
              Vaswani et al. (2017), eq. (3), with its own warmup (see `rsqrt_schedule`).
  CLIPS:      train.clip_scope: 'global' (the global norm of all gradients, the default) or
              'matrix' (each weight matrix on its own, see `clip_each_matrix`), at train.clip_norm.

Optional fields, read only where a config sets them (absent: the default in brackets):
  train.decay_every, train.decay_factor   the 'step' schedule's period (updates) and factor.
  train.clip_scope ['global']             see CLIPS.
  train.batch_cost ['mean']               'sum': the gradient of the cost summed over the batch,
                                          i.e. batch_size x that of the mean the steps
                                          differentiate, before clipping (Sukhbaatar et al. 2015,
                                          sec. 4.2: "cost is not averaged over a batch").
  train.start_phase [None]                {lr, patience, max_steps, restart_schedule}: a start
                                          phase (the memory network's linear start) during
                                          which the lr is start_phase.lr; the schedule applies
                                          after it, continuing its count, or from count 0 with
                                          restart_schedule [False]. See `scale_by_phase_lr`;
                                          the loop ends the phase.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from attention_zoo.registry import Registry

OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry('optimizer')
# schedule(train config, model config) -> lr(count), count = optimizer updates done so far
SCHEDULES: Registry[Callable[..., optax.Schedule]] = Registry('schedule')
# clip(max_norm) -> the transformation that clips gradients (train.clip_scope)
CLIPS: Registry[Callable[[float], optax.GradientTransformation]] = Registry('clip scope')


@OPTIMIZERS.register('adam')
def _adam(lr: optax.ScalarOrSchedule, cfg) -> optax.GradientTransformation:
  return optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)


@OPTIMIZERS.register('adamw')
def _adamw(lr: optax.ScalarOrSchedule, cfg) -> optax.GradientTransformation:
  return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register('sgd')
def _sgd(lr: optax.ScalarOrSchedule, cfg) -> optax.GradientTransformation:
  return optax.sgd(lr, momentum=cfg.momentum or None, nesterov=False)


def _after_warmup(cfg, decay: optax.Schedule) -> optax.Schedule:
  """`cfg.warmup_steps` of linear warmup from 0 to `cfg.lr`, then `decay`."""
  if cfg.warmup_steps <= 0:
    return decay
  warmup = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
  return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


@SCHEDULES.register('constant')
def _constant(cfg, model: Mapping[str, Any] | None) -> optax.Schedule:
  return _after_warmup(cfg, optax.constant_schedule(cfg.lr))


@SCHEDULES.register('cosine')
def _cosine(cfg, model: Mapping[str, Any] | None) -> optax.Schedule:
  return _after_warmup(cfg, optax.cosine_decay_schedule(cfg.lr,
                                                         max(cfg.steps - cfg.warmup_steps, 1)))


@SCHEDULES.register('linear')
def _linear(cfg, model: Mapping[str, Any] | None) -> optax.Schedule:
  return _after_warmup(cfg, optax.linear_schedule(cfg.lr, 0.0,
                                                   max(cfg.steps - cfg.warmup_steps, 1)))


@SCHEDULES.register('step')
def _step(cfg, model: Mapping[str, Any] | None) -> optax.Schedule:
  """lr(count) = lr · decay_factor^floor(count / decay_every) (e.g. Sukhbaatar et al. 2015,
  sec. 4.2: 0.01, halved every 25 epochs)."""
  for name in ('decay_every', 'decay_factor'):
    if cfg.get(name) is None:
      raise ValueError(f"schedule 'step' needs train.{name}")
  if cfg.decay_every <= 0:
    raise ValueError(f'train.decay_every must be > 0, got {cfg.decay_every}')
  return _after_warmup(cfg, optax.exponential_decay(
      cfg.lr, transition_steps=cfg.decay_every, decay_rate=cfg.decay_factor, staircase=True))


def rsqrt_schedule(scale: float, dim: int, warmup_steps: int) -> optax.Schedule:
  """Vaswani et al. (2017), eq. (3), "Attention is all you need", sec. 5.3:

    lr(n) = scale · d^-0.5 · min(n^-0.5, n · warmup^-1.5),   n = 1, 2, ... (step_num)

  linear warmup for `warmup_steps` updates to the peak scale · (d · warmup)^-0.5, then decay as
  n^-0.5 (the paper: scale 1, d = d_model = 512, warmup 4000). optax calls a schedule with
  count = the updates done so far (0 for the first), so lr(count) is the formula at
  n = count + 1: the first update gets scale · d^-0.5 · warmup^-1.5, not 0. warmup_steps <= 0
  gives the formula's limit, scale · d^-0.5 · n^-0.5 (no warmup).
  """
  if dim <= 0:
    raise ValueError(f'rsqrt schedule: the model dimension must be > 0, got {dim}')

  def schedule(count):
    n = jnp.asarray(count, jnp.float32) + 1.0  # step_num of the paper
    decay = n ** -0.5
    if warmup_steps > 0:
      decay = jnp.minimum(decay, n * float(warmup_steps) ** -1.5)
    return scale * float(dim) ** -0.5 * decay

  return schedule


@SCHEDULES.register('rsqrt')
def _rsqrt(cfg, model: Mapping[str, Any] | None) -> optax.Schedule:
  """train.lr is the scale; d is train.rsqrt_dim, else config.model.d_model."""
  dim = cfg.rsqrt_dim
  if dim is None:
    dim = model.get('d_model') if model is not None else None
  if dim is None:
    raise ValueError('schedule rsqrt needs a model dimension: set train.rsqrt_dim, or '
                     'model.d_model (taken when train.rsqrt_dim is None)')
  return rsqrt_schedule(cfg.lr, int(dim), cfg.warmup_steps)


def learning_rate(cfg, model: Mapping[str, Any] | None = None) -> optax.Schedule:
  """lr(count) of config.train `cfg` (`model`: config.model, read by 'rsqrt' for d_model):
  'constant' / 'cosine' / 'linear' (decaying until `cfg.steps`) / 'step' (halvings, see the module
  docstring) after `cfg.warmup_steps` of linear warmup to `cfg.lr`; or 'rsqrt' (Vaswani eq. 3,
  `cfg.lr` its scale)."""
  return SCHEDULES.get(cfg.schedule)(cfg, model)


@CLIPS.register('global')
def _clip_global(max_norm: float) -> optax.GradientTransformation:
  return optax.clip_by_global_norm(max_norm)


@CLIPS.register('matrix')
def clip_each_matrix(max_norm: float) -> optax.GradientTransformation:
  """Clips the gradient of each weight matrix on its own: G <- G · min(1, max_norm / ||G||_F).

  Sukhbaatar et al. (2015) clip at 40 and, in the authors' MATLAB code (nn/Weight.m), each weight
  matrix separately. A matrix is the last two axes of a parameter (leading axes index stacked
  matrices, e.g. the memory network's [hops + 1, V, E] embedding tables); a vector is one.
  """

  def clip(g: jax.Array) -> jax.Array:
    axes = tuple(range(max(g.ndim - 2, 0), g.ndim))
    norm = jnp.sqrt(jnp.sum(jnp.square(g), axis=axes, keepdims=True))
    return g * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30))

  return optax.stateless(lambda updates, params=None: jax.tree.map(clip, updates))


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
  -lr, so this equals it run with this lr). The phase starts on; the loop ends it
  (`end_start_phase`, `after_validation`). The schedule counts every update, those of the phase
  included: after the phase it continues, unless the phase ends with `restart=True`, which sets
  the count to 0 (the authors' code of Sukhbaatar et al. 2015 runs its full schedule after LS)."""

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


def start_phase(opt_state) -> StartPhaseState | None:
  """The StartPhaseState inside `opt_state` (None: the optimizer has no start phase)."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_phase) if _is_phase(s)]
  return found[0] if found else None


def _replace_phase(opt_state, **fields):
  return jax.tree.map(lambda s: s._replace(**fields) if _is_phase(s) else s, opt_state,
                      is_leaf=_is_phase)


def end_start_phase(opt_state, restart: bool = False):
  """`opt_state` with its start phase ended: the lr follows the schedule from the next update,
  at its count so far, or from count 0 with `restart`."""
  if restart:
    return _replace_phase(opt_state, on=jnp.asarray(False), count=jnp.asarray(0, jnp.int32))
  return _replace_phase(opt_state, on=jnp.asarray(False))


def after_validation(opt_state, loss: float, patience: int,
                     restart: bool = False) -> tuple[Any, bool]:
  """Records a validation loss in the start phase -> (opt_state, whether the phase ends now).

  The phase ends when `patience` validations in a row (patience > 0) bring no loss below the
  lowest one seen in it: "when the validation loss stopped decreasing" (Sukhbaatar et al. 2015,
  sec. 4.2), with patience 1 the first validation that does not decrease it.
  """
  phase = start_phase(opt_state)
  if phase is None or not bool(phase.on):
    return opt_state, False
  best, stale = float(phase.best), int(phase.stale)
  best, stale = (loss, 0) if loss < best else (best, stale + 1)
  ends = patience > 0 and stale >= patience
  opt_state = _replace_phase(opt_state, best=jnp.asarray(best, jnp.float32),
                             stale=jnp.asarray(stale, jnp.int32))
  return (end_start_phase(opt_state, restart) if ends else opt_state), ends


def applied_lr(opt_state, scheduled: jax.Array) -> jax.Array:
  """The lr of the update that gave `opt_state`: `scheduled` (the schedule's, lr_fn(step)),
  unless the optimizer has a start phase, which records the lr it applied."""
  phase = start_phase(opt_state)
  return scheduled if phase is None else phase.lr


def make_optimizer(cfg, model: Mapping[str, Any] | None = None) -> optax.GradientTransformation:
  """optax transform for config.train (optimizer, lr, schedule, warmup_steps, clip_norm, b1, b2,
  eps, ... and the optional fields of the module docstring); `model` is config.model (see
  `learning_rate`). Order: batch-cost scale, clipping, optimizer (with the start phase's lr)."""
  schedule = learning_rate(cfg, model)
  phase = cfg.get('start_phase')
  if phase:
    tx = optax.chain(OPTIMIZERS.get(cfg.optimizer)(1.0, cfg), scale_by_phase_lr(schedule,
                                                                                 phase.lr))
  else:
    tx = OPTIMIZERS.get(cfg.optimizer)(schedule, cfg)
  if cfg.clip_norm and cfg.clip_norm > 0:
    tx = optax.chain(CLIPS.get(cfg.clip_scope)(cfg.clip_norm), tx)
  batch_cost = cfg.batch_cost
  if batch_cost not in ('mean', 'sum'):
    raise ValueError(f"train.batch_cost must be 'mean' or 'sum', got {batch_cost!r}")
  if batch_cost == 'sum':
    tx = optax.chain(optax.scale(float(cfg.batch_size)), tx)
  return tx
