"""train_and_evaluate(config, workdir): the one training loop for every model and task.

Workdir files (keys are stable: the sweep / report tooling reads them):
  config.json     the resolved config.
  metrics.jsonl   one JSON row per log / evaluation: {"step", "split", ...metrics}
                  split "train": loss, accuracy, grad_norm, lr, the task's metrics_fn keys
                    (means over the steps since the previous row), steps_per_s;
                  split "validation" / "test": loss, accuracy, task metrics, and for seq2seq
                    gen_<key> of task.generation_metrics_fn (e.g. gen_exact_match).
  samples.jsonl   decoded samples per evaluation:
                  {"step", "split", "source", "target", "prediction"}.
  events.out.tfevents.*  TensorBoard scalars "<split>/<metric>", text "<split>/samples".
  checkpoints/<step>/    orbax items params, opt_state, other (e.g. BatchNorm stats), meta.
  results.json    {"step", "train", "validation", "test" (metric dicts; a missing split is absent),
                   "num_params", "compile_s", "train_s", "steps_per_s", "examples_per_s",
                   "tokens_per_s" (non-PAD input tokens/s; null for non-token inputs),
                   "peak_device_memory_bytes" (null on CPU), "peak_host_memory_bytes",
                   "devices": {...}, "versions": {"python", "jax", "flax", ...}}
  Timings cover the steps of the latest run only (a resumed run times its own steps).
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from attention_zoo.data.base import Task
from attention_zoo.train import batching, config_utils, evaluation, optim, run_info, steps
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import Checkpoints
from attention_zoo.train.writers import MetricWriter, progress_bar


class NonFiniteError(FloatingPointError):
  """A metric or the parameters became NaN / Inf; the run stopped without saving them."""


def get_task(config: ml_collections.ConfigDict) -> Task:
  from attention_zoo import data  # pylint: disable=import-outside-toplevel
  return data.get_task(config.task)


def model_dims(model_name: str, task: Task) -> dict[str, Any]:
  """The task sizes (task.model_dims) that the model's constructor takes; a task may offer more
  (e.g. image_shape, which a ResNet does not need)."""
  from attention_zoo.models import registry  # pylint: disable=import-outside-toplevel
  params = registry.constructor_params(model_name)
  if any(p.kind is p.VAR_KEYWORD for p in params.values()):
    return dict(task.model_dims)
  return {k: v for k, v in task.model_dims.items() if k in params}


def build_model(config: ml_collections.ConfigDict, task: Task) -> nnx.Module:
  """The registry model with config.model and the task's sizes, initialized from config.seed."""
  from attention_zoo.models import get_model  # pylint: disable=import-outside-toplevel
  return get_model(config.model_name, rngs=nnx.Rngs(config.seed),
                   **model_dims(config.model_name, task), **config.model.to_dict())


def _modes(model: nnx.Module, linear_start: bool | None):
  """-> (train graphdef, eval graphdef, params, rngs, other), after set_linear_start if asked."""
  if linear_start is not None:
    if not hasattr(model, 'set_linear_start'):
      raise ValueError(f'train.linear_start_steps > 0 but {type(model).__name__} has no '
                       'set_linear_start(flag)')
    model.set_linear_start(linear_start)
  model.eval()
  graphdef_eval = steps.split_model(model)[0]
  model.train()
  graphdef_train, params, rngs, other = steps.split_model(model)
  return graphdef_train, graphdef_eval, params, rngs, other


def _init_state(config, task: Task, tx, phase: bool | None, rep):
  """-> (train graphdef, eval graphdef, TrainState at step 0 replicated on the mesh)."""
  g_train, g_eval, params, rngs, other = _modes(build_model(config, task), phase)
  state = steps.TrainState(jnp.asarray(0, jnp.int32), params, tx.init(params), rngs, other)
  return g_train, g_eval, jax.device_put(state, rep)


