"""The optimizer of a run from config.train: optax clipping + optimizer(schedule).

Names are looked up in two registries (an unknown name raises ValueError listing the known ones):
  OPTIMIZERS: 'adam', 'adamw' (decoupled weight decay), 'sgd' (with momentum)
  SCHEDULES:  'constant', 'cosine' (decays to 0 at train.steps), 'linear' (likewise); each after
              train.warmup_steps of linear warmup from 0.
"""

from __future__ import annotations

from typing import Callable

import optax

from attention_zoo.registry import Registry

OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry('optimizer')
SCHEDULES: Registry[Callable[..., optax.Schedule]] = Registry('schedule')


@OPTIMIZERS.register('adam')
def _adam(lr: optax.ScalarOrSchedule, cfg) -> optax.GradientTransformation:
  return optax.adam(lr)


@OPTIMIZERS.register('adamw')
def _adamw(lr: optax.ScalarOrSchedule, cfg) -> optax.GradientTransformation:
  return optax.adamw(lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register('sgd')
def _sgd(lr: optax.ScalarOrSchedule, cfg) -> optax.GradientTransformation:
  return optax.sgd(lr, momentum=cfg.momentum or None, nesterov=False)


@SCHEDULES.register('constant')
def _constant(peak: float, decay_steps: int) -> optax.Schedule:
  return optax.constant_schedule(peak)


@SCHEDULES.register('cosine')
def _cosine(peak: float, decay_steps: int) -> optax.Schedule:
  return optax.cosine_decay_schedule(peak, max(decay_steps, 1))


@SCHEDULES.register('linear')
def _linear(peak: float, decay_steps: int) -> optax.Schedule:
  return optax.linear_schedule(peak, 0.0, max(decay_steps, 1))


def learning_rate(cfg) -> optax.Schedule:
  """lr(step): `cfg.warmup_steps` of linear warmup to `cfg.lr`, then `cfg.schedule` until
  `cfg.steps`."""
  decay = SCHEDULES.get(cfg.schedule)(cfg.lr, cfg.steps - cfg.warmup_steps)
  if cfg.warmup_steps <= 0:
    return decay
  warmup = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
  return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def make_optimizer(cfg) -> optax.GradientTransformation:
  """optax transform for config.train (optimizer, lr, schedule, warmup_steps, clip_norm, ...)."""
  tx = OPTIMIZERS.get(cfg.optimizer)(learning_rate(cfg), cfg)
  if cfg.clip_norm and cfg.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
  return tx
