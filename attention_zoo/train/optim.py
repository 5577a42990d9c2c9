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
                                          restart_schedule [False]. The phase is one object,
                                          attention_zoo.train.start_phase.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from attention_zoo.registry import Registry
from attention_zoo.train import start_phase

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


def make_optimizer(cfg, model: Mapping[str, Any] | None = None) -> optax.GradientTransformation:
  """optax transform for config.train (optimizer, lr, schedule, warmup_steps, clip_norm, b1, b2,
  eps, ... and the optional fields of the module docstring); `model` is config.model (see
  `learning_rate`). Order: batch-cost scale, clipping, optimizer (with the start phase's lr)."""
  schedule = learning_rate(cfg, model)
  phase = cfg.get('start_phase')
  if phase:  # the optimizer at lr 1, scaled by the phase's lr, then the schedule's
    tx = optax.chain(OPTIMIZERS.get(cfg.optimizer)(1.0, cfg),
                     start_phase.scale_by_phase_lr(schedule, phase.lr))
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
