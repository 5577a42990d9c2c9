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

from attention_zoo.models import registry
from attention_zoo.train import loop, steps


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: is {workdir} the workdir of a run?')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_run(workdir: str | pathlib.Path, step: int | None = None, *,
             capture_weights: bool = False):
  """-> (config, model in eval mode with the params of `step` (default: latest), task).

  capture_weights=True rebuilds the model with that option (when the model has it), so that its
  attention / SE weights are sown (read them with nnx.capture(model, nnx.Intermediate)).
  """
  workdir = pathlib.Path(workdir).absolute()
  config = load_config(workdir)
  task = loop.get_task(config)
  build_config = config
  if capture_weights and 'capture_weights' in registry.constructor_params(config.model_name):
    build_config = ml_collections.ConfigDict(config.to_dict())
    build_config.model.capture_weights = True
  model = loop.build_model(build_config, task)
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
