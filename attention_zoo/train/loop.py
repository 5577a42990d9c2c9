"""train_and_evaluate(config, workdir): the one training loop for every model and task.

The pieces it calls: the workdir's files and resume rule (workdir.py), the task and model
(attention_zoo.build), the jitted steps and their state (steps.py), batches (batching.py),
evaluation (evaluation.py), checkpoints (checkpoints.py), metric files (writers.py) and
results.json (run_info.py). It knows no model family: a model that changes with training keeps
what changes in its own state.

Start phase (config.train.start_phase = {lr, patience, max_steps, restart_schedule}; absent or
None: none). A model with a start phase has a `start_phase` attribute, an nnx.Variable holding a
bool scalar, True during the phase (the memory network's linear start: no memory softmax). While it
is on, the optimizer's lr is start_phase.lr (optim.scale_by_phase_lr). The loop ends it, in the
model (start_phase set False) and in the optimizer at once, after `patience` validations in a row
(every train.eval_every steps) without a new lowest validation loss (patience 0: never), or after
`max_steps` steps (0: no limit), whichever comes first; with restart_schedule the lr schedule then
starts again from its step 0. Both flags and the lowest loss live in the checkpointed state (the
model's other state, the optimizer state), and a validation runs before the checkpoint of its step,
so a resumed run switches where an uninterrupted one does. A config with a start phase and a model
without one ends it at step 0 (the schedule's lr).
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
from flax import nnx

from attention_zoo import build
from attention_zoo.data.base import Task
from attention_zoo.train import batching, checkpoints, config_utils, distributed, evaluation, optim
from attention_zoo.train import run_info, steps
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
    ValueError: a config value out of range (config_utils.CHECKS), before `workdir` is touched.
    CorruptCheckpointError: `workdir` has checkpoints and none reads back as saved.
  """
  t_start = time.perf_counter()
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  tc = config.train
  config_utils.check_values(config, jax.device_count())  # before the workdir is touched
  _check_final_evaluation(config)
  if is_main:  # the others read the workdir once process 0 has cleared or checked it
    wd.prepare(workdir, config_utils.to_dict(config), fresh=fresh, is_main=True)
  distributed.barrier('attention_zoo workdir prepared')
  if not is_main:
    wd.prepare(workdir, config_utils.to_dict(config), fresh=False, is_main=False)
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
  g_train, g_eval, state = steps.init_state(build.build_model(config, task), tx,
                                            jax.local_devices()[0])
  state = batching.replicate(state, mesh)  # every process built the same state
  if start:
    start, state = _restore(ckpts, state, rep)  # the newest intact checkpoint
    logging.info('resumed %s from step %d', workdir, start)
  state, in_phase = _start_phase(config, g_train, state, rep)
  writer = MetricWriter(workdir) if is_main else None
  if writer:
    # A fresh start redoes step 0's evaluation; a run killed in its final evaluation redoes it.
    writer.truncate_after(start if start else -1, final=start >= tc.steps)
  train_batches = batching.train_batches(task, tc, config.seed)  # train.batching
  seed_key = batching.replicate(jax.random.key(config.seed), mesh)
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
  if start == 0 and tc.eval_every > 0:  # the learning curves' first point: the initial model
    _evaluate(evaluator, writer, 'validation', 0, state)

  rows: list[tuple[int, dict]] = []  # train metrics since the last log
  last_train = wd.logged(workdir, start, 'train') if start >= tc.steps else {}
  last_saved = start
  bar = progress_bar(tc.steps, start, show=is_main)
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
      if in_phase and 0 < tc.start_phase.max_steps <= step:
        leaves = treedef.flatten_up_to(_end_start_phase(
            config, g_train, jax.tree.unflatten(treedef, leaves), rep, step))
        in_phase = False
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
        if do_eval and not done:  # before the checkpoint: it may end the start phase
          validation = _evaluate(evaluator, writer, 'validation', step, state)
          if in_phase and validation is not None:
            state, in_phase = _after_validation(config, g_train, state, rep, step,
                                                validation['loss'])
            leaves = treedef.flatten_up_to(state)
        if do_ckpt:
          if not bool(jax.device_get(steps.all_finite(state.params))):
            raise NonFiniteError(f'parameters are not finite at step {step}; stopped '
                                 f'(last checkpoint: step {last_saved or "none"})')
          ckpts.save(step, state.params, state.opt_state, state.other)
          last_saved = step
        t_mark = t_log = time.perf_counter()
  finally:
    bar.close()
    ckpts.close()  # waits for the last asynchronous save
    if writer:
      writer.flush()

  t_final = time.perf_counter()
  final_state, final = _final_state(workdir / wd.CHECKPOINTS, evaluator, state)
  evals = {split: _evaluate(evaluator, writer, split, step, final_state, final=True)
           for split in _final_splits(task)}
  final['seconds'] = time.perf_counter() - t_final
  final.update((k, v) for k, v in task.metadata.items() if k.endswith('_signature'))
  results = run_info.results(step, last_train, evals, state.params, speed, tc.batch_size)
  results['final_evaluation'] = final
  results['wall_s'] = time.perf_counter() - t_start  # this process: build, train, evaluate
  if writer:
    wd.write_json(workdir / wd.RESULTS, results)
    writer.close()
  return results


