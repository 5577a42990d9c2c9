"""What every config shares: `parse_arg` for "key=value,..." args; `base_config`, the loop's fields.

A task x model config starts from `base_config()` and sets task, model_name, model and a few
train fields; every field the loop reads is defined (and commented) here, once.
"""

from __future__ import annotations

import types
from typing import Any

import ml_collections
from ml_collections import config_dict


def _cast(key: str, value: str, default: Any) -> Any:
  if isinstance(default, bool):
    if value.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'arg {key!r}: expected true/false, got {value!r}')
    return value.lower() in ('true', '1')
  if default is None or isinstance(default, str):
    return value
  return type(default)(value)


def parse_arg(arg: str | None, **defaults: Any) -> types.SimpleNamespace:
  """Parses 'k1=v1,k2=v2' into a namespace over `defaults`, cast to each default's type.

  An unknown key raises ValueError listing the valid ones. Example:
    parse_arg('score=dot,size=tiny', score='additive', size='small').score == 'dot'
  """
  values = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    key = key.strip()
    if not sep:
      raise ValueError(f'config arg {item!r} is not key=value; valid keys: {sorted(defaults)}')
    if key not in defaults:
      raise ValueError(f'unknown config arg {key!r}; valid keys: {sorted(defaults)}')
    values[key] = _cast(key, value.strip(), defaults[key])
  return types.SimpleNamespace(**values)


def pick(name: str, value: str, table: dict[str, Any]) -> Any:
  """table[value], or ValueError naming the arg and its valid values (e.g. sizes)."""
  if value not in table:
    raise ValueError(f'config arg {name}={value!r}; valid values: {sorted(table)}')
  return table[value]


def base_config() -> ml_collections.ConfigDict:
  """The fields of one run, with defaults; task / model_name / model are set by each config."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # the one source of randomness: init, data order, dropout
  c.task = ml_collections.ConfigDict(dict(name=''))  # attention_zoo.data.get_task(config.task)
  c.model_name = ''  # attention_zoo.models registry name
  c.model = ml_collections.ConfigDict()  # **kwargs of the model constructor (plus task.model_dims)

  c.train = ml_collections.ConfigDict()  # the optimizer; when to log, evaluate, save
  c.train.steps = 1_000  # optimizer steps in total
  c.train.batch_size = 64  # global batch, split over all devices (a multiple of the device count)
  c.train.optimizer = 'adam'  # attention_zoo.train.optim.OPTIMIZERS: adam | adamw | sgd
  c.train.lr = 1e-3  # peak learning rate
  c.train.schedule = 'constant'  # SCHEDULES after warmup: constant | cosine | linear
  c.train.warmup_steps = 0  # linear warmup from 0 to lr
  c.train.clip_norm = 0.0  # global gradient-norm clipping; 0 = off
  c.train.weight_decay = 0.0  # adamw only
  c.train.momentum = 0.9  # sgd only; 0 = plain sgd
  c.train.log_every = 50  # write train metrics every N steps
  c.train.eval_every = 500  # validation (and decoded samples) every N steps; 0 = only at the end
  c.train.checkpoint_every = 500  # save every N steps (and always at the end)
  c.train.keep_checkpoints = 2  # keep the last N checkpoints

  c.eval = ml_collections.ConfigDict()  # evaluation of the validation / test splits
  c.eval.batch_size = 256  # batch for evaluation and generation
  c.eval.max_examples = 0  # evaluate on the first N examples of a split; 0 = all
  c.eval.generate = True  # seq2seq: greedy model.generate -> task.generation_metrics_fn ('gen_*')
  c.eval.num_samples = 3  # seq2seq: decoded samples written to samples.jsonl per evaluation
  return c


def apply_size(c: ml_collections.ConfigDict, size: dict[str, dict[str, Any]]) -> None:
  """Updates c.task / c.model / c.train / c.eval from one entry of a config's SIZES table."""
  for section, values in size.items():
    c[section].update(values)


def seeds(n: int = 3) -> range:
  """The seeds of a sweep (every variant runs with each, for error bars)."""
  return range(n)


def optional(kind: type) -> Any:
  """A field that is None by default and can be set from the command line to a `kind` value."""
  return config_dict.placeholder(kind)


def finish(c: ml_collections.ConfigDict, sizes: dict[str, dict[str, dict[str, Any]]], size: str,
           **train: Any) -> ml_collections.ConfigDict:
  """Sets the config's training fields, applies SIZES[size] on top, and caps the warmup at a
  tenth of the steps (so that small sizes still reach the peak learning rate)."""
  c.train.update(train)
  apply_size(c, pick('size', size, sizes))
  c.train.warmup_steps = min(c.train.warmup_steps, c.train.steps // 10)  # at most 10% of steps
  return c
