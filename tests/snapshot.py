r"""Behaviour snapshot of every config in configs/ at its tiny size, and the comparison of two.

Made to show that a refactor leaves behaviour unchanged: take a snapshot on the old commit and one
on the new, then compare them. Not a test module (pytest does not collect it); run it:

  python -m tests.snapshot --out=/tmp/after.json [--only=SUBSTR] [--steps=20]
  python -m tests.snapshot --compare=/tmp/before.json,/tmp/after.json [--only=SUBSTR] [--verbose]

The comparison prints, per entry and per field, equal / different (numbers: the max abs
difference; lists: also the first index that differs; whole arrays from the .npz files: the max
abs difference and how many values differ) and exits 1 when any field differs.

What one entry (a config at one arg, seed 0) records:
  param_count       the sizes of the model's nnx.Param leaves, summed;
  params            sha256, sum and sum of |.| of the initial parameters (leaves in the order of
                    their sorted paths: a renamed submodule can change the hash, not the sums);
  batch             sha256 per array of the first validation batch (the data the rest reads);
  logits            the eval-mode model(*task.model_inputs(batch)) (jitted): shape, sha256 of the
                    float32 bytes, sum (float64) and the first 8 values;
  greedy, beam      model.generate(source, max_len=task.max_target_len, beam_size=1 / 3) on the
                    batch's sources (models with `generate`): shape, sha256, first row; a
                    language model's generate(prompt, max_len) has no beam: its greedy
                    continuation of the first 8 tokens of each row;
  train_loss        the 'loss' of every metrics.jsonl row with split 'train' of
                    attention_zoo.train.loop.train_and_evaluate(config) with train.steps=STEPS,
                    log_every=1, eval_every=0, checkpoint_every=STEPS and eval.generate=False
                    (the final evaluation only scores; what is set is in `overrides`);
  final_eval        loss / accuracy of the final evaluation's rows (splits validation and test);
  config            the resolved config (informational: compared, but not counted as behaviour).
The arrays themselves (logits, generated tokens) go to PATH with .npz for .json, so that the
comparison can give the max abs difference over the whole logits, not just the first values.

Which configs: every configs/*.py with get_config (not common.py, __init__.py) at 'size=tiny';
configs/dates_demo.py at each variant of get_sweep('size=tiny') (its `config_arg`s, seed 0).
Real data (bAbI, MNIST, Multi30k, Shakespeare): task.data_dir under $ATTENTION_ZOO_DATA (default:
shared/data beside the repository root, as tests/conftest.py finds it; set it for a worktree
elsewhere, e.g. ATTENTION_ZOO_DATA=/work/shared/data). Datasets are built afresh
in a temporary TFDS folder (--tfds_dir to reuse one), so the data code under test builds them.

Only stable entry points are used: the config module's get_config / get_sweep,
attention_zoo.build.get_task / build_model, task.model_inputs, model.generate and
attention_zoo.train.loop.train_and_evaluate; the first validation batch comes from
attention_zoo.train.batching.eval_batches (attention_zoo.data.pipeline.read_rows if that is gone).

XLA runs single-threaded (set before jax is imported; the header records XLA_FLAGS, the CPU, the
versions and which attention_zoo was imported): a snapshot is reproducible bit for bit on one
machine, and comparable only with one taken on the same CPU model and thread setting.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

SINGLE_THREAD_XLA = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
REPO = pathlib.Path(__file__).resolve().parents[1]
SKIP = ('__init__', 'common')
# configs whose entries are the variants of get_sweep(SWEEP_ARG) (their config_args, seed 0)
VARIANT_CONFIGS = ('dates_demo',)
TINY = 'size=tiny'
SWEEP_ARG = 'size=tiny,seeds=1'
# real-data task name -> its folder under $ATTENTION_ZOO_DATA (as tests/fixtures.py DATA_SUBDIR)
DATA_SUBDIR = {'mnist': 'mnist-t10k', 'tiny_shakespeare': 'tinyshakespeare', 'babi': 'babi/en',
               'multi30k': 'multi30k'}
BEAM = 3
LM_PROMPT, LM_MAX_LEN = 8, 16
FIRST = 8  # values kept of each array


# ---- what to snapshot ----------------------------------------------------------------------------
def entries(only: str | None = None) -> list[tuple[str, str, str]]:
  """-> [(key, config module name, arg)], key = 'name:arg'; `only`: keys containing it."""
  out = []
  for path in sorted((REPO / 'configs').glob('*.py')):
    name = path.stem
    if name in SKIP:
      continue
    module = importlib.import_module(f'configs.{name}')
    if not hasattr(module, 'get_config'):
      continue
    if name in VARIANT_CONFIGS:
      args = []
      for e in module.get_sweep(SWEEP_ARG):
        if e.get('seed', 0) == 0 and e['config_arg'] not in args:
          args.append(e['config_arg'])
    else:
      args = [TINY]
    out += [(f'{name}:{a}', name, a) for a in args]
  return [e for e in out if only is None or only in e[0]]


def data_root() -> pathlib.Path:
  """$ATTENTION_ZOO_DATA, else shared/data beside the repository root (tests/conftest.py's rule)."""
  return pathlib.Path(os.environ.get('ATTENTION_ZOO_DATA') or REPO.parent / 'shared' / 'data')


def make_config(name: str, arg: str, tfds_dir: str, overrides: dict[str, Any] | None = None):
  """configs.<name>.get_config(arg) with the data folders set and `overrides` ('a.b' -> value)."""
  config = importlib.import_module(f'configs.{name}').get_config(arg)
  task = config.task
  if 'tfds_dir' in task:
    task.tfds_dir = tfds_dir
  if 'data_dir' in task:
    task.data_dir = str(data_root() / DATA_SUBDIR[task.name])
  for dotted, value in (overrides or {}).items():
    *parents, leaf = dotted.split('.')
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f'config field {dotted!r} does not exist')
    node[leaf] = value
  return config


