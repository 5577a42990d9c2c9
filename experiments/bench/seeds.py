r"""The `seeds` section of the benchmark: how S seeds of one config train fastest on this machine.

  python -m experiments.bench seeds [--seeds=3] [--models=seq2seq,transformer] [--quick]

For each of the demo's attention models (configs/dates_demo.py: the seq2seq LSTM-64 and the
Transformer d=64, both with the additive score, the demo's slowest) and, with
--models=se_resnet, the SE-ResNet (small) of configs/mnist_resnet.py, the loop's train step for S
seeds (attention_zoo.train.seeds.SeedAxis), ms per step of all S seeds:
  separate  S single-run steps one after another (what one process per seed computes on a
            shared core, without the processes' start-up and compile; the program is compiled
            once, as the persistent compilation cache serves a sweep's later seeds);
  map       one program, jax.lax.map over the seeds;
  vmap      one program, jax.vmap over the seeds.
The measurement runs in a child pinned to one CPU with XLA single-threaded (a sweep lane's
setting, attention_zoo.sweeps.processes.run_env): --warmup steps, then the median of --windows
windows of --steps steps. The fastest of map and vmap is the platform's default seed map
(seeds.DEFAULT_BY_PLATFORM); the table says which one that is here.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags

from attention_zoo import build
from attention_zoo.sweeps import processes
from attention_zoo.train import batching, flops, optim, seeds
from attention_zoo.train import steps as steps_lib
from configs import common, dates_demo, mnist_resnet

flags.DEFINE_integer('seeds', 3, 'S, the seeds trained together.', lower_bound=2)
flags.DEFINE_list('models', ['seq2seq', 'transformer'], 'Models of MODELS to time.')
flags.DEFINE_integer('steps', 10, 'Timed group steps per window.', lower_bound=1)
flags.DEFINE_integer('windows', 5, 'Timed windows (median reported).', lower_bound=1)
flags.DEFINE_integer('warmup', 3, 'Untimed steps first (after compiling).', lower_bound=1)
flags.DEFINE_bool('quick', False, 'A tiny run to check the benchmark works: the task at its tiny '
                  'split sizes, 1 warm-up step, 2 windows of 2 steps.')
flags.DEFINE_bool('child', False, 'Internal: measure in this process and print the result.')
FLAGS = flags.FLAGS


MODELS = {  # name -> (its config, the task's overrides of --quick); a conv net too, as a seed
    #          map's speed depends on the model's ops
    'seq2seq': (lambda: dates_demo.get_config('family=seq2seq,score=additive'), common.TINY_SPLITS),
    'transformer': (lambda: dates_demo.get_config('family=transformer,score=additive'),
                    common.TINY_SPLITS),
    'se_resnet': (lambda: mnist_resnet.config(model='se_resnet_small'),
                  mnist_resnet.SIZES['tiny']['task']),
}


def model_config(name: str, quick: bool) -> ml_collections.ConfigDict:
  """The config of MODELS[name], with its task at tiny split sizes when `quick`."""
  make_config, quick_task = MODELS[name]
  config = make_config()
  if quick:
    config.task.update(quick_task)
  return config


WAYS = ('separate', *seeds.SEED_MAPS)
RESULT = 'bench seeds result: '


def measure(name: str, way: str, num_seeds: int, args) -> dict:
  """ms per step of `num_seeds` seeds of model `name`, trained `way`."""
  config = model_config(name, args.quick)
  tc = config.train
  task = build.get_task(config)
  mesh = batching.make_mesh()
  rep = batching.replicated(mesh)
  tx, lr = optim.make_optimizer(tc, config.model), optim.learning_rate(tc, config.model)
  seed_list = list(range(num_seeds))
  streams = [batching.train_batches(task, tc, s) for s in seed_list]
  axes = ([seeds.SeedAxis([s], mesh) for s in seed_list] if way == 'separate'
          else [seeds.SeedAxis(seed_list, mesh, way)])
  programs = []
  start = time.perf_counter()
  for i, axis in enumerate(axes):
    g, _, state = axis.init(config, task, tx)
    own = streams[i:i + 1] if way == 'separate' else streams
    if programs and way == 'separate':  # the same program (a sweep's compilation cache)
      programs.append([axis, own, programs[0][2], jax.tree.leaves(state)])
      continue
    step, leaves, _ = steps_lib.compile_train_step(
        g, task, tx, lr, state, axis.to_device([b.batch(0) for b in own]), axis.keys(), rep,
        label_smoothing=tc.label_smoothing, over_seeds=axis.over)
    programs.append([axis, own, step, leaves])
  compile_s = time.perf_counter() - start
  counts = [flops.step_flops(p[2]) for p in programs]  # the FLOPs of one step of the S seeds
  flops_per_step = sum(c for c, _ in counts) if all(c for c, _ in counts) else None

  def group_step(t):
    for p in programs:
      axis, own, step, leaves = p
      p[3], _ = step(leaves, axis.to_device([b.batch(t) for b in own]), axis.keys())

  for t in range(args.warmup):
    group_step(t)
  jax.block_until_ready([p[3] for p in programs])
  times, t = [], args.warmup
  for _ in range(args.windows):
    begin = time.perf_counter()
    for _ in range(args.steps):
      group_step(t)
      t += 1
    jax.block_until_ready([p[3] for p in programs])
    times.append(1e3 * (time.perf_counter() - begin) / args.steps)
  return {'model': name, 'way': way, 'seeds': num_seeds, 'ms_per_step': float(np.median(times)),
          'window_ms': times, 'compile_s': compile_s, 'batch_size': tc.batch_size,
          'flops_per_step': flops_per_step, 'flops_source': counts[0][1]}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  args = FLAGS
  if args.quick:
    args.warmup, args.windows, args.steps = 1, 2, 2
  unknown = sorted(set(args.models) - set(MODELS))
  if unknown:
    raise app.UsageError(f'--models: unknown {unknown}; known: {sorted(MODELS)}')
  if args.child:
    rows = [measure(m, w, args.seeds, args) for m in args.models for w in WAYS]
    print(RESULT + json.dumps(rows), flush=True)
    return
  cpu = {sorted(os.sched_getaffinity(0))[0]}
  load = os.getloadavg()
  print(f'bench seeds: {args.seeds} seeds of {", ".join(args.models)}, one CPU ({cpu}), XLA '
        f'single-threaded; load average {" ".join(f"{x:.2f}" for x in load)}', flush=True)
  cmd = [sys.executable, '-m', 'experiments.bench', 'seeds', '--child', *sys.argv[2:]]
  with concurrent.futures.ThreadPoolExecutor(1) as pool:  # pins the worker thread, not us
    proc = pool.submit(processes.launch, cmd, cpu,
                       pathlib.Path(__file__).resolve().parents[2]).result()
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT)]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f'bench seeds: the measurement failed:\n{proc.stderr[-3000:]}')
  rows = json.loads(lines[-1][len(RESULT):])
  print('\n| model (batch) | S | way | ms per step of S seeds | vs separate | compile s |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    base = next(x for x in rows if x['model'] == r['model'] and x['way'] == 'separate')
    print(f"| {r['model']} ({r['batch_size']}) | {r['seeds']} | {r['way']} | "
          f"{r['ms_per_step']:.1f} | {base['ms_per_step'] / r['ms_per_step']:.2f}x | "
          f"{r['compile_s']:.1f} |")
  for model in args.models:
    best = min((r for r in rows if r['model'] == model and r['way'] in seeds.SEED_MAPS),
               key=lambda r: r['ms_per_step'])
    print(f'{model}: fastest seed map here: {best["way"]}; CPU default: '
          f'{seeds.default_seed_map("cpu")}')
  print(f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())} after')
