"""Load a finished (or running) run for analysis: config, model with restored params, task.

Only params (and non-trainable model state such as BatchNorm statistics) are restored, never the
optimizer state; the model is rebuilt from the run's config.json.

  config, model, task = load_run('runs/dates')
"""

from __future__ import annotations

import pathlib

import ml_collections
from flax import nnx

from attention_zoo import build
from attention_zoo.train import checkpoints, steps
from attention_zoo.train import workdir as wd


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  path = pathlib.Path(workdir) / wd.CONFIG
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist: is {workdir} the workdir of a run?')
  return ml_collections.ConfigDict(wd.read_json(path))


def load_run(workdir: str | pathlib.Path, step: int | None = None, *,
             capture_weights: bool = False):
  """-> (config, model in eval mode with the params of `step` (default: latest), task).

  capture_weights=True rebuilds the model with that option (when the model has it: when one of
  its modules sows weights, it has a `capture_weights` attribute), so that its attention / SE
  weights are sown (read them with attention_zoo.attention.capture.captured).
  """
  workdir = pathlib.Path(workdir).absolute()
  config = load_config(workdir)
  task = build.get_task(config)
  build_config = config
  if capture_weights and _sows_weights(nnx.eval_shape(lambda: build.build_model(config, task))):
    build_config = ml_collections.ConfigDict(config.to_dict())
    build_config.model.capture_weights = True
  model = build.build_model(build_config, task)
  model.eval()
  _, params, _, other = steps.split_model(model)
  params, other = checkpoints.load_params(workdir / wd.CHECKPOINTS, params, other, step=step)
  nnx.update(model, params, other)
  return config, model, task


def _sows_weights(model: nnx.Module) -> bool:
  """Has the model the capture_weights option: does one of its modules sow its weights?"""
  return any(hasattr(module, 'capture_weights') for _, module in nnx.iter_modules(model))