def train_overrides(steps: int) -> dict[str, Any]:
  return {'train.steps': steps, 'train.log_every': 1, 'train.eval_every': 0,
          'train.checkpoint_every': steps, 'eval.generate': False}


# ---- records -------------------------------------------------------------------------------------
def _sha(a) -> str:
  import numpy as np  # pylint: disable=import-outside-toplevel
  a = np.ascontiguousarray(a)
  h = hashlib.sha256(f'{a.dtype.str}{a.shape}'.encode())
  h.update(a.tobytes())
  return h.hexdigest()


def float_record(a) -> dict[str, Any]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  a = np.asarray(a, np.float32)
  flat = a.reshape(-1)
  return {'shape': list(a.shape), 'sha256': _sha(a), 'sum': float(flat.astype(np.float64).sum()),
          'first': [float(x) for x in flat[:FIRST]], 'finite': bool(np.all(np.isfinite(a)))}


def token_record(a) -> dict[str, Any]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  a = np.asarray(a).astype(np.int32)
  return {'shape': list(a.shape), 'sha256': _sha(a), 'first_row': a[0].tolist()}


def first_validation_batch(config, task) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  source = task.splits['validation']
  try:
    from attention_zoo.train import batching  # pylint: disable=import-outside-toplevel
    return next(iter(batching.eval_batches(source, config.eval.batch_size,
                                           config.eval.max_examples)))
  except (ImportError, AttributeError):
    from attention_zoo.data import pipeline  # pylint: disable=import-outside-toplevel
    n = len(source) if config.eval.max_examples <= 0 else min(len(source),
                                                               config.eval.max_examples)
    return pipeline.read_rows(source, np.arange(min(n, config.eval.batch_size)))


