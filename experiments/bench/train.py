r"""The `train` section of the benchmark: train steps/s of the demo's two models, zoo vs PyTorch.

  python -m experiments.bench train [--json=PATH] [--threads=1,2] [--steps=N] [--quick]
  python -m experiments.bench train --quick   (a few steps at 1 thread, PyTorch eager only)

The models are configs/dates_demo.py's: the seq2seq LSTM-64 with the additive score, batch 64
(family=seq2seq,score=additive), and the Transformer d=64, 2 + 2 layers, one head, batch 32
(family=transformer,score=scaled_dot). The zoo side is the training loop's own step
(attention_zoo/train/steps.py compile_train_step: the config's optimizer, i.e. global grad-norm
clipping then Adam with its schedule, the loss and metrics of the loop), on the real batches of
the dates task (batching.train_batches, steps 0, 1, ...), each placed on the device inside the
timing as the loop does. The PyTorch side (experiments/bench/train_torch.py, only where torch is
importable) is the same two models with equal trainable parameter counts (checked: within 2%),
the same masks and loss, torch.optim.Adam with the config's b1 / b2 / eps, grad-norm clipping
and the zoo schedule's lr at every step, on the same batches; timed eager and compiled
(torch.compile of the forward and loss; the compile time, that of the first step, is reported
apart). PyTorch is not a dependency of the package; without it its columns are null.

Each measurement runs in its own child process pinned to --threads CPUs (os.sched_setaffinity),
XLA single-threaded on one CPU (attention_zoo.sweeps.processes.run_env) and
torch.set_num_threads(threads): --warmup steps, then the median steps/s of --windows windows of
--steps steps. The load average is printed before and after: on a shared machine compare the
rows of one run, not numbers across runs. Each zoo row also has the model FLOPs of a step, their
source, the FLOP/s and the MFU against the matmul peak measured in the child
(attention_zoo/train/flops.py). Compile times come from warm caches where there are
some (JAX's persistent compilation cache, TorchInductor's on-disk caches): a second run reports
less.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from attention_zoo import build
from attention_zoo.sweeps import processes
from attention_zoo.train import batching, flops, optim, run_info
from attention_zoo.train import steps as steps_lib
from configs import common, dates_demo

flags.DEFINE_string('json', None, 'Also write {"load", "rows": [...]} to this file.')
flags.DEFINE_list('threads', ['1', '2'], 'CPUs (and threads) of each measurement.')
flags.DEFINE_list('models', ['seq2seq', 'transformer'], 'Models of MODELS to time.')
flags.DEFINE_integer('steps', 20, 'Timed train steps per window.', lower_bound=1)
flags.DEFINE_integer('windows', 5, 'Timed windows per measurement (median reported).',
                     lower_bound=1)
flags.DEFINE_integer('warmup', 5, 'Untimed steps first (after compiling).', lower_bound=1)
flags.DEFINE_bool('torch', True, 'Also time the PyTorch models (where torch is importable).')
flags.DEFINE_bool('quick', False, 'A tiny run to check the benchmark works: 1 thread (unless '
                  '--threads is given), 1 warm-up step, 2 windows of 2 steps, the task at its '
                  'tiny split sizes, PyTorch eager only.')
flags.DEFINE_enum('child', None, ['zoo', 'torch_eager', 'torch_compiled'],
                  'Internal: run one measurement of --models[0] at --threads[0] in this process '
                  'on the inputs in --child_dir, and print its result.')
flags.DEFINE_string('child_dir', None, 'Internal: the inputs of a --child measurement.')
FLAGS = flags.FLAGS

# name -> configs/dates_demo.py arg
MODELS = {'seq2seq': 'family=seq2seq,score=additive',
          'transformer': 'family=transformer,score=scaled_dot'}
KINDS = ('zoo', 'torch_eager', 'torch_compiled')  # the measurements of one row
RESULT = 'bench train result: '  # the child's result line, JSON after it
_REPO = pathlib.Path(__file__).resolve().parents[2]  # the repository root


def demo_config(name: str, quick: bool = False):
  """configs/dates_demo.py's config of model `name`; quick: the task at its tiny split sizes."""
  if name not in MODELS:
    raise app.UsageError(f'--models: unknown {name!r}; known: {sorted(MODELS)}')
  config = dates_demo.get_config(MODELS[name])
  if quick:
    config.task.update(common.TINY_SPLITS)
  return config


