r"""The `batching` section of the benchmark: train tokens/s of padded vs length-bucketed batches.

  python -m experiments.bench batching [--models=transformer,seq2seq] [--steps=20]
  python -m experiments.bench batching --d_model=32 --layers=1 --steps=3   (a quick look)

Side by side in one process, on the same synthetic translation data: sentence lengths drawn like
Multi30k's subword lengths (a gamma of mean --mean_len pieces, 15 with BOS / EOS; the arrays
padded to --max_len = 56, Multi30k's longest), and the real train step of the loop
(steps.compile_train_step, one program per batch shape, batches from
attention_zoo.train.batching.train_batches as config.train sets them). Per mode: the compile
time of all its shapes, then --steps timed steps after one warm-up step of each shape, fetching
the host batches inside the timing as the loop does. tokens/s counts the non-PAD tokens of
source and target_in (what results.json's tokens_per_s counts); "computed" is the share of the
positions in the batches that are real tokens.

With --data=multi30k the same table is measured on the multi30k task itself (train split, its
default joint BPE vocabulary of 8,000 pieces; built once into the TFDS cache).

Modes: padded (train.batching='padded'); bucketed (quantile buckets, --batch_size examples per
batch); bucketed_tokens (the same buckets, train.batch_tokens = --batch_size x the mean bucket
length, so batches have about equal positions).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx

from attention_zoo.data.base import Task
from attention_zoo.data.vocab import Vocab
from attention_zoo.models import get_model
from attention_zoo.specials import BOS, EOS, SPECIALS
from attention_zoo.train import batching, optim, steps
from configs import common

flags.DEFINE_list('models', ['transformer'], 'transformer | seq2seq (Luong, general score).')
flags.DEFINE_list('data', ['synthetic'],
                  'synthetic (Multi30k-like lengths) | multi30k (the task on $ATTENTION_ZOO_DATA, '
                  'by default the data folder beside the repository; its SentencePiece '
                  'vocabulary).')
flags.DEFINE_string('tfds_dir', None, 'Dataset cache of the multi30k task (default: TFDS\'s).')
flags.DEFINE_list('modes', ['padded', 'bucketed', 'bucketed_tokens'], 'Batchings to compare.')
flags.DEFINE_integer('steps', 20, 'Timed train steps per mode.')
flags.DEFINE_integer('batch_size', 128, 'Examples per batch (padded and bucketed).')
flags.DEFINE_integer('examples', 29_000, 'Synthetic train pairs (Multi30k: 29,000).')
flags.DEFINE_integer('max_len', 56, 'Padded width of source and target (Multi30k: 56 pieces).')
flags.DEFINE_float('mean_len', 14.0, 'Mean sentence length in pieces, before BOS / EOS.')
flags.DEFINE_integer('vocab', 8000, 'Vocabulary size (source and target).')
flags.DEFINE_integer('d_model', 256, 'Transformer d_model; seq2seq hidden and embedding size.')
flags.DEFINE_integer('layers', 3, 'Transformer layers per stack.')
flags.DEFINE_integer('ffn_dim', 1024, 'Transformer feed-forward size.')
flags.DEFINE_integer('num_buckets', 8, 'train.num_buckets (quantiles, multiples of 8).')
FLAGS = flags.FLAGS
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ArraySource:
  """A split held as arrays: len, [i] and read_batch (the SplitSource interface)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self.arrays = arrays

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in self.arrays.items()}

  def read_batch(self, rows) -> dict[str, np.ndarray]:
    idx = np.asarray(rows, np.int64)
    return {k: v[idx] for k, v in self.arrays.items()}


