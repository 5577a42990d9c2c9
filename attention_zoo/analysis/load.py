"""Load a finished (or running) run for analysis: config, model with restored params, task.

Only params (and non-trainable model state such as BatchNorm statistics) are restored, never the
optimizer state; the model is rebuilt from the run's config.json.

  config, model, task = load_run('runs/dates')
  config, model, task = load_run('runs/dates_bf16', dtype='float32')  # a bfloat16 run in float32

A run trained in mixed precision (model.dtype='bfloat16') stores float32 parameters: it loads into
a model of either computation dtype unchanged. A run with model.param_dtype='bfloat16' stores
bfloat16 parameters; loaded with dtype='float32', they are read back as saved (bfloat16: the
checkpoint's read-back check compares what it wrote) and then cast to the float32 model's
parameters, which widens every value exactly.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
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
             capture_weights: bool = False, dtype: str | None = None):
  """-> (config, model in eval mode with the params of `step` (default: latest), task).

  dtype: rebuild the model with model.dtype = model.param_dtype = `dtype` (a name in
  attention_zoo.models.precision.DTYPES, e.g. 'float32' to look at a bfloat16 run in full
  precision); None: as the run was configured. The returned config is the run's.

  capture_weights=True rebuilds the model with that option (when the model has it: when one of
  its modules sows weights, it has a `capture_weights` attribute), so that its attention / SE
  weights are sown (read them with attention_zoo.attention.capture.captured).
  """
  workdir = pathlib.Path(workdir).absolute()
  config = load_config(workdir)
  task = build.get_task(config)
  build_config = ml_collections.ConfigDict(config.to_dict())
  if capture_weights and _sows_weights(nnx.eval_shape(lambda: build.build_model(config, task))):
    build_config.model.capture_weights = True
  if dtype is not None:
    build_config.model.update(dtype=dtype, param_dtype=dtype)
  model = build.build_model(build_config, task)
  model.eval()
  _, params, _, other = steps.split_model(model)
  saved_params, saved_other = params, other
  if dtype is not None:  # read back as saved: the run's dtypes
    _, saved_params, _, saved_other = steps.split_model(
        nnx.eval_shape(lambda: build.build_model(config, task)))
  restored = checkpoints.load_params(workdir / wd.CHECKPOINTS, saved_params, saved_other,
                                     step=step)
  nnx.update(model, *_cast_like(restored, (params, other)))
  return config, model, task


def _cast_like(tree, like):
  """Each floating-point leaf of `tree` cast to the dtype of the same leaf of `like`."""
  def cast(x, target):
    floats = jnp.issubdtype(x.dtype, jnp.floating) and jnp.issubdtype(target.dtype, jnp.floating)
    return x.astype(target.dtype) if floats and x.dtype != target.dtype else x
  return jax.tree.map(cast, tree, like)


def _sows_weights(model: nnx.Module) -> bool:
  """Has the model the capture_weights option: does one of its modules sow its weights?"""
  return any(hasattr(module, 'capture_weights') for _, module in nnx.iter_modules(model))