def write_inputs(name: str, quick: bool, num_steps: int, out: pathlib.Path) -> dict:
  """Writes what every measurement of model `name` reads to `out`: batches.npz (the train
  batches of steps 0 .. num_steps - 1, [steps, B, L] per key, and 'lr' [steps], the schedule's lr
  at each step) and spec.json (model name, config.model, config.train, vocabulary sizes)."""
  config = demo_config(name, quick)
  task = build.get_task(config)  # built into the dataset cache once, read by the children
  train = batching.train_batches(task, config.train, config.seed)
  host = [train.batch(s) for s in range(num_steps)]
  arrays = {k: np.stack([b[k] for b in host]) for k in host[0]}  # [steps, B, ...] per key
  lr_fn = optim.learning_rate(config.train, config.model)
  arrays['lr'] = np.asarray(jax.jit(jax.vmap(lr_fn))(jnp.arange(num_steps)), np.float64)
  out.mkdir(parents=True, exist_ok=True)
  np.savez(out / 'batches.npz', **arrays)
  spec = dict(model_name=config.model_name, config_arg=MODELS[name], model=config.model.to_dict(),
              train=config.train.to_dict(), **build.model_dims(config.model_name, task))
  (out / 'spec.json').write_text(json.dumps(spec))
  return spec


def measure_zoo(name: str, quick: bool, data: pathlib.Path, *, warmup: int, windows: int,
                steps: int) -> dict:
  """The loop's train step (state, optimizer and compiled step built as train_and_evaluate
  builds them) on the batches of `data` -> steps_per_s (median of the windows), compile_s."""
  config = demo_config(name, quick)
  tc = config.train
  arrays = np.load(data / 'batches.npz')
  keys = [k for k in arrays.files if k != 'lr']  # the batch as train_batches gives it
  host = [{k: arrays[k][s] for k in keys} for s in range(len(arrays['lr']))]
  task = build.get_task(config)
  mesh = batching.make_mesh()
  rep = batching.replicated(mesh)
  tx = optim.make_optimizer(tc, config.model)
  g_train, _, state = steps_lib.init_state(build.build_model(config, task), tx,
                                           jax.local_devices()[0])
  state = batching.replicate(state, mesh)
  params = run_info.param_count(state.params)
  seed_key = batching.replicate(jax.random.key(config.seed), mesh)
  start = time.perf_counter()
  step_fn, leaves, _ = steps_lib.compile_train_step(
      g_train, task, tx, optim.learning_rate(tc, config.model), state,
      batching.to_device(host[0], mesh), seed_key, rep, label_smoothing=tc.label_smoothing)
  compile_s = time.perf_counter() - start
  count = flops.analytic_count(config.model_name, config.model.to_dict(),
                               build.model_dims(config.model_name, task))
  step_flops, flops_source = flops.step_flops(
      step_fn, analytic=count and functools.partial(count, host[0]))
  for s in range(warmup):
    leaves, metrics = step_fn(leaves, batching.to_device(host[s], mesh), seed_key)
  jax.block_until_ready(leaves)
  rates, s = [], warmup
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps):
      leaves, metrics = step_fn(leaves, batching.to_device(host[s], mesh), seed_key)
      s += 1
    jax.block_until_ready((leaves, metrics))
    rates.append(steps / (time.perf_counter() - start))
  steps_per_s = float(np.median(rates))
  used = flops.utilization(step_flops, 1.0, steps_per_s,  # one second at the median rate
                           dtype=config.model.get('dtype', 'float32'))
  return {'steps_per_s': steps_per_s, 'window_steps_per_s': rates,
          'compile_s': compile_s, 'param_count': params, 'loss': float(metrics['loss']),
          'flops_per_step': step_flops, 'flops_source': flops_source, **used,
          'jax': jax.__version__}


def measure_torch(data: pathlib.Path, threads: int, compiled: bool, *, warmup: int,
                  windows: int, steps: int) -> dict:
  """The PyTorch model of `data`'s spec on its batches (experiments/bench/train_torch.py)."""
  from experiments.bench import train_torch  # pylint: disable=import-outside-toplevel
  spec = json.loads((data / 'spec.json').read_text())
  arrays = dict(np.load(data / 'batches.npz'))
  return train_torch.measure(spec, arrays, threads=threads, warmup=warmup, windows=windows,
                                   steps=steps, compiled=compiled)


