"""Configs as data: JSON form, flat keys, differences, overrides (sweeps) and resume checks."""

from __future__ import annotations

import copy
import json
from typing import Any, Mapping

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
