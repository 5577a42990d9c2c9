r"""The `paper` section of the benchmark: FLOPs, memory per device and step time of Transformer
runs past this machine, counted, not measured (attention_zoo/train/projections.py).

  python -m experiments.bench paper [--mfu=0.4]

Prints the table of BUILD.md's "On paper, past this machine" section (a test keeps them equal).
"""

from __future__ import annotations

from absl import app, flags

from attention_zoo.train import projections

flags.DEFINE_float('mfu', projections.MFU, 'The assumed model FLOPs utilization.',
                   lower_bound=1e-3, upper_bound=1.0)
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  print(projections.table(FLAGS.mfu))
  for name, w in projections.WORKLOADS.items():
    print(f'{name}: d_model {w.d_model}, {w.num_heads} heads, {w.num_layers} + {w.num_layers} '
          f'layers, ffn {w.ffn_dim}, vocabulary {w.vocab_size:,}, {w.sentences} pairs of '
          f'{w.source_len} + {w.target_len} positions a step ({w.source})')
  for name, target in projections.TARGETS.items():
    print(f'{name}: {target.devices} devices x {target.peak.bfloat16 / 1e12:.1f} TFLOP/s bf16 '
          f'({target.peak.source})')
