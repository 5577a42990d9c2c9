"""Seed-parallel training: the runs of one config that differ only in their seed, as one program.

  results = train_seeds([config_seed0, config_seed1, config_seed2], [dir0, dir1, dir2])

Every array of the training state gets a leading seed axis S: params [S, ...], optimizer state
[S, ...], RNG keys [S] and the step [S]. Initialization is one jax.vmap over the seeds' keys
(the model built from nnx.Rngs(key(seed)), then tx.init). The train step is the pure
steps.make_train_step that a single run uses, mapped over the seed axis and jitted once for the
group, state donated: one compile and one dispatch per step for all seeds. How it is mapped
(SEED_MAPS) depends on the backend (seed_map()):
  'map'   jax.lax.map: the seeds one after the other inside the program, each at the single
          run's shapes. The CPU default: there XLA runs the vmapped step slower than the seeds'
          separate steps. Measured on one core of a 2-core Zen3 (XLA single-threaded, as in a
          sweep's lanes; load average 1.6-4 from other jobs), ms per step of 3 seeds, the demo's
          models, all in one process: seq2seq LSTM-64 + additive,
          batch 64: separate steps 57.0, vmap 100.8, map 54.3; Transformer d=64 + additive,
          batch 32: 68.6, 106.7, 67.2. (A vmapped LSTM scan's gradient alone: 3.8x the time of
          three separate ones.)
  'vmap'  jax.vmap: one batched program, the default elsewhere (GPU, TPU), where small models
          leave the device idle between kernels; not measured here.
On CPU a group therefore saves compile, start-up and dispatch, not arithmetic: `make demo` (8
variants x 3 seeds, 2 lanes of one core) took 391 s seed-parallel against 463 s with
--noseed_parallel (0.84x), run after run on the idle 2-core machine, with identical test metrics per
seed; its train steps alone were 426 CPU-seconds, i.e. at least 213 s on the 2 cores.
Either way, seed s computes what its own run computes:
  - init from nnx.Rngs(seed) (the same keys as build.build_model's nnx.Rngs(seed));
  - its own data order: batch `step` of seed s is batching.train_batches(task, train, s).batch(
    step), a pure function of (seed, step); the S batches are stacked [S, B, ...];
  - its own dropout: keys fold_in(key(seed), step), as in steps.make_train_step.
Evaluation runs per seed: each seed's slice of the state goes through the Evaluator a single run
uses (compiled once for the group), so its metrics and samples are those of its own run.

Each seed keeps its own workdir, written by the helpers of a single run (workdir.prepare,
MetricWriter, Checkpoints, run_info.results): config.json, metrics.jsonl, TensorBoard events,
checkpoints/<step>/ (that seed's params, opt_state, other, without the seed axis: a seed's
checkpoints resume as a single run too), samples.jsonl, results.json. Speed figures in
results.json (steps_per_s, train_s, compile_s) are the group's: each seed advanced one step per
group step; tokens_per_s and examples_per_s count that seed's batches.

Equal to separate runs to float tolerance, not bitwise: the step over the seeds is another XLA
program (a loop over the seeds, or batched matmuls), whose sums may round differently.
tests/test_seed_parallel.py checks final params and logged metrics against separate runs at
rtol 1e-5, atol 1e-6 (init is equal bitwise). The exception is a parameter whose gradient is
only rounding noise, e.g. a bias right before a BatchNorm, which removes it: Adam scales that
noise to steps of ±lr, in any two programs that round differently.

Choices and limits:
  - Only train.batching='padded' is grouped (`groupable`); bucketed runs train apart, one
    process per seed. With 'bucketed', the seeds' batches of one step come from different
    buckets (each seed has its own bucket order): different lengths and, with
    train.batch_tokens > 0, different numbers of rows. Padding each step's batches to the
    longest would keep the loss (PAD is masked) but not the row counts, and would give back
    much of what bucketing saves.
  - No start phase (train.start_phase): each seed would end it at its own step, on its own
    validation loss.
  - One process (jax.process_count() == 1); the batch axis is split over the local devices as in
    a single run, the seed axis is not.
  - Resume: from each seed's own checkpoints, at one step for the group: the seeds' newest
    intact step, or when those differ (a group killed between two seeds' saves) the oldest of
    them, which the seeds ahead restore too (train.keep_checkpoints >= 2 keeps it). The sweep
    groups runs by their latest checkpoint step.
  - NaN guard: a seed whose train metric or params become NaN / Inf stops at once (no more rows,
    checkpoints or evaluations in its workdir; its last checkpoint stays), with an error logged
    naming the seed; the others train to the end and write their results. Then SeedsFailedError
    names every stopped seed, its workdir and the guard's message.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from attention_zoo import build
from attention_zoo.data.base import Task
from attention_zoo.registry import choose
from attention_zoo.train import batching, config_utils, evaluation, loop, optim, run_info, steps
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import Checkpoints
from attention_zoo.train.writers import MetricWriter, progress_bar

SEED = 'seed'  # the one config key that may differ within a group


class SeedsFailedError(loop.NonFiniteError):
  """Seeds of a group stopped on NaN / Inf (the NaN guard); the others finished."""


def groupable(config: ml_collections.ConfigDict) -> str | None:
  """Why `config` cannot train seed-parallel, or None when it can (see the module docstring)."""
  tc = config.train
  if tc.get('batching', 'padded') != 'padded':
    return (f'train.batching={tc.batching!r}: the seeds\' batches of one step have different '
            "bucket shapes; only 'padded' batches train seed-parallel")
  if tc.get('start_phase'):
    return 'train.start_phase is set: each seed would end its start phase at its own step'
  return None


def check_group(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """ValueError unless the configs differ only in `seed`, with distinct seeds, and can group."""
  if not configs:
    raise ValueError('seed-parallel training needs at least one config')
  first = config_utils.to_dict(configs[0])
  for c in configs[1:]:
    diff = [k for k in config_utils.differing_keys(first, config_utils.to_dict(c)) if k != SEED]
    if diff:
      raise ValueError(f'seed-parallel runs must differ only in {SEED!r}; seed {c.seed} differs '
                       f'from seed {configs[0].seed} in {diff}')
  seeds = [c.seed for c in configs]
  if len(set(seeds)) != len(seeds):
    raise ValueError(f'seed-parallel runs need distinct seeds, got {seeds}')
  why = groupable(configs[0])
  if why:
    raise ValueError(f'cannot train seed-parallel: {why}')
  if jax.process_count() != 1:
    raise ValueError(f'seed-parallel training runs in one process, not {jax.process_count()}')


def init_states(config: ml_collections.ConfigDict, task: Task, tx, seeds: Sequence[int],
                sharding) -> tuple[nnx.GraphDef, nnx.GraphDef, steps.TrainState]:
  """-> (train-mode graphdef, eval-mode graphdef, TrainState [S, ...] at step 0 on `sharding`).

  One jitted jax.vmap over key(seed) [S] of: build the model from nnx.Rngs(key), split it
  (steps.split_model), tx.init(params): what steps.init_state does for one seed.
  """
  graphdefs = {}

  def init(key: jax.Array) -> steps.TrainState:
    model = _make_model(config, task, nnx.Rngs(key))
    model.eval()
    graphdefs['eval'] = steps.split_model(model)[0]
    model.train()
    graphdefs['train'], params, rngs, other = steps.split_model(model)
    return steps.TrainState(jnp.asarray(0, jnp.int32), params, tx.init(params), rngs, other)

  keys = jnp.stack([jax.random.key(s) for s in seeds])  # [S]
  state = jax.jit(jax.vmap(init), out_shardings=sharding)(keys)
  return graphdefs['train'], graphdefs['eval'], state


def _make_model(config: ml_collections.ConfigDict, task: Task, rngs: nnx.Rngs) -> nnx.Module:
  """build.build_model with `rngs` in place of nnx.Rngs(config.seed)."""
  from attention_zoo.models import get_model  # pylint: disable=import-outside-toplevel
  return get_model(config.model_name, rngs=rngs, **build.model_dims(config.model_name, task),
                   **config.model.to_dict())


def _mapped(step: Callable[..., Any]) -> Callable[..., Any]:
  """step over the leading seed axis of every argument, one seed after the other in one
  program (jax.lax.map): each seed runs the single run's ops at the single run's shapes."""
  return lambda *args: jax.lax.map(lambda one: step(*one), args)


# How the train step runs over the seed axis (see the module docstring), by jax.default_backend().
SEED_MAPS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    'vmap': jax.vmap, 'map': _mapped}
SEED_MAP_BY_BACKEND = {'cpu': 'map'}  # any other backend: 'vmap'


def seed_map(backend: str | None = None) -> str:
  """The SEED_MAPS entry of `backend` (default: jax.default_backend())."""
  return SEED_MAP_BY_BACKEND.get(backend or jax.default_backend(), 'vmap')


def compile_seed_step(graphdef: nnx.GraphDef, task: Task, tx, lr_fn, state: steps.TrainState,
                      batch: dict, seed_keys: jax.Array, sharding, *,
                      label_smoothing: float = 0.0, how: str | None = None):
  """steps.compile_train_step for a state and batch with a leading seed axis: -> (step, leaves,
  treedef), step(leaves, batch [S, B, ...], seed_keys [S]) -> (leaves, metrics {name: [S]}),
  the single run's train_step over the seeds (SEED_MAPS[how], default seed_map()), the leaves
  donated."""
  leaves, treedef = jax.tree.flatten(state)
  one = steps.make_train_step(graphdef, task, tx, steps.rng_tags(state.rngs), lr_fn,
                              label_smoothing=label_smoothing)
  over_seeds = choose(SEED_MAPS, how or seed_map(), 'seed map')
  step_fn = jax.jit(steps.flat_step(over_seeds(one), treedef), donate_argnums=0,
                    out_shardings=sharding)
  return step_fn.lower(leaves, batch, seed_keys).compile(), leaves, treedef


def stack_to_device(batches: Sequence[dict[str, np.ndarray]], mesh) -> dict[str, jax.Array]:
  """S host batches -> {key: [S, B, ...]} on `mesh`, B split over 'data' when it divides."""
  stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
  size = len(next(iter(stacked.values()))[0])
  spec = P(None, 'data') if size % mesh.size == 0 else P()
  return jax.device_put(stacked, NamedSharding(mesh, spec))


@jax.jit
def _unstack(state: steps.TrainState) -> list[steps.TrainState]:
  """TrainState [S, ...] -> S TrainStates (one dispatch for every leaf of every seed)."""
  size = jax.tree.leaves(state)[0].shape[0]
  return [jax.tree.map(lambda x, i=i: x[i], state) for i in range(size)]


_all_finite = jax.jit(jax.vmap(steps.all_finite))  # params [S, ...] -> bool [S]


def _stack(states: Sequence[steps.TrainState], sharding) -> steps.TrainState:
  return jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *states), sharding)


def train_seeds(configs: Sequence[ml_collections.ConfigDict],
                workdirs: Sequence[str | pathlib.Path], *, task: Task | None = None,
                fresh: bool = False, stop_after_step: int | None = None) -> list[dict[str, Any]]:
  """Trains `configs` (equal but for their seeds) as one program -> the results.json of each.

  Args: as loop.train_and_evaluate's, one config and one workdir per seed; seeds whose workdir
  holds a finished run (results.json at train.steps) are skipped, their results returned.
  Raises: as train_and_evaluate (ValueError before any workdir is touched), and
    SeedsFailedError after the others finished when the NaN guard stopped some seeds.
  """
  if len(configs) != len(workdirs):
    raise ValueError(f'{len(configs)} configs for {len(workdirs)} workdirs')
  check_group(configs)
  for c in configs:
    config_utils.check_values(c, jax.device_count())
  loop._check_final_evaluation(configs[0])  # pylint: disable=protected-access
  workdirs = [pathlib.Path(w) for w in workdirs]
  for c, w in zip(configs, workdirs):
    wd.prepare(w, config_utils.to_dict(c), fresh=fresh, is_main=True)
  out: dict[int, dict[str, Any]] = {}
  todo = []
  for i, w in enumerate(workdirs):
    if not fresh and (w / wd.RESULTS).exists() and _latest_step(w) >= configs[i].train.steps:
      logging.info('%s: finished run; %s kept', w, wd.RESULTS)
      out[i] = wd.read_json(w / wd.RESULTS)
    else:
      todo.append(i)
  if todo:
    results = _train([configs[i] for i in todo], [workdirs[i] for i in todo], task,
                     stop_after_step)
    out.update(zip(todo, results))
  return [out.get(i, {}) for i in range(len(configs))]


def _latest_step(workdir: pathlib.Path) -> int:
  ckpts = Checkpoints(workdir / wd.CHECKPOINTS, 1)
  try:
    return ckpts.latest_step() or 0
  finally:
    ckpts.close()


def _train(configs, workdirs: list[pathlib.Path], task: Task | None,
           stop_after_step: int | None) -> list[dict[str, Any]]:
  """The group's program (see the module docstring); every seed unfinished."""
  t_start = time.perf_counter()
  ckpts = [Checkpoints(w / wd.CHECKPOINTS, configs[0].train.keep_checkpoints) for w in workdirs]
  try:
    return _train_with(configs, workdirs, task, stop_after_step, ckpts, t_start)
  finally:
    for c in ckpts:
      c.close()  # waits for the last asynchronous save


