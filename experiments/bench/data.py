r"""The `data` section of the benchmark: examples/s per task through the real grain pipeline.

  python -m experiments.bench data [--batch_size=128] [--batches=200] [--tasks=dates,mnist]

For each task: build s (TFDS array_record, into a fresh temp dir unless --tfds_dir), open s (a
second get_task on the built cache), first-batch s (includes decoding the split into memory),
then steady examples/s over --batches batches of --batch_size from task.batches('train', ...).
Real-data tasks read $ATTENTION_ZOO_DATA (default: the real-data folder beside the repository)
and are skipped when absent.
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import app, flags

from attention_zoo.data import get_task

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNTHETIC = ('dates', 'addition', 'copy', 'reverse', 'sort', 'recall', 'listops')
REAL = ('babi', 'mnist', 'tiny_shakespeare', 'multi30k')

flags.DEFINE_integer('batch_size', 128, 'Examples per batch.')
flags.DEFINE_integer('batches', 200, 'Timed batches per task.')
flags.DEFINE_list('tasks', list(SYNTHETIC + REAL), 'Tasks to measure.')
flags.DEFINE_string('tfds_dir', None,
                    'TFDS cache (default: a fresh temp dir, so builds are measured).')
FLAGS = flags.FLAGS


def measure(config: dict, batch_size: int, batches: int, tfds_dir: str) -> dict:
  """Timings of one task config (see module docstring)."""
  t0 = time.perf_counter()
  get_task(dict(config, tfds_dir=tfds_dir))
  t1 = time.perf_counter()
  task = get_task(dict(config, tfds_dir=tfds_dir))
  t2 = time.perf_counter()
  it = task.batches('train', batch_size, seed=0)
  next(it)
  t3 = time.perf_counter()
  for _ in range(batches):
    next(it)
  t4 = time.perf_counter()
  return {'task': config['name'], 'train': len(task.splits['train']), 'build_s': t1 - t0,
          'open_s': t2 - t1, 'first_batch_s': t3 - t2, 'ex_per_s': batches * batch_size / (t4 - t3)}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  run(FLAGS)


def run(args) -> list[dict]:
  """Measures and prints the table; `args` has batch_size, batches, tasks, tfds_dir."""
  data = os.environ.get('ATTENTION_ZOO_DATA') or os.path.join(os.path.dirname(_REPO), 'shared',
                                                               'data')
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tfds_dir = args.tfds_dir or tmp
    for name in args.tasks:
      config = {'name': name}
      if name in REAL:
        if not os.path.isdir(data):
          print(f'{name}: skipped, no data at {data} (set ATTENTION_ZOO_DATA)')
          continue
        sub = {'babi': 'babi/en', 'mnist': 'mnist-t10k', 'tiny_shakespeare': 'tinyshakespeare',
               'multi30k': 'multi30k'}
        config['data_dir'] = os.path.join(data, sub[name])
      rows.append(measure(config, args.batch_size, args.batches, tfds_dir))
  print(f'\ndata pipeline, batch {args.batch_size}, {os.cpu_count()} CPUs '
        '(grain in the calling thread; split cached in memory after the first batch)')
  print('| task | train examples | build s | open s | first batch s | examples/s |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["task"]} | {r["train"]:,} | {r["build_s"]:.1f} | {r["open_s"]:.2f} | '
          f'{r["first_batch_s"]:.2f} | {r["ex_per_s"]:,.0f} |')
  return rows

