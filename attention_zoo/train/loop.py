"""train_and_evaluate(config, workdir): the one training loop for every model and task.

The pieces it calls: the workdir's files and resume rule (workdir.py), the task and model
(attention_zoo.build), the jitted steps and their state (steps.py), batches (batching.py),
evaluation (evaluation.py), checkpoints (checkpoints.py), metric files (writers.py) and
results.json (run_info.py). It knows no model family: a model that changes with training (e.g.
the memory network's linear start) keeps its own counters in its state.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from attention_zoo import build
from attention_zoo.data.base import Task
from attention_zoo.train import batching, checkpoints, config_utils, evaluation, optim, run_info
from attention_zoo.train import steps
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import Checkpoints
from attention_zoo.train.writers import MetricWriter, progress_bar


class NonFiniteError(FloatingPointError):
  """A metric or the parameters became NaN / Inf; the run stopped without saving them."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       task: Task | None = None, fresh: bool = False,
                       stop_after_step: int | None = None) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its checkpoint if any) and returns results.json.

  Args:
    config: a config of configs/ (see configs/common.py for the fields).
    workdir: the run's directory (created; its files: see attention_zoo.train.workdir).
    task: the Task to use instead of attention_zoo.data.get_task(config.task) (tests, notebooks).
    fresh: delete what a previous run left in `workdir` and start over.
    stop_after_step: simulate a kill right after this step: return without the final save or
      evaluation (tests of resuming).
  Raises:
    ConfigMismatchError: `workdir` has a checkpoint of a different config.
    NonFiniteError: a train metric or the parameters became NaN / Inf.
  """
  t_start = time.perf_counter()
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  tc = config.train
  _check_final_evaluation(config)
  wd.prepare(workdir, config_utils.to_dict(config), fresh=fresh, is_main=is_main)
  ckpts = Checkpoints(workdir / wd.CHECKPOINTS, tc.keep_checkpoints)
  start = ckpts.latest_step() or 0
  if start >= tc.steps and (workdir / wd.RESULTS).exists():
    ckpts.close()
    logging.info('%s: finished run (step %d); %s kept', workdir, start, wd.RESULTS)
    return wd.read_json(workdir / wd.RESULTS)

  task = task if task is not None else build.get_task(config)
  mesh = batching.make_mesh()
  rep = batching.replicated(mesh)
  tx = optim.make_optimizer(tc, config.model)
  g_train, g_eval, state = steps.init_state(build.build_model(config, task), tx, rep)
  if start:
    state = _restore(ckpts, start, state, rep)
    logging.info('resumed %s from step %d', workdir, start)
  writer = MetricWriter(workdir) if is_main else None
  if writer:
    writer.truncate_after(start)
  train_batches = batching.train_batches(task, tc, config.seed)  # train.batching
  seed_key = jax.device_put(jax.random.key(config.seed), rep)
  speed = run_info.Throughput()
  t0 = time.perf_counter()
  # The step carries the state's leaves; `state` is rebuilt from them when needed. It is compiled
  # for each shape of the train batches (one when padded, one per bucket).
  programs = []
  for batch in [batching.to_device(b, mesh) for b in train_batches.shape_batches()]:
    train_step, leaves, treedef = steps.compile_train_step(
        g_train, task, tx, optim.learning_rate(tc, config.model), state, batch, seed_key, rep,
        label_smoothing=tc.label_smoothing)
    programs.append((batch, train_step))
  train_step = batching.StepPerShape(programs)
  evaluator = evaluation.make_evaluator(g_eval, task, mesh, config.eval,
                                        batching.full_width(task.splits['train']))
  speed.compile_s = time.perf_counter() - t0

  rows: list[tuple[int, dict]] = []  # train metrics since the last log
  last_train: dict[str, float] = {}
  last_saved = start
  bar = progress_bar(tc.steps, start)
  t_mark = t_log = time.perf_counter()
  step = start
  try:
    while step < tc.steps:
      host_batch = train_batches.batch(step)
      speed.tokens += batching.count_tokens(host_batch, task.input_keys)
      speed.examples += len(host_batch[task.target_key])
      leaves, metrics = train_step(leaves, batching.to_device(host_batch, mesh), seed_key)
      step += 1
      speed.steps += 1
      rows.append((step, metrics))
      bar.update(1)
      if stop_after_step is not None and step >= stop_after_step:
        return {}  # simulated kill: nothing more is written
      done = step == tc.steps
      do_ckpt = done or step % tc.checkpoint_every == 0
      do_eval = done or (tc.eval_every > 0 and step % tc.eval_every == 0)
      if do_ckpt or do_eval or step % tc.log_every == 0:
        state = jax.tree.unflatten(treedef, leaves)
        last_train = _mean_metrics(rows, last_saved)
        now = time.perf_counter()
        speed.train_s += now - t_mark
        last_train['steps_per_s'] = len(rows) / max(now - t_log, 1e-9)
        rows = []
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
          _evaluate(evaluator, writer, 'validation', step, state)
        t_mark = t_log = time.perf_counter()
  finally:
    bar.close()
    ckpts.close()  # waits for the last asynchronous save
    if writer:
      writer.flush()

  t_final = time.perf_counter()
  final_state, final = _final_state(workdir / wd.CHECKPOINTS, evaluator, state)
  evals = {split: _evaluate(evaluator, writer, split, step, final_state, final=True)
           for split in ('validation', 'test')}
  final['seconds'] = time.perf_counter() - t_final
  final.update((k, v) for k, v in task.metadata.items() if k.endswith('_signature'))
  results = run_info.results(step, last_train, evals, state.params, speed, tc.batch_size)
  results['final_evaluation'] = final
  results['wall_s'] = time.perf_counter() - t_start  # this process: build, train, evaluate
  if writer:
    wd.write_json(workdir / wd.RESULTS, results)
    writer.close()
  return results


def _restore(ckpts: Checkpoints, step: int, state: steps.TrainState, rep) -> steps.TrainState:
  """`state` with params, optimizer state and other model state of checkpoint `step`."""
  params, opt_state, other = ckpts.restore(step, state.params, state.opt_state, state.other)
  return state._replace(step=jax.device_put(jnp.asarray(step, jnp.int32), rep), params=params,
                        opt_state=opt_state, other=other)


def _mean_metrics(rows: list[tuple[int, dict]], last_saved: int) -> dict[str, float]:
  """The mean of each train metric over `rows`; NonFiniteError names the first NaN / Inf."""
  host = jax.device_get(rows)
  for step, metrics in host:
    for key in sorted(metrics, key=lambda k: (k != 'loss', k)):  # 'loss' first
      if not np.all(np.isfinite(metrics[key])):
        raise NonFiniteError(f'train metric {key!r} is {metrics[key]} at step {step}; stopped '
                             f'(last checkpoint: step {last_saved or "none"})')
  return {k: float(np.mean([m[k] for _, m in host])) for k in host[0][1]}


def _check_final_evaluation(config: ml_collections.ConfigDict) -> None:
  """Before training: the final evaluation's settings can be met (ValueError naming the keys)."""
  n, keep = config.eval.average_checkpoints, config.train.keep_checkpoints
  if n < 1:
    raise ValueError(f'eval.average_checkpoints must be >= 1 (1 = off), got {n}')
  if n > max(keep, 1):
    raise ValueError(f'eval.average_checkpoints={n} needs train.keep_checkpoints >= {n}, got '
                     f'{keep}')


