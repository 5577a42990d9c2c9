"""The optimizer of a run from config.train: optax clipping + optimizer(schedule).

Names are looked up in two registries (an unknown name raises ValueError listing the known ones):
  OPTIMIZERS: 'adam', 'adamw' (decoupled weight decay), 'sgd' (with momentum); Adam's b1, b2, eps
              from train.b1 / b2 / eps (defaults: optax's 0.9, 0.999, 1e-8; Vaswani et al. 2017,
              sec. 5.3: 0.9, 0.98, 1e-9).
  SCHEDULES:  'constant', 'cosine' (decays to 0 at train.steps), 'linear' (likewise), each after
              train.warmup_steps of linear warmup from 0; 'rsqrt', the inverse square root of
              Vaswani et al. (2017), eq. (3), with its own warmup (see `rsqrt_schedule`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax.numpy as jnp
import optax

from attention_zoo.registry import Registry

OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry('optimizer')
# schedule(train config, model config) -> lr(count), count = optimizer updates done so far
SCHEDULES: Registry[Callable[..., optax.Schedule]] = Registry('schedule')


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
  'constant' / 'cosine' / 'linear' after `cfg.warmup_steps` of linear warmup to `cfg.lr`, decaying
  until `cfg.steps`; or 'rsqrt' (Vaswani eq. 3, `cfg.lr` its scale)."""
  return SCHEDULES.get(cfg.schedule)(cfg, model)


def make_optimizer(cfg, model: Mapping[str, Any] | None = None) -> optax.GradientTransformation:
  """optax transform for config.train (optimizer, lr, schedule, warmup_steps, clip_norm, b1, b2,
  eps, ...); `model` is config.model (see `learning_rate`)."""
  tx = OPTIMIZERS.get(cfg.optimizer)(learning_rate(cfg, model), cfg)
  if cfg.clip_norm and cfg.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
  return tx