def run_child(args) -> None:
  """One measurement in this (pinned) process; prints RESULT + its JSON."""
  name, threads, data = args.models[0], int(args.threads[0]), pathlib.Path(args.child_dir)
  counts = dict(warmup=args.warmup, windows=args.windows, steps=args.steps)
  if args.child == 'zoo':
    result = measure_zoo(name, args.quick, data, **counts)
  else:
    result = measure_torch(data, threads, args.child == 'torch_compiled', **counts)
  result['cpus'] = sorted(os.sched_getaffinity(0))
  print(RESULT + json.dumps(result), flush=True)


def launch(kind: str, name: str, cpus: set[int], data: pathlib.Path, args) -> dict | None:
  """Runs measurement `kind` of model `name` in a child process on `cpus` -> its result; None
  (with the reason printed) when a PyTorch measurement fails; RuntimeError when the zoo's does."""
  cmd = [sys.executable, '-m', 'experiments.bench', 'train', f'--child={kind}',
         f'--models={name}', f'--threads={len(cpus)}', f'--child_dir={data}',
         f'--warmup={args.warmup}', f'--windows={args.windows}', f'--steps={args.steps}',
         f'--quick={args.quick}']
  # launch() pins the thread that calls it (its children inherit that): a worker thread, so that
  # this process keeps its own CPUs. Its fork is followed by exec at once: the warning that JAX is
  # multithreaded does not apply.
  with warnings.catch_warnings(), concurrent.futures.ThreadPoolExecutor(1) as pool:
    warnings.filterwarnings('ignore', r'os\.fork\(\) was called', RuntimeWarning)
    proc = pool.submit(processes.launch, cmd, cpus, _REPO).result()
  lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT)]
  if proc.returncode == 0 and lines:
    return json.loads(lines[-1][len(RESULT):])
  message = (f'bench train: {kind} {name} on {len(cpus)} CPU(s) failed (exit {proc.returncode}):'
             f'\n{proc.stderr[-3000:]}')
  if kind == 'zoo':
    raise RuntimeError(message)
  print(message + f'\n-> {kind} is null in this row', flush=True)
  return None


def check_params(name: str, zoo: int, torch_count: int) -> None:
  """The PyTorch model has the zoo's parameter count, to 2%."""
  print(f'{name}: parameters zoo {zoo:,}, PyTorch {torch_count:,} (trainable)')
  if abs(torch_count - zoo) > 0.02 * zoo:
    raise AssertionError(f'{name}: the PyTorch model has {torch_count:,} parameters, the zoo '
                         f'model {zoo:,}: more than 2% apart')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.child:
    run_child(FLAGS)
  else:
    run(FLAGS)


def run(args) -> list[dict]:
  """Measures every model at every thread count; prints the table (and writes --json)."""
  if args.quick:
    args.warmup, args.windows, args.steps = 1, 2, 2
    if not args['threads'].present:
      args.threads = ['1']
  threads = [int(t) for t in args.threads]
  cpus = sorted(os.sched_getaffinity(0))
  if not threads or min(threads) < 1 or max(threads) > len(cpus):
    raise app.UsageError(f'--threads={",".join(args.threads)}: each must be in 1..{len(cpus)}, '
                         f'the CPUs this process may use ({cpus})')
  kinds = KINDS[:1]
  if args.torch and importlib.util.find_spec('torch') is None:
    print('torch is not importable: the PyTorch columns are null (for the comparison: '
          '.venv/bin/pip install torch==2.13.0)')
  elif args.torch:
    kinds = KINDS
    if args.quick:  # torch.compile's first step alone takes longer than the rest of --quick
      kinds = KINDS[:2]
      print('--quick: torch.compile is not timed (torch_compiled is null)')
  load_before = os.getloadavg()
  print(f'bench train: {", ".join(args.models)} at {threads} thread(s); {args.warmup} warm-up '
        f'steps, median of {args.windows} windows of {args.steps} steps; {len(cpus)} CPUs, load '
        f'average {" ".join(f"{x:.2f}" for x in load_before)}', flush=True)
  rows = []
  with tempfile.TemporaryDirectory(prefix='bench_train_') as tmp:
    for name in args.models:
      data = pathlib.Path(tmp) / name
      spec = write_inputs(name, args.quick, args.warmup + args.windows * args.steps, data)
      for n in threads:
        found = {}
        for kind in kinds:
          found[kind] = launch(kind, name, set(cpus[:n]), data, args)
          if found[kind]:
            print(f'  {name} {kind} {n} thread(s): {found[kind]["steps_per_s"]:.2f} steps/s '
                  f'(windows {" ".join(f"{r:.2f}" for r in found[kind]["window_steps_per_s"])})'
                  + (f', compile {found[kind]["compile_s"]:.1f} s'
                     if found[kind].get('compile_s') is not None else ''), flush=True)
        rows.append(make_row(name, n, spec, found))
  load_after = os.getloadavg()
  print_table(rows)
  print(f'\nload average {" ".join(f"{x:.2f}" for x in load_before)} before, '
        f'{" ".join(f"{x:.2f}" for x in load_after)} after')
  if args.json:
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump({'load': {'before': list(load_before), 'after': list(load_after)},
                 'rows': rows}, f, indent=1)
    print(f'wrote {args.json}')
  return rows