def _train_with(configs, workdirs: list[pathlib.Path], task: Task | None,
                stop_after_step: int | None, ckpts: list[Checkpoints],
                t_start: float) -> list[dict[str, Any]]:
  config, tc, size = configs[0], configs[0].train, len(configs)
  seeds = [c.seed for c in configs]
  latest = [c.latest_step() for c in ckpts]
  if any(n is None for n in latest) and any(n is not None for n in latest):
    raise ValueError('seed-parallel runs resume together, but only some seeds have '
                     'checkpoints: ' + ', '.join(f'seed {s} ({w}) at step {n or "none"}'
                                                 for s, w, n in zip(seeds, workdirs, latest))
                     + '; train them apart (--noseed_parallel)')
  task = task if task is not None else build.get_task(config)
  mesh = batching.make_mesh()
  rep = batching.replicated(mesh)
  tx = optim.make_optimizer(tc, config.model)
  g_train, g_eval, state = init_states(config, task, tx, seeds, rep)
  start = 0
  if latest[0] is not None:
    start, state = _restore(ckpts, state, rep, seeds, workdirs)
    logging.info('resumed seeds %s from step %d', seeds, start)
  if loop._model_start_phase(g_train, _unstack(state)[0]):  # pylint: disable=protected-access
    raise ValueError('the model has a start phase: it cannot train seed-parallel')
  writers = [MetricWriter(w) for w in workdirs]
  for writer in writers:
    writer.truncate_after(start if start else -1, final=start >= tc.steps)
  train_batches = [batching.train_batches(task, tc, s) for s in seeds]
  seed_keys = jax.device_put(jnp.stack([jax.random.key(s) for s in seeds]), rep)  # [S]
  speed = run_info.Throughput()
  tokens, examples = [0] * size, [0] * size
  t0 = time.perf_counter()
  first = stack_to_device([b.batch(0) for b in train_batches], mesh)
  train_step, leaves, treedef = compile_seed_step(
      g_train, task, tx, optim.learning_rate(tc, config.model), state, first, seed_keys, rep,
      label_smoothing=tc.label_smoothing)
  evaluator = evaluation.make_evaluator(g_eval, task, mesh, config.eval,
                                        batching.full_width(task.splits['train']))
  speed.compile_s = time.perf_counter() - t0
  stopped: dict[int, str] = {}  # seed index -> why the NaN guard stopped it
  live = lambda: [i for i in range(size) if i not in stopped]
  if start == 0 and tc.eval_every > 0:
    for i, one in enumerate(_unstack(state)):
      loop._evaluate(evaluator, writers[i], 'validation', 0, one)  # pylint: disable=protected-access

  rows: list[tuple[int, dict]] = []
  last_train = [wd.logged(w, start, 'train') if start >= tc.steps else {} for w in workdirs]
  last_saved = start
  bar = progress_bar(tc.steps, start)
  t_mark = t_log = time.perf_counter()
  step = start
  try:
    while step < tc.steps:
      host = [b.batch(step) for b in train_batches]
      for i, h in enumerate(host):
        tokens[i] += batching.count_tokens(h, task.input_keys)
        examples[i] += len(h[task.target_key])
      leaves, metrics = train_step(leaves, stack_to_device(host, mesh), seed_keys)
      step += 1
      speed.steps += 1
      rows.append((step, metrics))
      bar.update(1)
      if stop_after_step is not None and step >= stop_after_step:
        return []  # simulated kill: nothing more is written
      done = step == tc.steps
      do_ckpt = done or step % tc.checkpoint_every == 0
      do_eval = done or (tc.eval_every > 0 and step % tc.eval_every == 0)
      if do_ckpt or do_eval or step % tc.log_every == 0:
        state = jax.tree.unflatten(treedef, leaves)
        host_rows = jax.device_get(rows)
        now = time.perf_counter()
        speed.train_s += now - t_mark
        steps_per_s = len(rows) / max(now - t_log, 1e-9)
        rows = []
        for i in live():
          try:
            last_train[i] = loop._mean_metrics(  # pylint: disable=protected-access
                [(s, {k: v[i] for k, v in m.items()}) for s, m in host_rows], last_saved)
          except loop.NonFiniteError as e:
            _stop(stopped, i, seeds, workdirs, str(e))
            continue
          last_train[i]['steps_per_s'] = steps_per_s
          writers[i].write(step, 'train', last_train[i])
        if live():
          bar.set_postfix(loss=f'{np.mean([last_train[i]["loss"] for i in live()]):.4f}')
        per_seed = _unstack(state) if live() and (do_eval or do_ckpt) else []
        if do_eval and not done:
          for i in live():
            loop._evaluate(evaluator, writers[i], 'validation', step,  # pylint: disable=protected-access
                           per_seed[i])
        if do_ckpt:
          finite = jax.device_get(_all_finite(state.params))  # [S]
          for i in live():
            if not finite[i]:
              _stop(stopped, i, seeds, workdirs,
                    f'parameters are not finite at step {step}; stopped (last checkpoint: step '
                    f'{last_saved or "none"})')
              continue
            one = per_seed[i]
            ckpts[i].save(step, one.params, one.opt_state, one.other)
          last_saved = step
        if not live():
          break
        t_mark = t_log = time.perf_counter()
  finally:
    bar.close()
    for i in range(size):
      ckpts[i].close()  # waits for the last asynchronous save
      writers[i].flush()

  out = []
  per_seed = _unstack(jax.tree.unflatten(treedef, leaves))
  for i in range(size):
    if i in stopped:
      writers[i].close()
      out.append({})
      continue
    t_final = time.perf_counter()
    final_state, final = loop._final_state(  # pylint: disable=protected-access
        workdirs[i] / wd.CHECKPOINTS, evaluator, per_seed[i])
    evals = {split: loop._evaluate(evaluator, writers[i], split, step,  # pylint: disable=protected-access
                                   final_state, final=True)
             for split in loop._final_splits(task)}  # pylint: disable=protected-access
    final['seconds'] = time.perf_counter() - t_final
    final.update((k, v) for k, v in task.metadata.items() if k.endswith('_signature'))
    seed_speed = dataclasses.replace(speed, tokens=tokens[i], examples=examples[i])
    results = run_info.results(step, last_train[i], evals, per_seed[i].params, seed_speed,
                               tc.batch_size)
    results['final_evaluation'] = final
    results['wall_s'] = time.perf_counter() - t_start  # the group's process so far
    results['seed_group_size'] = size  # a run's share of the wall time is wall_s / size
    wd.write_json(workdirs[i] / wd.RESULTS, results)
    writers[i].close()
    out.append(results)
  if stopped:
    raise SeedsFailedError('; '.join(
        f'seed {seeds[i]} ({workdirs[i]}): {why}' for i, why in sorted(stopped.items()))
        + f'. The other seeds ({[seeds[i] for i in live()]}) finished.')
  return out