def synthetic_task(n: int, max_len: int, mean_len: float, vocab: int, seed: int = 0) -> Task:
  """Translation pairs with Multi30k-like lengths: source ~ Gamma(7, mean_len / 7) pieces,
  target ~ source x LogNormal(0, 0.15), both in [1, max_len - 1] (+ BOS or EOS <= max_len)."""
  rng = np.random.default_rng(seed)
  src_len = np.clip(np.rint(rng.gamma(7.0, mean_len / 7.0, n)), 1, max_len - 1).astype(int)
  tgt_len = np.clip(np.rint(src_len * rng.lognormal(0.0, 0.15, n)), 1, max_len - 1).astype(int)
  tokens = rng.integers(len(SPECIALS), vocab, (n, max_len)).astype(np.int32)
  cols = np.arange(max_len)
  source = np.where(cols < src_len[:, None], tokens, 0).astype(np.int32)
  y = np.where(cols < tgt_len[:, None], np.roll(tokens, 7, axis=1), 0)
  target_in = np.concatenate([np.full((n, 1), BOS), y[:, :-1]], 1).astype(np.int32)
  target_out = np.where(cols == tgt_len[:, None], EOS, y).astype(np.int32)
  source[0, :], target_in[0, 1:], target_out[0, :-1] = 5, 5, 5  # one pair at the full width
  target_out[0, -1] = EOS
  split = ArraySource({'source': source, 'target_in': target_in, 'target_out': target_out})
  return Task(name='synthetic_multi30k_lengths', kind='seq2seq', splits={'train': split},
              model_dims={'src_vocab_size': vocab, 'tgt_vocab_size': vocab},
              vocab=Vocab('ab'), max_target_len=max_len)


def model_config(name: str, args, max_len: int) -> tuple[str, dict]:
  """(registry name, constructor kwargs) of the measured model; max_len: the longest sequence."""
  table = {
      'transformer': ('transformer', dict(
          d_model=args.d_model, num_heads=4, num_layers=args.layers, ffn_dim=args.ffn_dim,
          dropout_rate=0.1, max_len=max_len)),
      'seq2seq': ('seq2seq', dict(
          embed_dim=args.d_model, hidden=args.d_model, score='general', style='luong')),
  }
  if name not in table:
    raise app.UsageError(f'--models: unknown {name!r}; known: {sorted(table)}')
  return table[name]


def measure(task: Task, model_name: str, model_kwargs: dict, train_fields: dict,
            n_steps: int) -> dict:
  """Compiles the train step for every batch shape of `train_fields`' batching, then times it."""
  tc = _train(train_fields)
  batches = batching.train_batches(task, tc, seed=0)
  mesh = batching.make_mesh()
  rep = batching.replicated(mesh)
  tx = optim.make_optimizer(tc)
  model = get_model(model_name, rngs=nnx.Rngs(0), **task.model_dims, **model_kwargs)
  g_train, _, state = steps.init_state(model, tx, rep)
  seed_key = jax.device_put(jax.random.key(0), rep)
  t0 = time.perf_counter()
  programs, leaves = [], None
  shape_batches = [batching.to_device(b, mesh) for b in batches.shape_batches()]
  for batch in shape_batches:
    fn, leaves, _ = steps.compile_train_step(g_train, task, tx, optim.learning_rate(tc), state,
                                             batch, seed_key, rep)
    programs.append((batch, fn))
  step_fn = batching.StepPerShape(programs)
  compile_s = time.perf_counter() - t0
  for batch in shape_batches:  # warm-up: one step of each shape
    leaves, _ = step_fn(leaves, batch, seed_key)
  jax.block_until_ready(leaves)
  tokens = positions = examples = 0
  t0 = time.perf_counter()
  for s in range(n_steps):
    host = batches.batch(s)
    tokens += batching.count_tokens(host, task.input_keys)
    positions += sum(host[k].size for k in task.input_keys)
    examples += len(host['source'])
    leaves, metrics = step_fn(leaves, batching.to_device(host, mesh), seed_key)
  jax.block_until_ready((leaves, metrics))
  wall = time.perf_counter() - t0
  lengths = getattr(getattr(batches, 'plan', None), 'bucket_lengths', (task_width(task),))
  return {'shapes': len(shape_batches), 'lengths': lengths, 'compile_s': compile_s,
          'steps_per_s': n_steps / wall, 'examples_per_s': examples / wall,
          'tokens_per_s': tokens / wall, 'real_share': tokens / positions,
          'loss': float(metrics['loss'])}