def make_row(name: str, threads: int, spec: dict, found: dict[str, dict | None]) -> dict:
  """One row of the table / JSON from the measurements of one model at one thread count."""
  get = lambda kind, key: (found.get(kind) or {}).get(key)
  zoo_rate = get('zoo', 'steps_per_s')
  torch_rates = [r for r in (get('torch_eager', 'steps_per_s'),
                             get('torch_compiled', 'steps_per_s')) if r is not None]
  torch_params = get('torch_eager', 'param_count') or get('torch_compiled', 'param_count')
  if torch_params is not None:
    check_params(name, get('zoo', 'param_count'), torch_params)
  return {'model': name, 'threads': threads, 'config_arg': spec['config_arg'],
          'model_dims': {k: spec[k] for k in ('src_vocab_size', 'tgt_vocab_size')},
          'batch_size': spec['train']['batch_size'],
          'zoo_steps_per_s': zoo_rate,
          'torch_eager_steps_per_s': get('torch_eager', 'steps_per_s'),
          'torch_compiled_steps_per_s': get('torch_compiled', 'steps_per_s'),
          'ratio': zoo_rate / max(torch_rates) if torch_rates else None,
          'zoo_compile_s': get('zoo', 'compile_s'),
          'torch_compile_s': get('torch_compiled', 'compile_s'),
          'zoo_param_count': get('zoo', 'param_count'), 'torch_param_count': torch_params,
          'zoo_flops_per_step': get('zoo', 'flops_per_step'),
          'zoo_flops_source': get('zoo', 'flops_source'),
          'zoo_flop_per_s': get('zoo', 'flop_per_s'), 'zoo_mfu': get('zoo', 'mfu'),
          'zoo_peak_flop_per_s': get('zoo', 'peak_flop_per_s'),
          'versions': {k: v for k, v in (('jax', get('zoo', 'jax')),
                                         ('torch', get('torch_eager', 'torch'))) if v}}


def print_table(rows: list[dict]) -> None:
  fmt = lambda x, spec='.2f': '-' if x is None else format(x, spec)
  scaled = lambda x, unit: None if x is None else x / unit
  print('\n| model | threads | params zoo / torch | zoo steps/s | torch eager steps/s | '
        'torch compiled steps/s | zoo / best torch | compile s zoo / torch | zoo MFLOP/step '
        '(source) | zoo GFLOP/s | zoo MFU (peak GFLOP/s) |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['model']} (batch {r['batch_size']}) | {r['threads']} | "
          f"{fmt(r['zoo_param_count'], ',')} / {fmt(r['torch_param_count'], ',')} | "
          f"{fmt(r['zoo_steps_per_s'])} | {fmt(r['torch_eager_steps_per_s'])} | "
          f"{fmt(r['torch_compiled_steps_per_s'])} | {fmt(r['ratio'])} | "
          f"{fmt(r['zoo_compile_s'], '.1f')} / {fmt(r['torch_compile_s'], '.1f')} | "
          f"{fmt(scaled(r['zoo_flops_per_step'], 1e6), '.1f')} ({r['zoo_flops_source']}) | "
          f"{fmt(scaled(r['zoo_flop_per_s'], 1e9), '.2f')} | {fmt(r['zoo_mfu'], '.4f')} "
          f"({fmt(scaled(r['zoo_peak_flop_per_s'], 1e9), '.0f')}) |")