def _restore(ckpts: Checkpoints, step: int, state: steps.TrainState, rep) -> steps.TrainState:
  """`state` with params, optimizer state and other model state of checkpoint `step`."""
  params, opt_state, other = ckpts.restore(step, state.params, state.opt_state, state.other)
  return state._replace(step=jax.device_put(jnp.asarray(step, jnp.int32), rep), params=params,
                        opt_state=opt_state, other=other)


def _first_nonfinite(rows: list[tuple[int, dict]]):
  for step, metrics in rows:
    for key in sorted(metrics, key=lambda k: (k != 'loss', k)):  # 'loss' first
      if not np.all(np.isfinite(metrics[key])):
        return step, key, metrics[key]
  return None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       task: Task | None = None, fresh: bool = False,
                       stop_after_step: int | None = None) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its checkpoint if any) and returns results.json.

  Args:
    config: a config of configs/ (see configs/common.py for the fields).
    workdir: the run's directory (created).
    task: the Task to use instead of attention_zoo.data.get_task(config.task) (tests, notebooks).
    fresh: delete what a previous run left in `workdir` and start over.
    stop_after_step: simulate a kill right after this step: return without the final save or
      evaluation (tests of resuming).
  Raises:
    ConfigMismatchError: `workdir` has a checkpoint of a different config.
    NonFiniteError: a train metric or the parameters became NaN / Inf.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  tc = config.train
  config_dict = config_utils.to_dict(config)
  if fresh and is_main:
    wd.clear(workdir)
  if wd.has_checkpoint(workdir):
    wd.check_resume(workdir, config_dict)
  elif is_main:
    wd.clear(workdir)  # leftovers of a run that never checkpointed
  if is_main:
    wd.write_json(workdir / wd.CONFIG, config_dict)

  ckpts = Checkpoints(workdir / wd.CHECKPOINTS, tc.keep_checkpoints)
  start = ckpts.latest_step() or 0
  if start >= tc.steps and (workdir / wd.RESULTS).exists():
    ckpts.close()
    logging.info('%s: finished run (step %d); results.json kept', workdir, start)
    return json.loads((workdir / wd.RESULTS).read_text())
  task = task if task is not None else get_task(config)
  mesh = batching.make_mesh()
  rep = batching.replicated(mesh)
  linear = lambda step: (step < tc.linear_start_steps) if tc.linear_start_steps > 0 else None
  phase = linear(start)
  tx = optim.make_optimizer(tc)
  g_train, g_eval, state = _init_state(config, task, tx, phase, rep)
  if start:
    state = _restore(ckpts, start, state, rep)
    logging.info('resumed %s from step %d', workdir, start)

  writer = MetricWriter(workdir) if is_main else None
  if writer:
    writer.truncate_after(start)
  lr_fn = optim.learning_rate(tc)
  train_batches = batching.TrainBatches(task.splits['train'], tc.batch_size, config.seed)
  has_gen = task.kind == 'seq2seq' and config.eval.generate
  max_len = task.max_target_len

  def compile_fns(g_train, g_eval, state, batch):
    t0 = time.perf_counter()
    leaves, treedef = jax.tree.flatten(state)
    train_step = steps.make_train_step(g_train, task, tx, steps.rng_tags(state.rngs), lr_fn)
    step_fn = jax.jit(steps.flat_step(train_step, treedef), donate_argnums=0, out_shardings=rep)
    compiled = step_fn.lower(leaves, batch, seed_key).compile()
    generate = None
    if has_gen:
      generate = steps.make_generate(g_eval, max_len or batch[task.target_key].shape[1])
    evaluator = evaluation.Evaluator(task, steps.make_eval_step(g_eval, task), generate, mesh,
                                     config.eval)
    return compiled, leaves, treedef, evaluator, time.perf_counter() - t0

  def evaluate(split: str, step: int) -> dict[str, float] | None:
    if split not in task.splits:
      return None
    metrics, samples = evaluator(split, state.params, state.rngs, state.other)
    if writer:
      writer.write(step, split, metrics)
      if samples:
        writer.write_samples(step, split, samples)
        for s in samples:
          logging.info('%s sample: %s -> %s (target %s)', split, s['source'], s['prediction'],
                       s['target'])
    return metrics

  def flush(rows: list[tuple[int, dict]], last_saved: int) -> dict[str, float]:
    host = jax.device_get(rows)
    bad = _first_nonfinite(host)
    if bad:
      raise NonFiniteError(f'train metric {bad[1]!r} is {bad[2]} at step {bad[0]}; stopped '
                           f'(last checkpoint: step {last_saved or "none"})')
    return {k: float(np.mean([m[k] for _, m in host])) for k in host[0][1]}

  batch = batching.to_device(train_batches.batch(start), mesh)
  seed_key = jax.device_put(jax.random.key(config.seed), rep)
  # The steps carry the state's leaves; `state` is rebuilt from them when needed.
  compiled, leaves, treedef, evaluator, compile_s = compile_fns(g_train, g_eval, state, batch)
  rows: list[tuple[int, dict]] = []
  last_train: dict[str, float] = {}
  last_saved, tokens, train_s, steps_run = start, 0, 0.0, 0
  input_keys = task.input_keys
  bar = progress_bar(tc.steps, start)
  t_mark = t_log = time.perf_counter()
  step = start
  try:
    while step < tc.steps:
      if linear(step) != phase:  # memory network: linear start ends -> new graphdef, recompile
        phase = linear(step)
        state = jax.tree.unflatten(treedef, leaves)
        model = nnx.merge(g_train, state.params, state.rngs, state.other)
        g_train, g_eval, _, _, other = _modes(model, phase)
        state = state._replace(other=jax.device_put(other, rep))
        compiled, leaves, treedef, evaluator, extra = compile_fns(g_train, g_eval, state, batch)
        compile_s += extra
        t_mark = time.perf_counter()
      host_batch = train_batches.batch(step)
      tokens += batching.count_tokens(host_batch, input_keys)
      batch = batching.to_device(host_batch, mesh)
      leaves, metrics = compiled(leaves, batch, seed_key)
      step += 1
      steps_run += 1
      rows.append((step, metrics))
      bar.update(1)
      if stop_after_step is not None and step >= stop_after_step:
        return {}  # simulated kill: nothing more is written
      done = step == tc.steps
      do_ckpt = done or step % tc.checkpoint_every == 0
      do_eval = done or (tc.eval_every > 0 and step % tc.eval_every == 0)
      if do_ckpt or do_eval or step % tc.log_every == 0:
        state = jax.tree.unflatten(treedef, leaves)
        last_train = flush(rows, last_saved)
        now = time.perf_counter()
        train_s += now - t_mark
        last_train['steps_per_s'] = len(rows) / max(now - t_log, 1e-9)
        rows, t_log = [], now
        if writer:
          writer.write(step, 'train', last_train)
        bar.set_postfix(loss=f'{last_train["loss"]:.4f}')
        if do_ckpt:
          if not bool(jax.device_get(steps.all_finite(state.params))):
            raise NonFiniteError(f'parameters are not finite at step {step}; stopped '
                                 f'(last checkpoint: step {last_saved or "none"})')
          ckpts.save(step, state.params, state.opt_state, state.other)
          last_saved = step
        if do_eval and not done:
          evaluate('validation', step)
        t_mark = t_log = time.perf_counter()
  finally:
    bar.close()
    ckpts.close()  # waits for the last asynchronous save
    if writer:
      writer.flush()

  results: dict[str, Any] = {'step': step, 'train': last_train}
  for split in ('validation', 'test'):
    metrics = evaluate(split, step)
    if metrics is not None:
      results[split] = metrics
  n_examples = steps_run * tc.batch_size
  results.update(
      num_params=run_info.param_count(state.params),
      compile_s=compile_s,
      train_s=train_s,
      steps_per_s=steps_run / train_s if train_s else None,
      examples_per_s=n_examples / train_s if train_s else None,
      tokens_per_s=(tokens * jax.process_count() / train_s) if (tokens and train_s) else None,
      devices=run_info.devices(),
      versions=run_info.versions(),
      **run_info.peak_memory())
  if writer:
    wd.write_json(workdir / wd.RESULTS, results)
    writer.close()
  return results