def task_width(task: Task) -> int:
  return int(task.splits['train'][0]['source'].shape[0])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  run(FLAGS)


def run(args) -> list[dict]:
  """Measures and prints the tables (see the module docstring)."""
  rows = []
  for data in args.data:
    rows += run_data(args, data)
  return rows


def _multi30k(args) -> Task:
  from attention_zoo.data import get_task  # pylint: disable=import-outside-toplevel
  root = os.environ.get('ATTENTION_ZOO_DATA') or os.path.join(os.path.dirname(_REPO), 'shared',
                                                              'data')  # as bench data
  return get_task({'name': 'multi30k', 'tfds_dir': args.tfds_dir,
                   'data_dir': os.path.join(root, 'multi30k')})


DATA = {'synthetic': lambda a: synthetic_task(a.examples, a.max_len, a.mean_len, a.vocab),
        'multi30k': _multi30k}


def run_data(args, data: str) -> list[dict]:
  """The table of one data set."""
  if data not in DATA:
    raise app.UsageError(f'--data: unknown {data!r}; known: {sorted(DATA)}')
  task = DATA[data](args)
  train = task.splits['train']
  first = train.read_batch(np.arange(len(train)))
  mean = np.count_nonzero(first['source']) / len(first['source'])
  width = first['source'].shape[1], first['target_in'].shape[1]
  quantile = dict(batching='bucketed', num_buckets=args.num_buckets)
  probe = batching.train_batches(task, _train(dict(quantile, batch_size=args.batch_size)), 0)
  plan = probe.plan
  mean_bucket = sum(c * n for c, n in zip(plan.batches_per_bucket, plan.bucket_lengths)) / \
      plan.per_epoch
  modes = {'padded': dict(batching='padded'),
           'bucketed': quantile,
           'bucketed_tokens': dict(quantile, batch_tokens=int(args.batch_size * mean_bucket))}
  rows = []
  for name in args.models:
    model_name, kwargs = model_config(name, args, max(width))
    for mode in args.modes:
      if mode not in modes:
        raise app.UsageError(f'--modes: unknown {mode!r}; known: {sorted(modes)}')
      fields = dict(modes[mode], batch_size=args.batch_size)
      rows.append(dict(measure(task, model_name, kwargs, fields, args.steps), model=name,
                       mode=mode, batch_tokens=fields.get('batch_tokens', 0)))
  print(f'\ntrain tokens/s, padded vs bucketed; {data}: {len(train):,} pairs, '
        f'{mean:.1f} source tokens on average, padded to {width[0]} (source) / {width[1]} '
        f'(target); batch {args.batch_size}; {args.steps} timed steps; '
        f'{jax.devices()[0].platform}, {os.cpu_count()} CPUs, load average '
        f'{os.getloadavg()[0]:.1f}')
  print('| model | batching | bucket lengths | programs | compile s | steps/s | examples/s | '
        'tokens/s | real tokens / positions | tokens/s vs padded |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    base = next((x['tokens_per_s'] for x in rows
                 if x['model'] == r['model'] and x['mode'] == 'padded'), None)
    mode = r['mode'] + (f' ({r["batch_tokens"]:,} positions)' if r['batch_tokens'] else '')
    print(f'| {r["model"]} | {mode} | {",".join(map(str, r["lengths"]))} | {r["shapes"]} | '
          f'{r["compile_s"]:.1f} | {r["steps_per_s"]:.2f} | {r["examples_per_s"]:,.0f} | '
          f'{r["tokens_per_s"]:,.0f} | {r["real_share"]:.0%} | '
          f'{(r["tokens_per_s"] / base if base else float("nan")):.2f}x |')
  return [dict(r, data=data) for r in rows]


def _train(fields: dict):
  tc = common.base_config().train
  tc.update(fields)
  return tc

