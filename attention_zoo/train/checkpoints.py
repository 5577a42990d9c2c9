"""orbax checkpoints of a run: params, optimizer state and other model state as separate items.

Layout: <workdir>/checkpoints/<step>/{params, opt_state, other, meta}. `params` alone is enough to
rebuild the model for analysis (see `load_params`); `meta` is JSON ({'step': ...}).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


def _has_leaves(tree: Any) -> bool:
  return bool(jax.tree.leaves(tree))


class Checkpoints:
  """Saves and restores (params, opt_state, other) of a TrainState; keeps the last `keep`."""

  def __init__(self, directory: str | pathlib.Path, keep: int):
    self.directory = pathlib.Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max(keep, 1), create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, params, opt_state, other) -> None:
    items = dict(params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
                 meta=ocp.args.JsonSave({'step': int(step)}))
    if _has_leaves(other):
      items['other'] = ocp.args.StandardSave(other)
    self.manager.save(step, args=ocp.args.Composite(**items))

  def restore(self, step: int, params, opt_state, other) -> tuple[Any, Any, Any]:
    """Restores onto abstract (or concrete) trees, keeping their types and shardings."""
    items = dict(params=ocp.args.StandardRestore(params),
                 opt_state=ocp.args.StandardRestore(opt_state))
    if _has_leaves(other):
      items['other'] = ocp.args.StandardRestore(other)
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    return out['params'], out['opt_state'], (out['other'] if _has_leaves(other) else other)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def load_params(checkpoint_dir: str | pathlib.Path, abstract_params, step: int | None = None):
  """Params alone (no optimizer state) from a run's checkpoints/, onto `abstract_params`.

  `abstract_params`: e.g. nnx.state(nnx.eval_shape(lambda: build(...)), nnx.Param).
  """
  with ocp.CheckpointManager(pathlib.Path(checkpoint_dir).absolute()) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {checkpoint_dir}')
    out = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
    return out['params']
