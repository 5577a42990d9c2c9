r"""Benchmarks, printed as tables (never timed tests).

  python -m experiments.bench attention [--lengths=256,1024,4096] [--scores=...] [--kernels=...]
  python -m experiments.bench data [--batch_size=128] [--batches=200] [--tasks=dates,mnist]
  python -m experiments.bench batching [--models=transformer,seq2seq] [--steps=20]
  python -m experiments.bench decode [--json=PATH] [--quick]
  python -m experiments.bench train [--json=PATH] [--threads=1,2] [--steps=N] [--quick]
  python -m experiments.bench seeds [--seeds=3] [--models=seq2seq,transformer] [--quick]
  python -m experiments.bench alignment [--steps=300] [--out=runs/alignment]
  python -m experiments.bench paper [--mfu=0.4]
  python -m experiments.bench accelerator --json=PATH [--size=full|tiny] [--parts=...]

Each section lives in its own module of this package (experiments/bench/<section>.py) with its
flags and main(argv); only this dispatcher runs them.
"""

from __future__ import annotations

import importlib
import sys

from absl import app

SECTIONS = ('attention', 'data', 'batching', 'decode', 'train', 'seeds', 'alignment', 'paper',
            'accelerator')


def main(argv: list[str]) -> None:
  if len(argv) < 2 or argv[1] not in SECTIONS:
    sys.exit(f'usage: python -m experiments.bench {{{"|".join(SECTIONS)}}} [flags]; '
             f'got {argv[1:] or "nothing"}')
  module = importlib.import_module(f'experiments.bench.{argv[1]}')
  app.run(module.main, argv=[argv[0]] + argv[2:])  # the section's absl flags are parsed here


if __name__ == '__main__':
  main(sys.argv)