def model_record(config, arrays: dict, prefix: str) -> dict[str, Any]:
  """param_count, params, batch, logits, greedy / beam of the freshly built model."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from attention_zoo import build  # pylint: disable=import-outside-toplevel

  rec: dict[str, Any] = {}
  t = time.perf_counter()
  task = build.get_task(config)
  rec['task_s'] = time.perf_counter() - t
  model = build.build_model(config, task)
  params = nnx.state(model, nnx.Param)
  path_leaves = sorted(((jax.tree_util.keystr(p), np.asarray(v))
                        for p, v in jax.tree_util.tree_leaves_with_path(params)),
                       key=lambda x: x[0])
  rec['param_count'] = int(sum(v.size for _, v in path_leaves))
  h = hashlib.sha256()
  for _, v in path_leaves:
    h.update(np.ascontiguousarray(v.astype(np.float32)).tobytes())
  rec['params'] = {'leaves': len(path_leaves), 'sha256': h.hexdigest(),
                   'sum': float(sum(v.astype(np.float64).sum() for _, v in path_leaves)),
                   'sum_abs': float(sum(np.abs(v.astype(np.float64)).sum()
                                        for _, v in path_leaves))}

  batch = first_validation_batch(config, task)
  rec['batch'] = {k: _sha(v) for k, v in sorted(batch.items())}
  device_batch = {k: jnp.asarray(v) for k, v in batch.items()}
  model.eval()
  graphdef, state = nnx.split(model)
  call = jax.jit(lambda state, *inputs: nnx.merge(graphdef, state)(*inputs))
  logits = np.asarray(call(state, *task.model_inputs(device_batch)), np.float32)
  rec['logits'] = float_record(logits)
  arrays[f'{prefix}/logits'] = logits

  generate = getattr(model, 'generate', None)
  if generate is not None:
    takes_beam = 'beam_size' in inspect.signature(generate).parameters
    source = device_batch[task.input_keys[0]]
    if takes_beam:  # seq2seq: decode the sources
      max_len = task.max_target_len or batch[task.target_key].shape[1]
      rec['generate'] = {'max_len': int(max_len), 'beam_size': [1, BEAM]}
      for key, beam in (('greedy', 1), ('beam', BEAM)):
        tokens = np.asarray(generate(source, max_len=max_len, beam_size=beam))
        rec[key] = token_record(tokens)
        arrays[f'{prefix}/{key}'] = tokens
    else:  # a language model: greedy continuation of a prompt
      rec['generate'] = {'prompt': LM_PROMPT, 'max_len': LM_MAX_LEN,
                         'beam': 'generate takes no beam_size'}
      tokens = np.asarray(generate(source[:, :LM_PROMPT], max_len=LM_MAX_LEN))
      rec['greedy'] = token_record(tokens)
      arrays[f'{prefix}/greedy'] = tokens
  return rec


def train_record(name: str, arg: str, tfds_dir: str, steps: int) -> dict[str, Any]:
  from attention_zoo.train import loop  # pylint: disable=import-outside-toplevel
  overrides = train_overrides(steps)
  config = make_config(name, arg, tfds_dir, overrides)
  with tempfile.TemporaryDirectory(prefix='snapshot_run_') as workdir:
    loop.train_and_evaluate(config, workdir)
    metrics = pathlib.Path(workdir) / 'metrics.jsonl'
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
  train = [r for r in rows if r.get('split') == 'train']
  final = {r['split']: {k: r[k] for k in ('loss', 'accuracy') if k in r}
           for r in rows if r.get('split') in ('validation', 'test') and r.get('step') == steps}
  return {'overrides': overrides,
          'train_steps': [r['step'] for r in train],
          'train_loss': [float(r['loss']) for r in train],
          'final_eval': final}


def snapshot_entry(key: str, name: str, arg: str, tfds_dir: str, steps: int,
                   arrays: dict) -> dict[str, Any]:
  rec: dict[str, Any] = {'config_module': name, 'arg': arg, 'seed': 0}
  t0 = time.perf_counter()
  try:
    config = make_config(name, arg, tfds_dir)
    rec['config'] = json.loads(config.to_json_best_effort())
    for k in ('tfds_dir',):  # a temporary folder: not part of the behaviour
      rec['config'].get('task', {}).pop(k, None)
    rec.update(model_record(config, arrays, key))
    t1 = time.perf_counter()
    rec['model_s'] = t1 - t0
    rec.update(train_record(name, arg, tfds_dir, steps))
    rec['train_s'] = time.perf_counter() - t1
  except Exception as e:  # pylint: disable=broad-except
    rec['error'] = f'{type(e).__name__}: {e}'
    rec['traceback'] = traceback.format_exc()[-4000:]
  rec['seconds'] = time.perf_counter() - t0
  return rec


# ---- the header ----------------------------------------------------------------------------------
def _cpu() -> dict[str, Any]:
  info: dict[str, Any] = {'machine': platform.machine()}
  try:
    text = pathlib.Path('/proc/cpuinfo').read_text()
    first = text.split('\n\n')[0]
    fields = dict(line.split(':', 1) for line in first.splitlines() if ':' in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info.update({k.replace(' ', '_'): fields.get(k) for k in
                 ('model name', 'cpu family', 'model', 'stepping')})
    flags = fields.get('flags', '').split()
    info['simd'] = [f for f in ('sse4_2', 'avx', 'avx2', 'fma', 'avx512f') if f in flags]
  except OSError:
    pass
  info['affinity'] = (sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                      else None)
  return info


def _git() -> dict[str, Any]:
  def git(*a):
    try:
      return subprocess.run(['git', '-C', str(REPO), *a], capture_output=True, text=True,
                            timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      return None
  return {'commit': git('rev-parse', 'HEAD'), 'dirty': git('status', '--porcelain')}


def header(steps: int, tfds_dir: str) -> dict[str, Any]:
  import jax  # pylint: disable=import-outside-toplevel
  import attention_zoo  # pylint: disable=import-outside-toplevel
  import configs  # pylint: disable=import-outside-toplevel
  versions = {'python': platform.python_version()}
  for mod in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'orbax.checkpoint', 'grain',
              'tensorflow_datasets', 'sentencepiece'):
    try:
      versions[mod] = getattr(importlib.import_module(mod), '__version__', None)
    except ImportError:
      versions[mod] = None
  return {'repo': str(REPO), 'git': _git(),
          'attention_zoo': attention_zoo.__file__,
          'configs': getattr(configs, '__file__', None) or list(configs.__path__),
          'XLA_FLAGS': os.environ.get('XLA_FLAGS'),
          'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS'),
          'jax_backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
          'cpu': _cpu(), 'versions': versions, 'steps': steps,
          'data_root': str(data_root()), 'tfds_dir': tfds_dir, 'beam_size': BEAM,
          'argv': sys.argv}


def take(out: pathlib.Path, only: str | None, steps: int, tfds_dir: str | None) -> int:
  import numpy as np  # pylint: disable=import-outside-toplevel
  import attention_zoo  # pylint: disable=import-outside-toplevel
  where = pathlib.Path(attention_zoo.__file__).resolve()
  if REPO not in where.parents:
    raise SystemExit(f'attention_zoo is imported from {where}, not from {REPO}: put {REPO} first '
                     'on PYTHONPATH')
  if not data_root().is_dir():
    raise SystemExit(f'real data not found at {data_root()}: set ATTENTION_ZOO_DATA')
  tmp = None
  if tfds_dir is None:
    tmp = tempfile.TemporaryDirectory(prefix='snapshot_tfds_')
    tfds_dir = tmp.name
  t0 = time.perf_counter()
  doc = {'header': header(steps, tfds_dir), 'configs': {}}
  arrays: dict[str, Any] = {}
  todo = entries(only)
  if not todo:
    raise SystemExit(f'no config matches --only={only!r}')
  for i, (key, name, arg) in enumerate(todo):
    print(f'[{i + 1}/{len(todo)}] {key} ...', flush=True)
    rec = snapshot_entry(key, name, arg, tfds_dir, steps, arrays)
    doc['configs'][key] = rec
    status = rec.get('error') or (f"params {rec['param_count']}, loss "
                                  f"{rec['train_loss'][0]:.5f} -> {rec['train_loss'][-1]:.5f}")
    print(f'    {rec["seconds"]:.1f}s  {status}', flush=True)
    doc['header']['seconds'] = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, sort_keys=False) + '\n')  # after each: partial ok
  np.savez_compressed(out.with_suffix('.npz'), **arrays)
  if tmp is not None:
    tmp.cleanup()
  errors = [k for k, r in doc['configs'].items() if 'error' in r]
  print(f'wrote {out} ({len(todo)} entries, {len(errors)} errors) in '
        f'{doc["header"]["seconds"]:.0f}s')
  return 1 if errors else 0


# ---- the comparison ------------------------------------------------------------------------------
INFO_FIELDS = ('config', 'seconds', 'model_s', 'train_s', 'task_s', 'traceback')


def _flatten(rec: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(rec, dict):
    out = {}
    for k, v in rec.items():
      out.update(_flatten(v, f'{prefix}.{k}' if prefix else str(k)))
    return out
  return {prefix: rec}


def _numbers(v: Any) -> list[float] | None:
  if isinstance(v, bool) or v is None:
    return None
  if isinstance(v, (int, float)):
    return [float(v)]
  if isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                       for x in v):
    return [float(x) for x in v]
  return None


def _max_abs(a: list[float], b: list[float]) -> float:
  return max((abs(x - y) if not (math.isnan(x) and math.isnan(y)) else 0.0)
             for x, y in zip(a, b))


def compare_field(a: Any, b: Any) -> str:
  if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
    return 'equal'
  na, nb = _numbers(a), _numbers(b)
  if na is not None and nb is not None:
    if len(na) != len(nb):
      return f'different (length {len(na)} vs {len(nb)})'
    where = ''
    if isinstance(a, list):
      first = next(i for i, (x, y) in enumerate(zip(na, nb)) if x != y)
      where = f', first at index {first} of {len(na)}'
    return f'different (max abs diff {_max_abs(na, nb):.3g}{where})'
  return 'different'


def _array_diffs(pa: pathlib.Path, pb: pathlib.Path, key: str) -> dict[str, str]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  if not (pa.exists() and pb.exists()):
    return {}
  out = {}
  with np.load(pa) as za, np.load(pb) as zb:
    for name in sorted(set(za.files) | set(zb.files)):
      if not name.startswith(key + '/'):
        continue
      field = name[len(key) + 1:] + ' (whole array)'
      if name not in za.files or name not in zb.files:
        out[field] = 'missing in ' + ('A' if name not in za.files else 'B')
        continue
      x, y = za[name], zb[name]
      if x.shape != y.shape:
        out[field] = f'different (shape {x.shape} vs {y.shape})'
      elif np.array_equal(x, y, equal_nan=True):
        out[field] = 'equal'
      elif x.dtype.kind == 'f':
        out[field] = (f'different (max abs diff {float(np.nanmax(np.abs(x - y))):.3g}, '
                      f'{int(np.sum(x != y))} of {x.size} values)')
      else:
        out[field] = f'different ({int(np.sum(x != y))} of {x.size} tokens)'
  return out


def compare(path_a: str, path_b: str, verbose: bool = False, only: str | None = None) -> int:
  """Prints, per config and field, equal / different; -> the number of behaviour differences."""
  pa, pb = pathlib.Path(path_a), pathlib.Path(path_b)
  a, b = json.loads(pa.read_text()), json.loads(pb.read_text())
  ha, hb = a['header'], b['header']
  print(f'A: {pa}  ({ha["git"]["commit"]}, {ha["attention_zoo"]})')
  print(f'B: {pb}  ({hb["git"]["commit"]}, {hb["attention_zoo"]})')
  for field in ('XLA_FLAGS', 'cpu', 'versions', 'steps', 'beam_size'):
    if ha.get(field) != hb.get(field):
      print(f'WARNING: header {field} differs: {ha.get(field)} vs {hb.get(field)}')
  differences = 0
  keys = list(a['configs']) + [k for k in b['configs'] if k not in a['configs']]
  for key in [k for k in keys if only is None or only in k]:
    ra, rb = a['configs'].get(key), b['configs'].get(key)
    if ra is None or rb is None:
      print(f'{key}: only in {"B" if ra is None else "A"}')
      differences += 1
      continue
    fa = {k: v for k, v in _flatten(ra).items() if k.split('.')[0] not in INFO_FIELDS}
    fb = {k: v for k, v in _flatten(rb).items() if k.split('.')[0] not in INFO_FIELDS}
    lines = {}
    for field in list(fa) + [f for f in fb if f not in fa]:
      if field not in fa or field not in fb:
        lines[field] = f'missing in {"A" if field not in fa else "B"}'
      else:
        lines[field] = compare_field(fa[field], fb[field])
    lines.update(_array_diffs(pa.with_suffix('.npz'), pb.with_suffix('.npz'), key))
    bad = {f: s for f, s in lines.items() if s != 'equal'}
    differences += len(bad)
    ca, cb = _flatten(ra.get('config', {})), _flatten(rb.get('config', {}))
    absent = '<absent>'
    config_diff = [f'{k}: {ca.get(k, absent)!r} -> {cb.get(k, absent)!r}'
                   for k in sorted(set(ca) | set(cb)) if ca.get(k, absent) != cb.get(k, absent)]
    print(f'{key}: {"EQUAL" if not bad else f"{len(bad)} DIFFERENT"} '
          f'({len(lines)} fields; {ra.get("seconds", 0):.0f}s / {rb.get("seconds", 0):.0f}s)')
    for field, status in lines.items():
      if verbose or status != 'equal':
        print(f'    {field}: {status}')
    for line in config_diff:
      print(f'    (info, not counted) config {line}')
  print(f'{differences} field(s) differ')
  return differences


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='snapshot JSON to write (arrays: same path, .npz)')
  parser.add_argument('--only', default=None,
                      help='only the entries whose key contains this (snapshot and --compare)')
  parser.add_argument('--steps', type=int, default=20, help='train steps recorded')
  parser.add_argument('--tfds_dir', default=None,
                      help='dataset cache to use (default: a fresh temporary folder)')
  parser.add_argument('--compare', default=None, help='A.json,B.json: compare two snapshots')
  parser.add_argument('--verbose', action='store_true', help='--compare: list equal fields too')
  parser.add_argument('--list', action='store_true', help='list the entries and exit')
  args = parser.parse_args(argv)
  if args.compare:
    path_a, path_b = args.compare.split(',')
    return 1 if compare(path_a, path_b, args.verbose, args.only) else 0
  if args.list:
    for key, _, _ in entries(args.only):
      print(key)
    return 0
  if not args.out:
    parser.error('--out (or --compare, --list) is required')
  return take(pathlib.Path(args.out), args.only, args.steps, args.tfds_dir)


def _single_threaded_xla() -> None:
  """XLA single-threaded (before jax is imported; a process that already imported jax keeps its
  flags, and the header records them)."""
  if 'jax' in sys.modules:
    return
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_cpu_multi_thread_eigen' not in flags:
    os.environ['XLA_FLAGS'] = ' '.join(filter(None, [flags, SINGLE_THREAD_XLA]))
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')


if __name__ == '__main__':
  _single_threaded_xla()
  if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
  sys.exit(main())
