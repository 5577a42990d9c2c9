"""train_and_evaluate(config, workdir): the one training loop, for every model and task, over
S >= 1 seeds of one config (S = 1: a run).

  results = train_and_evaluate(config, 'runs/dates')                    # one run
  results = train_and_evaluate(config, ['runs/s0', 'runs/s1'], seeds=[0, 1])  # one program

The pieces it calls: the workdir's files and resume rule (workdir.py), the task and model
(attention_zoo.build), the seed axis (seeds.py: how state, batches and the step carry S seeds),
the jitted steps and their state (steps.py), batches (batching.py), evaluation (evaluation.py),
checkpoints (checkpoints.py), metric files (writers.py), results.json (run_info.py) and hooks
(hooks.py: what a phase of training, e.g. the memory network's linear start, does at the loop's
events). It knows no model family and no phase.

Each seed keeps its own workdir, with the files of a single run; its checkpoints hold that seed's
state without the seed axis, so they resume as a single run too. Per seed: resume from its
newest intact checkpoint (seeds of a group resume at one step, the oldest of theirs), the
non-finite guard (a seed whose metrics or params become NaN / Inf, or whose loss diverges, stops
at once, its last checkpoint kept; the others go on; then NonFiniteError names every stopped seed).

The divergence rule: a seed stops when the mean train loss of a log window (train.log_every steps,
or fewer up to a checkpoint or evaluation) exceeds MAX_LOSS = 1e3. The loss is the plain
cross-entropy per target, in nats, whatever the task; a model starts near log V (V output
classes: log 2 = 0.69 to log 32,000 = 10.4), so the bound is two orders of magnitude above any
start, and a cross-entropy that large means the right class's logit trails by about 1e3. An
absolute bound, not a multiple of the run's first logged loss: with a learning rate that blows up
the first update, the first window's mean is already huge (Adam at lr = 1e12: ~1e12 and more from
the first log on), and an absolute bound resumes exactly as it runs uninterrupted.

The final evaluation (validation, test and any other split; eval.beam_size, the last
eval.average_checkpoints checkpoints averaged) runs at the last step, or with eval.select_metric
at the step of the best periodic validation (selection.py: the length chosen on validation).

A failed start leaves nothing behind: the task is built before any workdir is written, and a
workdir this call created is removed when the start fails before the first train step (a workdir
that existed before is never removed).
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from attention_zoo import build
from attention_zoo.data.base import Task
from attention_zoo.train import batching, checkpoints, config_utils, distributed, evaluation, hooks
from attention_zoo.train import flops, optim, run_info, seeds as seeds_lib, selection, steps
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import Checkpoints
from attention_zoo.train.writers import MetricWriter, progress_bar


class NonFiniteError(FloatingPointError):
  """A metric or the parameters became NaN / Inf; the run stopped without saving them."""


class DivergedError(NonFiniteError):
  """The train loss of a log window exceeded MAX_LOSS (the divergence rule, module docstring)."""


MAX_LOSS = 1e3  # nats per target: a log window whose mean train loss exceeds it stops the run


@dataclasses.dataclass
class _Seed:
  """What the loop keeps per seed."""
  seed: int
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  ckpts: Checkpoints | None = None
  writer: MetricWriter | None = None
  batches: Any = None
  tokens: int = 0
  examples: int = 0
  last_train: dict[str, float] = dataclasses.field(default_factory=dict)
  stopped: str | None = None  # why the non-finite guard stopped it
  error: type[NonFiniteError] = NonFiniteError  # what it stopped with
  started: bool = False  # has its first train step begun (a failed start before: nothing kept)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | pathlib.Path | Sequence[str | pathlib.Path], *,
                       seeds: Sequence[int] | None = None, seed_map: str | None = None,
                       task: Task | None = None, fresh: bool = False,
                       stop_after_step: int | None = None) -> dict[str, Any] | list[dict]:
  """Trains `config` in `workdir` (resuming from its checkpoint if any) -> results.json.

  Args:
    config: a config of configs/ (see configs/common.py for the fields).
    workdir: the run's directory (created; its files: see attention_zoo.train.workdir); with
      `seeds`, one directory per seed, or one folder that gets a subfolder seed=<s> per seed.
    seeds: train these seeds of `config` (config.seed replaced) as one program; each result is
      that of its own run. None: the one run of config.seed.
    seed_map: how the step runs over the seeds (seeds.SEED_MAPS; default: the platform's).
    task: the Task to use instead of attention_zoo.data.get_task(config.task) (tests, notebooks).
    fresh: delete what a previous run left in the workdir(s) and start over.
    stop_after_step: simulate a kill right after this step: return without the final save or
      evaluation (tests of resuming): {} (a list of {} with `seeds`).
  Returns:
    results.json of the run; with `seeds`, the list of each seed's (finished seeds included).
  Raises:
    ConfigMismatchError: a workdir holds results of a different config (workdir.check),
      before the task is built.
    NonFiniteError: a train metric or the parameters became NaN / Inf (after the other seeds
      finished); DivergedError (a NonFiniteError): the train loss exceeded MAX_LOSS.
    ValueError: a config value out of range (config_utils.CHECKS), or seeds that cannot train
      as one program, before any workdir is touched.
    CorruptCheckpointError: a workdir has checkpoints and none reads back as saved.
  """
  t_start = time.perf_counter()
  runs = _seeds(config, workdir, seeds)
  for run in runs:
    config_utils.check_values(run.config, jax.device_count())  # before a workdir is touched
  _check_final_evaluation(config)
  if len(runs) > 1:
    why = seeds_lib.why_not_together(config)
    if jax.process_count() > 1:
      why = f'seeds train together in one process, not {jax.process_count()}'
    if why:
      raise ValueError(f'seeds {[r.seed for r in runs]} cannot train as one program: {why}; '
                       f'train them apart (seed map {seeds_lib.PROCESSES!r})')
    if seed_map is not None:
      seeds_lib.one_program(seed_map)
  is_main = jax.process_index() == 0
  results: dict[int, dict[str, Any]] = {}
  todo = []
  for i, run in enumerate(runs):
    if is_main:  # read-only: refused before the task is built (the others: after the barrier)
      wd.check(run.workdir, config_utils.to_dict(run.config), fresh=fresh)
    if not fresh and wd.finished(run.workdir, config.train.steps):
      logging.info('%s: finished run; %s kept', run.workdir, wd.RESULTS)
      results[i] = wd.read_json(run.workdir / wd.RESULTS)
    else:
      todo.append(i)
  if todo:
    made = {i: _first_missing(runs[i].workdir) for i in todo}  # what this call creates
    task = task if task is not None else build.get_task(config)  # before any workdir is written
    try:
      for i in todo:
        if is_main:  # the others read the workdir once process 0 has cleared or checked it
          wd.prepare(runs[i].workdir, config_utils.to_dict(runs[i].config), fresh=fresh,
                     is_main=True)
      distributed.barrier('attention_zoo workdir prepared')
      for i in todo:
        if not is_main:
          wd.prepare(runs[i].workdir, config_utils.to_dict(runs[i].config), fresh=False,
                     is_main=False)
        runs[i].ckpts = Checkpoints(runs[i].workdir / wd.CHECKPOINTS,
                                    config.train.keep_checkpoints)
      done = _train([runs[i] for i in todo], task, seed_map, stop_after_step, t_start)
      results.update(zip(todo, done))
    except BaseException:
      if is_main:
        _remove_failed_starts([runs[i] for i in todo], [made[i] for i in todo])
      raise
    finally:
      for i in todo:
        if runs[i].ckpts:
          runs[i].ckpts.close()  # waits for the last asynchronous save
  out = [results.get(i, {}) for i in range(len(runs))]
  return out if seeds is not None else out[0]


def _remove_failed_starts(runs: list[_Seed], made: list[pathlib.Path | None]) -> None:
  """Removes the folders this call created (`made`, None: the workdir existed) for the runs whose
  start failed before their first train step: a failed start leaves no empty workdir."""
  for run, folder in zip(runs, made):
    if folder is not None and not run.started and folder.exists():
      logging.warning('%s: the start failed before training; removing %s, which this run '
                      'created', run.workdir, folder)
      if run.ckpts:
        run.ckpts.close()
      shutil.rmtree(folder, ignore_errors=True)


def _first_missing(path: pathlib.Path) -> pathlib.Path | None:
  """The outermost folder of `path` (itself included) that does not exist yet: what creating it
  creates (None when it exists)."""
  path = path.absolute()
  if path.exists():
    return None
  while not path.parent.exists():
    path = path.parent
  return path


def _seeds(config: ml_collections.ConfigDict, workdir, seeds: Sequence[int] | None
           ) -> list[_Seed]:
  """The seeds to train, each with its config and workdir."""
  if seeds is None:
    return [_Seed(config.seed, config, pathlib.Path(workdir))]
  seeds = [int(s) for s in seeds]
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f'seeds must be distinct and at least one, got {seeds}')
  if isinstance(workdir, (str, pathlib.Path)):
    workdirs = [pathlib.Path(workdir) / f'{seeds_lib.SEED}={s}' for s in seeds]
  else:
    workdirs = [pathlib.Path(w) for w in workdir]
  if len(workdirs) != len(seeds):
    raise ValueError(f'{len(seeds)} seeds for {len(workdirs)} workdirs')
  return [_Seed(s, config_utils.apply_overrides(config, {seeds_lib.SEED: s}), w)
          for s, w in zip(seeds, workdirs)]


def _train(runs: list[_Seed], task: Task, seed_map: str | None,
           stop_after_step: int | None, t_start: float) -> list[dict[str, Any]]:
  """The program of the unfinished seeds `runs` (their workdirs prepared, checkpoints open)."""
  config, tc = runs[0].config, runs[0].config.train
  is_main = jax.process_index() == 0
  latest = [r.ckpts.latest_step() for r in runs]
  if any(n is None for n in latest) and any(n is not None for n in latest):
    raise ValueError('seeds of one program resume together, but only some have checkpoints: '
                     + ', '.join(f'seed {r.seed} ({r.workdir}) at step {n or "none"}'
                                 for r, n in zip(runs, latest))
                     + f'; train them apart (seed map {seeds_lib.PROCESSES!r})')
  mesh = batching.make_mesh()
  axis = seeds_lib.SeedAxis([r.seed for r in runs], mesh, seed_map)
  tx = optim.make_optimizer(tc, config.model)
  g_train, g_eval, state = axis.init(config, task, tx)
  start = 0
  if latest[0] is not None:
    start, state = _restore(runs, axis, state)
    logging.info('resumed %s from step %d', ', '.join(str(r.workdir) for r in runs), start)
  run_hooks = hooks.make_hooks(config, g_train)
  state = _call_hooks(run_hooks, axis, state, lambda h, s: h.on_start(s))
  for run in runs:
    run.writer = MetricWriter(run.workdir) if is_main else None
    if run.writer:
      # A fresh start redoes step 0's evaluation; a run killed in its final evaluation redoes it.
      run.writer.truncate_after(start if start else -1, final=start >= tc.steps)
    run.batches = batching.train_batches(task, tc, run.seed)  # train.batching
    run.last_train = wd.logged(run.workdir, start, 'train') if start >= tc.steps else {}
  seed_key = axis.keys()
  speed = run_info.Throughput()
  t0 = time.perf_counter()
  # The step carries the state's leaves; `state` is rebuilt from them when needed. It is compiled
  # for each shape of the train batches (one when padded, one per bucket).
  programs = []
  for shape_batches in zip(*(r.batches.shape_batches() for r in runs)):
    batch = axis.to_device(shape_batches)
    train_step, leaves, treedef = steps.compile_train_step(
        g_train, task, tx, optim.learning_rate(tc, config.model), state, batch, seed_key,
        batching.replicated(mesh), label_smoothing=tc.label_smoothing, over_seeds=axis.over)
    programs.append((batch, train_step))
  train_step = batching.StepPerShape(programs)
  evaluator = evaluation.make_evaluator(g_eval, task, mesh, config.eval,
                                        batching.full_width(task.splits['train']))
  speed.compile_s = time.perf_counter() - t0
  step_flops = flops.StepFlops(programs, flops.analytic_count(
      config.model_name, config.model.to_dict(), build.model_dims(config.model_name, task),
      axis.size))  # read from the compiled programs: no compile of its own
  speed.dtype = config.model.get('dtype', 'float32')
  attention = run_info.attention_implementation(config, task,
                                                runs[0].batches.shape_batches()[0])
  if start == 0 and tc.eval_every > 0:  # the learning curves' first point: the initial model
    for run, one in zip(runs, axis.unstack(state)):
      _evaluate(evaluator, run.writer, 'validation', 0, one)

  live = lambda: [i for i, r in enumerate(runs) if r.stopped is None]
  rows: list[tuple[int, dict]] = []  # train metrics since the last log
  last_saved = start
  bar = progress_bar(tc.steps, start, show=is_main)
  t_mark = t_log = time.perf_counter()
  step = start
  for run in runs:
    run.started = True
  try:
    while step < tc.steps:
      host = [r.batches.batch(step) for r in runs]
      for run, h in zip(runs, host):
        run.tokens += batching.count_tokens(h, task.input_keys)
        run.examples += len(h[task.target_key])
      batch = axis.to_device(host)
      step_flops.add(batch)
      leaves, metrics = train_step(leaves, batch, seed_key)
      step += 1
      speed.steps += 1
      rows.append((step, metrics))
      if any(h.active for h in run_hooks):
        state = jax.tree.unflatten(treedef, leaves)
        changed = _call_hooks(run_hooks, axis, state, lambda h, s: h.after_step(step, s))
        if changed is not state:
          leaves = treedef.flatten_up_to(changed)
      bar.update(1)
      if stop_after_step is not None and step >= stop_after_step:
        return [{} for _ in runs]  # simulated kill: nothing more is written
      done = step == tc.steps
      do_ckpt = done or step % tc.checkpoint_every == 0
      do_eval = done or (tc.eval_every > 0 and step % tc.eval_every == 0)
      if not (do_ckpt or do_eval or step % tc.log_every == 0):
        continue
      state = jax.tree.unflatten(treedef, leaves)
      host_rows = jax.device_get(rows)
      now = time.perf_counter()
      speed.train_s += now - t_mark
      steps_per_s = len(rows) / max(now - t_log, 1e-9)
      rows = []
      for i in live():
        run = runs[i]
        try:
          run.last_train = _mean_metrics(axis.seed_rows(host_rows, i), last_saved)
        except NonFiniteError as e:
          _stop(run, e)
          continue
        run.last_train['steps_per_s'] = steps_per_s
        if run.writer:
          run.writer.write(step, 'train', run.last_train)
      if live():
        bar.set_postfix(loss=f'{np.mean([runs[i].last_train["loss"] for i in live()]):.4f}')
      per_seed = axis.unstack(state) if live() and (do_eval or do_ckpt) else []
      if do_eval and not done:  # before the checkpoint: a hook may change the state
        before = state
        for i in live():
          validation = _evaluate(evaluator, runs[i].writer, 'validation', step, per_seed[i])
          if validation is not None and axis.size == 1:  # a group has no acting hook
            state = _call_hooks(run_hooks, axis, state,
                                lambda h, s, v=validation: h.after_validation(step, s, v))
        if state is not before:
          leaves, per_seed = treedef.flatten_up_to(state), axis.unstack(state)
      if do_ckpt:
        finite = axis.finite(state.params)
        for i in live():
          if not finite[i]:
            _stop(runs[i], NonFiniteError(f'parameters are not finite at step {step}; stopped '
                                          f'(last checkpoint: step {last_saved or "none"})'))
            continue
          one = per_seed[i]
          runs[i].ckpts.save(step, one.params, one.opt_state, one.other)
        last_saved = step
      if not live():
        break
      t_mark = t_log = time.perf_counter()
  finally:
    bar.close()
    for run in runs:
      run.ckpts.close()  # waits for the last asynchronous save
      if run.writer:
        run.writer.flush()

  out = []
  speed.flops_per_step, speed.flops_source = step_flops.per_step(), step_flops.source
  per_seed = axis.unstack(jax.tree.unflatten(treedef, leaves))
  for run, one in zip(runs, per_seed):
    if run.stopped is None:
      out.append(_finish(run, one, evaluator, task, step, speed, axis, t_start, attention))
    elif run.writer:
      run.writer.close()
  stopped = [r for r in runs if r.stopped is not None]
  if stopped:
    error = DivergedError if all(r.error is DivergedError for r in stopped) else NonFiniteError
    if len(runs) == 1:
      raise error(stopped[0].stopped)
    raise error('; '.join(f'seed {r.seed} ({r.workdir}): {r.stopped}' for r in stopped)
                + f'. The other seeds ({[r.seed for r in runs if not r.stopped]}) finished.')
  return out


def _finish(run: _Seed, state: steps.TrainState, evaluator: evaluation.Evaluator, task: Task,
            step: int, speed: run_info.Throughput, axis: seeds_lib.SeedAxis,
            t_start: float, attention: dict[str, Any]) -> dict[str, Any]:
  """The final evaluation of one seed and its results.json."""
  t_final = time.perf_counter()
  selected = _selection(run, evaluator, step, state)
  final_state, final = _final_state(run.workdir / wd.CHECKPOINTS, evaluator, state,
                                    selected and selected['step'])
  if selected:
    final['selected'] = selected
  evals = {split: _evaluate(evaluator, run.writer, split, step, final_state, final=True)
           for split in _final_splits(task)}
  final['seconds'] = time.perf_counter() - t_final
  final.update((k, v) for k, v in task.metadata.items() if k.endswith('_signature'))
  seed_speed = dataclasses.replace(speed, tokens=run.tokens, examples=run.examples)
  results = run_info.results(step, run.last_train, evals, state.params, seed_speed,
                             run.config.train.batch_size)
  results['final_evaluation'] = final
  results.update(attention)
  results['wall_s'] = time.perf_counter() - t_start  # this process: build, train, evaluate
  if axis.size > 1:  # speed figures are the group's; a run's share of the wall time: / size
    results.update(seed_group_size=axis.size, seed_map=axis.how)
  if run.writer:
    wd.write_json(run.workdir / wd.RESULTS, results)
    run.writer.close()
  return results


def _stop(run: _Seed, error: NonFiniteError) -> None:
  run.stopped, run.error = str(error), type(error)
  logging.error('non-finite guard: seed %d (%s) stopped: %s', run.seed, run.workdir, error)


def _call_hooks(run_hooks: list[hooks.Hook], axis: seeds_lib.SeedAxis, state: steps.TrainState,
                call) -> steps.TrainState:
  """state after call(hook, state) of every hook (a hook returns None for no change). Hooks act
  on a single run: seeds.why_not_together keeps acting hooks out of a group."""
  changed = False
  for hook in run_hooks:
    new = call(hook, state if axis.size == 1 else axis.unstack(state)[0])
    if new is not None:
      if axis.size > 1:
        raise ValueError(f'{type(hook).__name__} changes the state of one seed of a group')
      state, changed = new, True
  return axis.stack([state]) if changed else state


def _final_splits(task: Task) -> tuple[str, ...]:
  """The splits of the final evaluation: validation, test, then any other split but train (e.g.
  the per-task test splits of bAbI's joint training), each a key of results.json."""
  usual = ('validation', 'test')
  return usual + tuple(s for s in task.splits if s not in usual + ('train',))


def _restore(runs: list[_Seed], axis: seeds_lib.SeedAxis,
             state: steps.TrainState) -> tuple[int, steps.TrainState]:
  """-> (step, `state` with every seed's checkpoint of that step): each seed's newest intact
  checkpoint (Checkpoints.restore_latest) when they agree, else the oldest of those, which the
  seeds ahead (a group killed between two seeds' saves) restore too. ValueError, naming the
  seed, when one of them has no intact checkpoint of that step."""
  one_state = axis.unstack(state)
  got = [r.ckpts.restore_latest(s.params, s.opt_state, s.other)
         for r, s in zip(runs, one_state)]
  step = min(g[0] for g in got)
  restored = []
  for run, one, (at, *trees) in zip(runs, one_state, got):
    if at != step:
      logging.warning('seed %d (%s) is at step %d, the others at step %d: it resumes from step '
                      '%d too', run.seed, run.workdir, at, step, step)
      try:
        trees = run.ckpts.restore(step, one.params, one.opt_state, one.other)
      except Exception as e:  # pylint: disable=broad-except  # orbax / tensorstore: many kinds
        raise ValueError(f'seed {run.seed} ({run.workdir}) has no intact checkpoint of step '
                         f'{step}, where the other seeds resume ({type(e).__name__}: {e}); '
                         f'train them apart (seed map {seeds_lib.PROCESSES!r})') from e
    params, opt_state, other = trees
    restored.append(one._replace(step=jnp.asarray(step, jnp.int32), params=params,
                                 opt_state=opt_state, other=other))
  if axis.size == 1:  # restored onto the state's own (global) arrays: place the step alone
    return step, restored[0]._replace(step=batching.replicate(restored[0].step, axis.mesh))
  return step, axis.stack(restored)


def _mean_metrics(rows: list[tuple[int, dict]], last_saved: int) -> dict[str, float]:
  """The mean of each train metric over `rows` (one log window); NonFiniteError names the first
  NaN / Inf, DivergedError a mean loss over MAX_LOSS (the divergence rule, module docstring)."""
  host = jax.device_get(rows)
  last = f'last checkpoint: step {last_saved or "none"}'
  for step, metrics in host:
    for key in sorted(metrics, key=lambda k: (k != 'loss', k)):  # 'loss' first
      if not np.all(np.isfinite(metrics[key])):
        raise NonFiniteError(f'train metric {key!r} is {metrics[key]} at step {step}; stopped '
                             f'({last})')
  means = {k: float(np.mean([m[k] for _, m in host])) for k in host[0][1]}
  if means['loss'] > MAX_LOSS:
    first, step = host[0][0], host[-1][0]
    raise DivergedError(f"train metric 'loss' diverged at step {step}: its mean over steps "
                        f'{first}-{step} is {means["loss"]:.3g} > {MAX_LOSS:g} nats per target '
                        f'(MAX_LOSS; a model starts near log V); stopped ({last}). Lower '
                        'train.lr, add warmup or clipping.')
  return means


def _check_final_evaluation(config: ml_collections.ConfigDict) -> None:
  """Before training: the final evaluation's settings can be met (ValueError naming the keys)."""
  n, keep = config.eval.average_checkpoints, config.train.keep_checkpoints
  if n < 1:
    raise ValueError(f'eval.average_checkpoints must be >= 1 (1 = off), got {n}')
  if n > max(keep, 1):
    raise ValueError(f'eval.average_checkpoints={n} needs train.keep_checkpoints >= {n}, got '
                     f'{keep}')
  metric, tc = config.eval.get('select_metric', ''), config.train
  if not metric:
    return
  if tc.eval_every <= 0 or tc.eval_every % tc.checkpoint_every:
    raise ValueError(f'eval.select_metric={metric!r} chooses among the validations\' steps, each '
                     'of which needs a checkpoint: train.eval_every must be a positive multiple '
                     f'of train.checkpoint_every ({tc.checkpoint_every}), got {tc.eval_every}')
  saved = -(-tc.steps // tc.checkpoint_every)  # every checkpoint of the run, the last included
  if keep < saved:
    raise ValueError(f'eval.select_metric={metric!r} may choose any validation\'s step, so every '
                     f'checkpoint is kept: train.keep_checkpoints must be >= {saved} '
                     f'(train.steps / train.checkpoint_every), got {keep}')


def _selection(run: _Seed, evaluator: evaluation.Evaluator, step: int,
               state: steps.TrainState) -> dict[str, Any] | None:
  """With eval.select_metric: the step the final evaluation uses, chosen on validation alone
  (`select_step` over the periodic validations, greedy, one checkpoint each; the last step's is
  evaluated here, the loop's final step having none), as results.json records it; else None."""
  cfg = evaluator.cfg
  metric = cfg.get('select_metric', '')
  if not metric:
    return None
  path = run.workdir / wd.METRICS
  curve = selection.validation_curve(wd.read_jsonl(path), metric, str(path))
  if step not in curve:
    last = _evaluate(evaluator, run.writer, 'validation', step, state)
    if last is None:
      raise ValueError(f'eval.select_metric={metric!r} chooses on the validation split; the task '
                       f'has none (splits: {sorted(evaluator.task.splits)})')
    curve[step] = float(last[metric])
  mode = cfg.get('select_mode', 'max')
  return {'metric': metric, 'mode': mode, 'step': selection.select_step(curve, mode),
          'curve': [[s, curve[s]] for s in sorted(curve)]}


def _final_state(checkpoint_dir: pathlib.Path, evaluator: evaluation.Evaluator,
                 state: steps.TrainState, until: int | None = None
                 ) -> tuple[steps.TrainState, dict[str, Any]]:
  """-> (the state the final evaluation uses, what it is, for results.json). With
  eval.average_checkpoints = N > 1, its params are the mean of the last N checkpoints' (fewer
  when fewer were saved, with a warning); `until` (a step chosen on validation): of the last N up
  to that step, and the other model state (e.g. BatchNorm statistics) is that step's; otherwise
  the other model state stays the last step's."""
  cfg = evaluator.cfg
  last = int(jax.device_get(state.step))
  until = last if until is None else until
  averaged = [until]
  if cfg.average_checkpoints > 1 or until != last:
    averaged = [s for s in checkpoints.saved_steps(checkpoint_dir) if s <= until]
    averaged = averaged[-cfg.average_checkpoints:]
    if len(averaged) < cfg.average_checkpoints:
      logging.warning('eval.average_checkpoints=%d: only %d checkpoints saved up to step %d '
                      '(%s); averaging those', cfg.average_checkpoints, len(averaged), until,
                      averaged)
    params = checkpoints.average_params(checkpoint_dir, state.params, averaged)
    other = state.other
    if until != last and jax.tree.leaves(other):
      other = checkpoints.load_params(checkpoint_dir, state.params, other, step=until)[1]
    state = state._replace(params=params, other=other)
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
