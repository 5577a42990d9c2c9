"""Load a finished (or running) run for analysis: config, model with restored params, task.

Only params (and non-trainable model state such as BatchNorm statistics) are restored, never the
optimizer state; the model is rebuilt from the run's config.json.

  config, model, task = load_run('runs/dates')
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from attention_zoo.train import loop, steps


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: is {workdir} the workdir of a run?')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_run(workdir: str | pathlib.Path, step: int | None = None):
  """-> (config, model in eval mode with the params of `step` (default: latest), task)."""
  workdir = pathlib.Path(workdir).absolute()
  config = load_config(workdir)
  task = loop.get_task(config)
  model = loop.build_model(config, task)
  model.eval()
  _, params, _, other = steps.split_model(model)
  ckpt_dir = workdir / 'checkpoints'
  with ocp.CheckpointManager(ckpt_dir) as manager:
    available = list(manager.all_steps())
    step = manager.latest_step() if step is None else step
    if step is None or step not in available:
      raise FileNotFoundError(f'no checkpoint for step {step} in {ckpt_dir}; steps: {available}')
    items = dict(params=ocp.args.StandardRestore(params))
    if jax.tree.leaves(other):
      items['other'] = ocp.args.StandardRestore(other)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  nnx.update(model, restored['params'])
  if 'other' in items:
    nnx.update(model, restored['other'])
  return config, model, task


def set_capture(model: nnx.Module, capture: bool = True) -> nnx.Module:
  """Switches weight capture (attention weights, SE channel weights) on every submodule."""
  for _, module in model.iter_modules():
    if hasattr(module, 'capture_weights'):
      module.capture_weights = capture
  return model