def _stop(stopped: dict[int, str], i: int, seeds, workdirs, why: str) -> None:
  stopped[i] = why
  logging.error('NaN guard: seed %d (%s) stopped: %s; the other seeds go on', seeds[i],
                workdirs[i], why)


def _restore(ckpts: list[Checkpoints], state: steps.TrainState, rep, seeds: Sequence[int],
             workdirs: Sequence[pathlib.Path]) -> tuple[int, steps.TrainState]:
  """-> (step, `state` [S, ...] with every seed's checkpoint of that step): each seed's newest
  intact checkpoint (Checkpoints.restore_latest) when they agree, else the oldest of those,
  which the seeds ahead (a group killed between two seeds' saves) restore too. ValueError,
  naming the seed, when one of them has no intact checkpoint of that step."""
  got = [ckpt.restore_latest(one.params, one.opt_state, one.other)
         for ckpt, one in zip(ckpts, _unstack(state))]
  step = min(g[0] for g in got)
  restored = []
  for i, (ckpt, one) in enumerate(zip(ckpts, _unstack(state))):
    trees = got[i][1:]
    if got[i][0] != step:
      logging.warning('seed %d (%s) is at step %d, the others at step %d: it resumes from step '
                      '%d too', seeds[i], workdirs[i], got[i][0], step, step)
      try:
        trees = ckpt.restore(step, one.params, one.opt_state, one.other)
      except Exception as e:  # pylint: disable=broad-except  # orbax / tensorstore: many kinds
        raise ValueError(f'seed {seeds[i]} ({workdirs[i]}) has no intact checkpoint of step '
                         f'{step}, where the other seeds resume ({type(e).__name__}: {e}); train '
                         'them apart (--noseed_parallel)') from e
    params, opt_state, other = trees
    restored.append(one._replace(step=jnp.asarray(step, jnp.int32), params=params,
                                 opt_state=opt_state, other=other))
  return step, _stack(restored, rep)
