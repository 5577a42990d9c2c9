"""orbax checkpoints of a run: params, optimizer state and other model state as separate items.

Layout: <workdir>/checkpoints/<step>/{params, opt_state, other, meta}. `params` and `other` are
enough to rebuild the model for analysis (see `load_params`); `meta` is JSON ({'step': ...}).
`average_params` gives the mean parameters of several checkpoints (eval.average_checkpoints).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


def _has_leaves(tree: Any) -> bool:
  return bool(jax.tree.leaves(tree))


def _restore(manager: ocp.CheckpointManager, step: int, **trees) -> tuple[Any, ...]:
  """The items `trees` names of checkpoint `step`, restored onto those trees (abstract or
  concrete, keeping their types and shardings); a tree without leaves comes back as given."""
  items = {k: ocp.args.StandardRestore(t) for k, t in trees.items() if _has_leaves(t)}
  out = manager.restore(step, args=ocp.args.Composite(**items))
  return tuple(out[k] if k in items else t for k, t in trees.items())


class Checkpoints:
  """Saves and restores (params, opt_state, other) of a TrainState; keeps the last `keep`."""

  def __init__(self, directory: str | pathlib.Path, keep: int):
    self.directory = pathlib.Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max(keep, 1), create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, params, opt_state, other) -> None:
    items = dict(params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
                 meta=ocp.args.JsonSave({'step': int(step)}))
    if _has_leaves(other):
      items['other'] = ocp.args.StandardSave(other)
    self.manager.save(step, args=ocp.args.Composite(**items))

  def restore(self, step: int, params, opt_state, other) -> tuple[Any, Any, Any]:
    """Restores onto abstract (or concrete) trees, keeping their types and shardings."""
    return _restore(self.manager, step, params=params, opt_state=opt_state, other=other)

  def close(self) -> None:
    self.manager.close()


def load_params(checkpoint_dir: str | pathlib.Path, params, other=None, *,
                step: int | None = None) -> tuple[Any, Any]:
  """-> (params, other) of checkpoint `step` (default: the latest) of a run's checkpoints/, never
  the optimizer state; restored onto the trees `params` and `other` (abstract or concrete, e.g.
  nnx.state(nnx.eval_shape(lambda: build_model(config, task)), nnx.Param)). `other` (the model's
  other state, e.g. BatchNorm statistics) is returned as given when it is None or has no leaves.
  """
  checkpoint_dir = pathlib.Path(checkpoint_dir).absolute()
  with ocp.CheckpointManager(checkpoint_dir) as manager:
    available = list(manager.all_steps())
    step = manager.latest_step() if step is None else step
    if step is None or step not in available:
      raise FileNotFoundError(f'no checkpoint for step {step} in {checkpoint_dir}; '
                              f'steps: {available}')
    return _restore(manager, step, params=params, other=other)


def saved_steps(checkpoint_dir: str | pathlib.Path) -> list[int]:
  """The steps of the checkpoints in a run's checkpoints/, ascending."""
  with ocp.CheckpointManager(pathlib.Path(checkpoint_dir).absolute()) as manager:
    return sorted(manager.all_steps())


def average_params(checkpoint_dir: str | pathlib.Path, params, steps: list[int]) -> Any:
  """The mean of the params of checkpoints `steps`: theta = (1/N) sum_i theta_i, leaf by leaf.

  Checkpoint averaging of the final model (Vaswani et al. 2017, sec. 6.1: the last 5 checkpoints,
  written every 10 minutes, for the base models). Restored onto `params` (abstract or concrete);
  the sum runs in float32 (then cast back); a leaf that is not floating point is taken from the
  last step. Only params are averaged: the caller keeps the other model state (e.g. BatchNorm
  statistics) of the last step.
  """
  if not steps:
    raise ValueError(f'average_params: no checkpoint steps given for {checkpoint_dir}')
  trees = [load_params(checkpoint_dir, params, step=s)[0] for s in steps]

  def mean(*leaves):
    if not jnp.issubdtype(leaves[-1].dtype, jnp.floating):
      return leaves[-1]
    total = sum(leaf.astype(jnp.float32) for leaf in leaves)
    return (total / len(leaves)).astype(leaves[-1].dtype)

  return jax.tree.map(mean, *trees)
