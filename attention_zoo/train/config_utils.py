"""Configs as data: JSON form, flat keys, differences, overrides (sweeps) and resume checks."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Mapping

import ml_collections


def to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON data (what config.json holds)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'train': {'lr': 1}} -> {'train.lr': 1}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping) and value:
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
  """Dotted keys whose values differ between two config dicts (missing on one side included)."""
  fa, fb = flatten(a), flatten(b)
  return sorted(k for k in set(fa) | set(fb) if fa.get(k, '<missing>') != fb.get(k, '<missing>'))


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A locked copy of `config` with {'model.score': 'dot', 'seed': 1, ...} applied.

  An unknown key raises an error naming it and the nearest valid keys (ml_collections' message).
  """
  new = copy.deepcopy(config)
  new.lock()
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split('.')
    node = new
    for part in parents:
      node = getattr(node, part)
    setattr(node, leaf, value)
  return new


def _uses_batch_tokens(config: ml_collections.ConfigDict) -> bool:
  """train.batching=bucketed with train.batch_tokens > 0 sizes its batches itself (multiples of
  the device count), ignoring train.batch_size."""
  tc = config.train
  return tc.get('batching') == 'bucketed' and (tc.get('batch_tokens') or 0) > 0


def _size(value: Any, *_) -> bool:
  """A size: an integer >= 1."""
  return isinstance(value, int) and value >= 1


def _rate(value: Any, *_) -> bool:
  """A rate (a probability of dropping, of noise): in [0, 1)."""
  return 0.0 <= value < 1.0


def _divides_d_model(value: Any, config: ml_collections.ConfigDict, _) -> bool:
  """num_heads divides d_model (a bad size of either is the _size rows' to report)."""
  d_model = config.model.get('d_model')
  return not (_size(value) and _size(d_model)) or d_model % value == 0


# (dotted key, predicate(value, config, device_count) -> bool, what the value must be). Each row
# is checked by check_values before a run starts; a key absent from a config is not checked.
CHECKS: tuple[tuple[str, Callable[[Any, Any, int], bool], str], ...] = (
    ('train.steps', lambda v, c, d: v >= 1, 'must be >= 1'),
    ('train.batch_size', lambda v, c, d: v >= 1, 'must be >= 1'),
    ('train.batch_size', lambda v, c, d: v % d == 0 or _uses_batch_tokens(c),
     'must be a multiple of the global device count ({devices}), which splits each batch'),
    ('train.lr', lambda v, c, d: v >= 0, 'must be >= 0'),
    ('train.warmup_steps', lambda v, c, d: v >= 0, 'must be >= 0'),
    ('train.log_every', lambda v, c, d: v >= 1, 'must be >= 1'),
    ('train.eval_every', lambda v, c, d: v >= 0, 'must be >= 0 (0: only at the end)'),
    ('train.checkpoint_every', lambda v, c, d: v >= 1, 'must be >= 1'),
    ('train.keep_checkpoints', lambda v, c, d: v >= 1, 'must be >= 1'),
    ('train.label_smoothing', _rate, 'must be in [0, 1)'),
    ('train.clip_norm', lambda v, c, d: v >= 0, 'must be >= 0 (0: off)'),
    ('train.weight_decay', lambda v, c, d: v >= 0, 'must be >= 0'),
    ('eval.batch_size', lambda v, c, d: v >= 1, 'must be >= 1'),
    ('eval.max_examples', lambda v, c, d: v >= 0, 'must be >= 0 (0: all)'),
    ('eval.beam_size', _size, 'must be an integer >= 1 (1: greedy)'),
    ('eval.select_mode', lambda v, c, d: v in ('max', 'min'), "must be 'max' or 'min'"),
    # The model sizes and rates the families share (each family's options dataclass checks them
    # again, with the rules only it knows, when the model is built: after the dataset is).
    ('model.hidden', _size, 'must be an integer >= 1'),
    ('model.d_model', _size, 'must be an integer >= 1'),
    ('model.num_heads', _size, 'must be an integer >= 1'),
    ('model.num_heads', _divides_d_model, 'must divide model.d_model'),
    ('model.num_layers', _size, 'must be an integer >= 1'),
    ('model.ffn_dim', _size, 'must be an integer >= 1'),
    ('model.embed_dim', _size, 'must be an integer >= 1'),
    ('model.encoder_hidden', _size, 'must be an integer >= 1 (None: the style\'s default)'),
    ('model.readout_dim', _size, 'must be an integer >= 1 (None: the default)'),
    ('model.score_dim', _size, 'must be an integer >= 1 (None: the default)'),
    ('model.max_len', _size, 'must be an integer >= 1'),
    ('model.hops', _size, 'must be an integer >= 1'),
    ('model.dropout_rate', _rate, 'must be in [0, 1)'),
    ('model.attention_dropout_rate', _rate, 'must be in [0, 1)'),
    ('model.random_noise', _rate, 'must be in [0, 1)'),
)


def check_values(config: ml_collections.ConfigDict, device_count: int) -> None:
  """Raises ValueError naming every key of CHECKS whose value is out of range (a value of the
  wrong type, e.g. a string, counts as out of range). train_and_evaluate calls it before it
  touches the workdir or builds the dataset, so a bad value leaves nothing behind and costs
  nothing. The model rows hold the sizes and rates every family shares; the rules only one
  family knows (names of scores / kernels / cells, seq2seq's wiring, a ResNet's widths) stay in
  its options dataclass or constructor, checked when the model is built.

  Example: train.steps=-5 -> "config value out of range: train.steps=-5 must be >= 1".
  """
  flat = flatten(to_dict(config))
  bad = []
  for key, ok, rule in CHECKS:
    if key not in flat or flat[key] is None:
      continue
    value = flat[key]
    try:
      good = not isinstance(value, bool) and bool(ok(value, config, device_count))
    except TypeError:
      good = False
    if not good:
      bad.append(f'{key}={value!r} {rule.format(devices=device_count)}')
  if bad:
    raise ValueError('config value out of range: ' + '; '.join(bad))
