r"""The `decode` section of the benchmark: Transformer greedy and beam-search sentences/s.

  python -m experiments.bench decode [--json=PATH] [--beams=1,4] [--reps=3]
  python -m experiments.bench decode --quick   (a tiny model, to see that it runs)

The model is configs/multi30k_transformer.py's at --size (small: d_model 256, 4 heads, 3 + 3
layers, ffn 1024, shared embeddings over a joint vocabulary of 8,000 pieces), with random
weights; the source batch is random tokens of uniform lengths in [--min_src, --max_src] (PAD
after), decoded to --max_len tokens with model.generate (length penalty 0.6, as the config).
Random weights rarely emit EOS, so most sentences run all --max_len steps: the numbers are the
cost of full-length decoding (a trained model stops earlier); "steps" reports the mean length.
Each search is timed with the source keys and values projected once per source (cross_cache,
the default) and at every step (the previous scheme), side by side in one process: compile time
of the first call, then the median of --reps calls. The load average is printed before and after.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx

from attention_zoo.models import get_model
from attention_zoo.specials import EOS, PAD, SPECIALS
from configs import multi30k_transformer

flags.DEFINE_string('json', None, 'Also write {"load", "config", "rows": [...]} to this file.')
flags.DEFINE_string('size', 'small', 'Model size of configs/multi30k_transformer.py.')
flags.DEFINE_list('beams', ['1', '4'], 'Beam sizes to time (1 = greedy).')
flags.DEFINE_integer('batch', 256, 'Sentences per generate call (the config\'s eval batch).')
flags.DEFINE_integer('min_src', 15, 'Shortest source, in pieces.')
flags.DEFINE_integer('max_src', 25, 'Longest source (the batch width), in pieces.')
flags.DEFINE_integer('max_len', 40, 'Tokens to generate.')
flags.DEFINE_integer('reps', 3, 'Timed calls per row (median reported).')
flags.DEFINE_bool('quick', False, 'A tiny run to check the benchmark works: size=tiny, '
                  'batch 8, sources of 4-6 pieces, max_len 6, one rep.')
FLAGS = flags.FLAGS

MODES = {'per step': False, 'once': True}  # cross K/V projected ... -> generate's cross_cache


def source_batch(batch: int, min_len: int, max_len: int, vocab: int, seed: int = 0):
  """Random non-special tokens [batch, max_len] with lengths uniform in [min_len, max_len]."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(min_len, max_len + 1, batch)  # [B]
  tokens = rng.integers(len(SPECIALS), vocab, (batch, max_len))
  return np.where(np.arange(max_len) < lengths[:, None], tokens, PAD).astype(np.int32)


def time_generate(model, source, *, beam: int, cross_cache: bool, max_len: int, reps: int):
  call = lambda: jax.block_until_ready(model.generate(
      source, max_len=max_len, beam_size=beam, length_penalty=0.6, cross_cache=cross_cache))
  start = time.perf_counter()
  tokens = np.asarray(call())  # compile + first run
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  ended = (tokens == EOS).any(axis=1)
  steps = np.where(ended, (tokens == EOS).argmax(axis=1) + 1, max_len)  # [B]
  return tokens, compile_s, statistics.median(times), float(steps.mean())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  size, batch, src, max_len, reps = (FLAGS.size, FLAGS.batch, (FLAGS.min_src, FLAGS.max_src),
                                     FLAGS.max_len, FLAGS.reps)
  if FLAGS.quick:
    size, batch, src, max_len, reps = 'tiny', 8, (4, 6), 6, 1
  config = multi30k_transformer.get_config(f'size={size}')
  vocab = config.task.vocab_size
  model = get_model(config.model_name, rngs=nnx.Rngs(0), src_vocab_size=vocab,
                    tgt_vocab_size=vocab, **config.model)
  source = source_batch(batch, *src, vocab)
  load_before = os.getloadavg()
  setup = (f'multi30k_transformer size={size} (d_model {config.model.d_model}, '
           f'{config.model.num_layers}+{config.model.num_layers} layers, vocab {vocab}), '
           f'batch {batch}, sources of {src[0]}-{src[1]} pieces, max_len {max_len}')
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cpu(s); '
        f'{setup}; load average {load_before[0]:.2f}')
  rows = []
  for beam in map(int, FLAGS.beams):
    found = {}
    for mode, cross_cache in MODES.items():
      tokens, compile_s, seconds, steps = time_generate(
          model, source, beam=beam, cross_cache=cross_cache, max_len=max_len, reps=reps)
      found[mode] = tokens
      rows.append({'search': 'greedy' if beam == 1 else f'beam({beam})', 'beam_size': beam,
                   'cross_kv': mode, 'sentences_per_s': batch / seconds,
                   'ms_per_batch': 1e3 * seconds, 'compile_s': compile_s, 'steps': steps})
    rows[-1]['speedup'] = rows[-1]['sentences_per_s'] / rows[-2]['sentences_per_s']
    rows[-1]['same_tokens'] = bool(np.array_equal(found['once'], found['per step']))
  load_after = os.getloadavg()
  print('\n| search | cross K/V projected | sentences/s | ms per batch | compile s | steps | '
        'speedup | same tokens |\n|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['search']} | {r['cross_kv']} | {r['sentences_per_s']:.1f} | "
          f"{r['ms_per_batch']:.1f} | {r['compile_s']:.1f} | {r['steps']:.1f} | "
          f"{r.get('speedup', 1.0):.2f} | {r.get('same_tokens', '')} |")
  print(f'\nload average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'load_average_1min': [load_before[0], load_after[0]], 'config': setup,
                 'rows': rows}, f, indent=1)
    print(f'wrote {FLAGS.json}')

