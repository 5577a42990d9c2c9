"""What the loop calls at its events, so that a phase of training stays with what it changes.

A hook has three methods, each returning the new TrainState or None (unchanged); says whether
after_step must be called (`active`: the loop rebuilds the state for it); and says why it cannot
run over several seeds in one program (`seed_group`, None: it can):
  on_start(state)                      after initialization or a restore
  after_step(step, state)              after each train step (a host-side check: keep it cheap)
  after_validation(step, state, metrics)   after each validation during training
HOOKS maps a config.train key to the hook class built from the config and the train graphdef;
every hook is built for every run (a hook whose key is unset checks that nothing needs it).
"""

from __future__ import annotations

from typing import Protocol

import ml_collections
from flax import nnx

from attention_zoo.train import start_phase
from attention_zoo.train.state import TrainState


class Hook(Protocol):
  seed_group: str | None
  active: bool

  def on_start(self, state: TrainState) -> TrainState | None: ...

  def after_step(self, step: int, state: TrainState) -> TrainState | None: ...

  def after_validation(self, step: int, state: TrainState,
                       metrics: dict[str, float]) -> TrainState | None: ...


HOOKS = {'start_phase': start_phase.StartPhase}


def make_hooks(config: ml_collections.ConfigDict, graphdef: nnx.GraphDef) -> list[Hook]:
  return [make(config, graphdef) for make in HOOKS.values()]


def seed_group_blockers(config: ml_collections.ConfigDict) -> list[str]:
  """Why the hooks `config` sets cannot train several seeds as one program ([]: they can)."""
  return [h.seed_group for key, h in HOOKS.items()
          if config.train.get(key) and h.seed_group is not None]