def _final_state(checkpoint_dir: pathlib.Path, evaluator: evaluation.Evaluator,
                 state: steps.TrainState) -> tuple[steps.TrainState, dict[str, Any]]:
  """-> (the state the final evaluation uses, what it is, for results.json). With
  eval.average_checkpoints = N > 1, its params are the mean of the last N checkpoints' (fewer
  when fewer were saved, with a warning); the other model state stays the last step's."""
  cfg = evaluator.cfg
  averaged = [int(jax.device_get(state.step))]
  if cfg.average_checkpoints > 1:
    averaged = checkpoints.saved_steps(checkpoint_dir)[-cfg.average_checkpoints:]
    if len(averaged) < cfg.average_checkpoints:
      logging.warning('eval.average_checkpoints=%d: only %d checkpoints saved (%s); averaging '
                      'those', cfg.average_checkpoints, len(averaged), averaged)
    state = state._replace(params=checkpoints.average_params(checkpoint_dir, state.params,
                                                             averaged))
  beam = cfg.beam_size if evaluator.final_generate is not None else 1
  return state, {'averaged_steps': averaged, 'beam_size': beam,
                 'length_penalty': cfg.length_penalty if beam > 1 else None}


def _evaluate(evaluator: evaluation.Evaluator, writer: MetricWriter | None, split: str, step: int,
              state: steps.TrainState, *, final: bool = False) -> dict[str, float] | None:
  """Evaluates `split` (None if the task has none), writing its metrics and samples; `final`:
  the final evaluation's decoding (eval.beam_size)."""
  if split not in evaluator.task.splits:
    return None
  metrics, samples = evaluator(split, state.params, state.rngs, state.other, final=final)
  if writer:
    writer.write(step, split, metrics)
    if samples:
      writer.write_samples(step, split, samples)
      for s in samples:
        logging.info('%s sample: %s -> %s (target %s)', split, s['source'], s['prediction'],
                     s['target'])
  return metrics