def _final_splits(task: Task) -> tuple[str, ...]:
  """The splits of the final evaluation: validation, test, then any other split but train (e.g.
  the per-task test splits of bAbI's joint training), each a key of results.json."""
  usual = ('validation', 'test')
  return usual + tuple(s for s in task.splits if s not in usual + ('train',))


def _restore(ckpts: Checkpoints, state: steps.TrainState,
             rep) -> tuple[int, steps.TrainState]:
  """-> (step, `state` with params, optimizer state and other model state of checkpoint `step`),
  the newest checkpoint that reads back intact (Checkpoints.restore_latest)."""
  step, params, opt_state, other = ckpts.restore_latest(state.params, state.opt_state,
                                                        state.other)
  return step, state._replace(step=batching.replicate(jnp.asarray(step, jnp.int32), rep.mesh),
                              params=params, opt_state=opt_state, other=other)


def _start_phase(config: ml_collections.ConfigDict, graphdef, state: steps.TrainState,
                 rep) -> tuple[steps.TrainState, bool]:
  """-> (state, whether a start phase is on); see the module docstring. ValueError when the model
  has a start phase that nothing would end (no train.start_phase)."""
  model_on = _model_start_phase(graphdef, state)
  phase = optim.start_phase(state.opt_state)
  if phase is None:
    if model_on:
      raise ValueError('the model has a start phase (e.g. the memory network\'s linear start) '
                       'but config.train.start_phase is not set: nothing would end it')
    return state, False
  cfg = config.train.start_phase
  if cfg.patience > 0 and config.train.eval_every <= 0:
    raise ValueError(f'train.start_phase.patience={cfg.patience} needs validations: set '
                     'train.eval_every > 0')
  if bool(phase.on) and not model_on:
    return _end_start_phase(config, graphdef, state, rep, 0), False
  return state, bool(phase.on)


def _model_start_phase(graphdef, state: steps.TrainState) -> bool:
  model = nnx.merge(graphdef, state.params, state.rngs, state.other, copy=True)
  return hasattr(model, 'start_phase') and bool(model.start_phase[...])


def _end_start_phase(config: ml_collections.ConfigDict, graphdef, state: steps.TrainState, rep,
                     step: int) -> steps.TrainState:
  """`state` with the start phase ended in the optimizer (the schedule restarted where
  train.start_phase.restart_schedule says) and in the model."""
  model = nnx.merge(graphdef, state.params, state.rngs, state.other, copy=True)
  if hasattr(model, 'start_phase'):
    model.start_phase[...] = jnp.zeros_like(model.start_phase[...])
  logging.info('start phase ended at step %d', step)
  restart = config.train.start_phase.get('restart_schedule', False)
  return batching.replicate(state._replace(opt_state=optim.end_start_phase(state.opt_state,
                                                                           restart),
                                           other=steps.split_model(model)[3]), rep.mesh)


def _after_validation(config: ml_collections.ConfigDict, graphdef, state: steps.TrainState, rep,
                      step: int, loss: float) -> tuple[steps.TrainState, bool]:
  """Records the validation loss of `step` in the start phase -> (state, whether still on)."""
  opt_state, ends = optim.after_validation(state.opt_state, loss,
                                           config.train.start_phase.patience)
  state = batching.replicate(state._replace(opt_state=opt_state), rep.mesh)
  if ends:
    return _end_start_phase(config, graphdef, state, rep, step), False
  return state, True


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
