"""Runs that survive kill -9: killed at 10 seeded moments (one in the middle of a checkpoint
write) and resumed, a run ends bit-identical to an uninterrupted one; a damaged latest checkpoint
falls back to the previous one, with a warning; bad config values fail before the workdir is
touched."""

import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.build import build_model
from attention_zoo.train import checkpoints, config_utils
from attention_zoo.train import workdir as wd
from attention_zoo.train.checkpoints import CorruptCheckpointError, load_params
from attention_zoo.train.loop import train_and_evaluate
from attention_zoo.train.steps import split_model
from tests import fixtures as h

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures('tiny_models')

# The run that is killed: a BatchNorm + dropout classifier, a checkpoint every 2 steps (the last
# 2 kept), a validation every 4 (before the checkpoint of its step), a train row every step.
STEPS, EVERY = 12, 2
_TRAIN = dict(steps=STEPS, checkpoint_every=EVERY, keep_checkpoints=2, log_every=1, eval_every=4)
_DRIVER = f'''
import sys
from tests import fixtures as h
h.register_tiny_models_for_good()
from attention_zoo.train import checkpoints
from attention_zoo.train.loop import train_and_evaluate
save = checkpoints.Checkpoints.save


def save_and_tell(self, step, *trees):  # tells the test once orbax writes step in the background
  save(self, step, *trees)
  with open(sys.argv[2], 'a') as f:
    f.write(f'saving {{step}}\\n')


checkpoints.Checkpoints.save = save_and_tell
config = h.tiny_config('_tiny_classifier', model={{'hidden': 8}}, **{_TRAIN!r})
train_and_evaluate(config, sys.argv[1], task=h.blobs_task())
'''


def _config(**train):
  return h.tiny_config('_tiny_classifier', model={'hidden': 8}, **(_TRAIN | train))


def _state_leaves(workdir, config, task):
  """The leaves of the latest checkpoint's params and other model state (BatchNorm statistics)."""
  _, params, _, other = split_model(nnx.eval_shape(lambda: build_model(config, task)))
  return jax.tree.leaves(load_params(workdir / wd.CHECKPOINTS, params, other))


def _assert_same_run(a, b, config, task):
  for x, y in zip(_state_leaves(a, config, task), _state_leaves(b, config, task), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  ra, rb = wd.read_json(a / wd.RESULTS), wd.read_json(b / wd.RESULTS)
  for key in ('step', 'validation', 'test'):
    assert ra[key] == rb[key], key
  timing = ('steps_per_s',)  # the train metrics' speed
  assert {k: v for k, v in ra['train'].items() if k not in timing} == \
      {k: v for k, v in rb['train'].items() if k not in timing}
  rows = lambda d: [(r['step'], r['split'], r['loss']) for r in wd.read_jsonl(d / wd.METRICS)]
  assert rows(a) == rows(b)  # no row lost, none twice


# ---- kill -9 -------------------------------------------------------------------------------------
def _kill_plan(seed: int, n: int = 10) -> list[tuple[str, int, float]]:
  """n kill points (kind, step, delay in s), by step: 'row' = `delay` after the train row of
  `step` is written; 'save' = as soon as the temporary folder of checkpoint `step` appears (orbax
  is writing it); 'final' (the last) = as soon as the final evaluation's validation row appears."""
  rng = np.random.default_rng(seed)
  plan = []
  for kind in rng.permutation(['save'] * 3 + ['row'] * (n - 4)):
    if kind == 'save':
      plan.append(('save', int(rng.choice(np.arange(EVERY, STEPS + 1, EVERY))), 0.0))
    else:
      plan.append(('row', int(rng.integers(1, STEPS + 1)), round(float(rng.uniform(0, 0.3)), 3)))
  return sorted(plan, key=lambda p: p[1]) + [('final', STEPS, 0.0)]


def _committed(ckpt_dir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in ckpt_dir.glob('*') if p.name.isdigit())


def _tmp_dirs(ckpt_dir: pathlib.Path) -> list[str]:
  """The temporary folders of checkpoints being written."""
  return sorted(p.name for p in ckpt_dir.glob('*.orbax-checkpoint-tmp*'))


def _rows(path: pathlib.Path) -> list[tuple[int, str]]:
  try:
    return [(r['step'], r['split']) for r in wd.read_jsonl(path)]
  except (OSError, ValueError):  # being replaced right now
    return []


def _inode(path: pathlib.Path) -> tuple[int, int] | None:
  """The identity of this version of the file: (inode, ctime). The inode alone is not enough:
  two atomic rewrites in a row can give the file its old inode number back (the first frees it)."""
  try:
    st = path.stat()
    return st.st_ino, st.st_ctime_ns
  except FileNotFoundError:
    return None


def _run_until(workdir: pathlib.Path, point: tuple[str, int, float] | None, env) -> dict | None:
  """Starts the driver on `workdir` and SIGKILLs it at `point` (None: lets it finish). -> what the
  kill hit (None without a kill). A row counts once this process has rewritten metrics.jsonl
  (a new inode: truncate_after); a save once the driver tells it has handed it to orbax."""
  ckpt_dir, metrics = workdir / wd.CHECKPOINTS, workdir / wd.METRICS
  events, log = workdir.parent / 'events.txt', workdir.parent / 'stderr.txt'
  events.unlink(missing_ok=True)
  resumed_from = (_committed(ckpt_dir) or [0])[-1] if ckpt_dir.exists() else 0
  old_inode = _inode(metrics)
  kind, step, delay = point or ('none', 0, 0.0)
  if kind == 'row':  # a step this process will redo or reach
    step = max(step, resumed_from + 1)
  if kind == 'save':  # a checkpoint this process will write
    step = max(step, (resumed_from // EVERY + 1) * EVERY)
  if step > STEPS:  # resumed from the last step (a fast run): only its final evaluation is left
    kind, step, delay = 'final', STEPS, 0.0
  wanted = {'row': (step, 'train'), 'final': (STEPS, 'validation')}.get(kind)
  with open(log, 'w') as stderr:
    proc = subprocess.Popen([sys.executable, '-c', _DRIVER, str(workdir), str(events)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=stderr)
  t0, deadline = time.monotonic(), time.monotonic() + 900
  try:
    while proc.poll() is None:
      assert time.monotonic() < deadline, 'the run neither finished nor reached its kill point'
      if wanted is not None:
        fired = _inode(metrics) not in (None, old_inode) and wanted in _rows(metrics)
      else:
        fired = kind == 'save' and events.exists() and f'saving {step}\n' in events.read_text()
      if fired:
        time.sleep(delay)
        proc.kill()
        proc.wait()
        return {'kind': kind, 'step': step, 'delay_s': delay, 'resumed_from': resumed_from,
                'after_s': round(time.monotonic() - t0, 2), 'committed': _committed(ckpt_dir),
                'mid_write': _tmp_dirs(ckpt_dir), 'last_row': (_rows(metrics) or [None])[-1]}
      time.sleep(0.002)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 0, log.read_text()[-3000:]
  assert point is None, f'the run finished before kill point {point}'
  return None


def test_killed_at_ten_random_moments_equals_uninterrupted(tmp_path):
  t_start = time.monotonic()
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'xla'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  killed = tmp_path / 'killed'
  kills = [_run_until(killed, point, env) for point in _kill_plan(seed=14)]
  _run_until(killed, None, env)  # the 11th start runs to the end
  for k in kills:
    print('kill -9:', k)
  assert len(kills) == 10
  assert any(k['mid_write'] for k in kills), 'no kill hit a checkpoint being written'
  assert not _tmp_dirs(killed / wd.CHECKPOINTS)  # leftovers of killed saves are cleaned up
  config, task = _config(), h.blobs_task()
  train_and_evaluate(config, tmp_path / 'uninterrupted', task=task)
  _assert_same_run(killed, tmp_path / 'uninterrupted', config, task)
  assert _committed(killed / wd.CHECKPOINTS) == [STEPS - EVERY, STEPS]
  print(f'kill -9 test: {time.monotonic() - t_start:.1f} s')


# ---- a damaged latest checkpoint -----------------------------------------------------------------
def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(step_dir: pathlib.Path) -> None:
  path = _largest_file(step_dir / 'params')
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _delete_metadata(step_dir: pathlib.Path) -> None:
  (step_dir / 'params' / 'manifest.ocdbt').unlink()


def _params_of_step_2(step_dir: pathlib.Path) -> None:
  """Step 4's params replaced by step 2's (a botched copy): orbax reads them back without an
  error, only the numbers are wrong, as with a changed byte in a compressed chunk."""
  shutil.rmtree(step_dir / 'params')
  shutil.copytree(step_dir.parent / '2' / 'params', step_dir / 'params')


@pytest.mark.parametrize('damage', [_truncate, _delete_metadata, _params_of_step_2],
                         ids=['truncated', 'file_deleted', 'wrong_numbers'])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, damage):
  config, task = _config(steps=6, eval_every=3, keep_checkpoints=3), h.blobs_task()
  full, cut = tmp_path / 'full', tmp_path / 'cut'
  train_and_evaluate(config, full, task=task)
  train_and_evaluate(config, cut, task=task, stop_after_step=5)  # killed after step 5
  ckpt_dir = cut / wd.CHECKPOINTS
  assert _committed(ckpt_dir) == [2, 4]
  damage(ckpt_dir / '4')
  with caplog.at_level(logging.WARNING):
    train_and_evaluate(config, cut, task=task)
  assert f'checkpoint step 4 ({ckpt_dir / "4"}) does not read back' in caplog.text
  assert f'resuming from checkpoint step 2 ({ckpt_dir / "2"})' in caplog.text
  assert (ckpt_dir / '4.corrupt').is_dir()  # kept for a look, no longer a step
  _assert_same_run(cut, full, config, task)


def test_no_readable_checkpoint_is_an_error_naming_the_folder(tmp_path):
  config, task = _config(steps=6, keep_checkpoints=3), h.blobs_task()
  train_and_evaluate(config, tmp_path, task=task, stop_after_step=5)
  ckpt_dir = tmp_path / wd.CHECKPOINTS
  for step in (2, 4):
    _truncate(ckpt_dir / str(step))
  with pytest.raises(CorruptCheckpointError, match=re.escape(f'no checkpoint in {ckpt_dir}')):
    train_and_evaluate(config, tmp_path, task=task)
  assert _committed(ckpt_dir) == [2, 4]  # nothing moved, nothing started over
  assert not (tmp_path / wd.RESULTS).exists()


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'int32', 'uint8', 'bool'])
def test_fingerprint_changes_with_any_one_bit(dtype):
  x = jnp.asarray(np.random.default_rng(0).integers(0, 2, 6), dtype)
  base = int(checkpoints.fingerprint(x))
  bits = jnp.dtype(dtype).itemsize * 8 if dtype != 'bool' else 1
  unsigned = {8: np.uint8, 16: np.uint16, 32: np.uint32}
  for i in range(x.size):
    for b in range(bits):
      if dtype == 'bool':
        y = np.asarray(x).copy()
        y[i] = not y[i]
      else:
        raw = np.asarray(x).view(unsigned[bits]).copy()
        raw[i] ^= unsigned[bits](1 << b)
        y = raw.view(np.asarray(x).dtype)
      assert int(checkpoints.fingerprint(jnp.asarray(y))) != base, (i, b)
  swapped = jnp.asarray(np.roll(np.asarray(x), 1))
  if not np.array_equal(np.asarray(swapped), np.asarray(x)):
    assert int(checkpoints.fingerprint(swapped)) != base  # a moved word changes its weight


# ---- bad config values ---------------------------------------------------------------------------
BAD_VALUES = {'train.steps': -5, 'train.batch_size': 0, 'train.lr': -1e-3,
              'train.warmup_steps': -1, 'train.log_every': 0, 'train.eval_every': -1,
              'train.checkpoint_every': 0, 'train.keep_checkpoints': 0, 'eval.batch_size': 0,
              'eval.max_examples': -1, 'train.label_smoothing': 1.0, 'train.clip_norm': -1.0,
              'train.weight_decay': -0.1, 'eval.beam_size': 0, 'eval.select_mode': 'highest',
              'model.hidden': -4, 'model.d_model': 0, 'model.num_heads': 3,  # 3 does not divide 16
              'model.num_layers': 0, 'model.ffn_dim': -1, 'model.embed_dim': 0,
              'model.encoder_hidden': -1, 'model.readout_dim': 0, 'model.score_dim': 0,
              'model.max_len': 0, 'model.hops': 0, 'model.dropout_rate': 1.0,
              'model.attention_dropout_rate': -0.1, 'model.random_noise': 1.5}
# Every model key of CHECKS at a good value: the checks run before the model is built, so the
# tiny classifier never sees these options.
GOOD_MODEL = dict(hidden=8, d_model=16, num_heads=2, num_layers=1, ffn_dim=32, embed_dim=8,
                  encoder_hidden=8, readout_dim=4, score_dim=4, max_len=16, hops=1,
                  dropout_rate=0.1, attention_dropout_rate=0.0, random_noise=0.1)


def test_every_checked_key_has_a_bad_value_here():
  assert {key for key, _, _ in config_utils.CHECKS} == set(BAD_VALUES)
  assert {f'model.{k}' for k in GOOD_MODEL} == {k for k in BAD_VALUES if k.startswith('model.')}


@pytest.mark.parametrize('key,value', sorted(BAD_VALUES.items()))
def test_bad_value_fails_naming_the_key_before_the_workdir(tmp_path, key, value):
  config = h.tiny_config('_tiny_classifier', model=GOOD_MODEL, **_TRAIN)
  with config.unlocked():  # a field only some configs have (the length chosen on validation)
    config.eval.select_mode = 'max'
  config_utils.check_values(config, 1)  # the good values pass
  config = config_utils.apply_overrides(config, {key: value})
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match=re.escape(f'{key}={value!r} must ')):
    train_and_evaluate(config, workdir, task=h.blobs_task())
  assert not workdir.exists()


def test_batch_not_divisible_by_the_device_count_fails_before_the_workdir(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 3)  # 16 examples over 3 devices
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match=re.escape('train.batch_size=16 must be a multiple of the '
                                                 'global device count (3)')):
    train_and_evaluate(_config(), workdir, task=h.blobs_task())
  assert not workdir.exists()
  bucketed = config_utils.apply_overrides(_config(), {'train.batching': 'bucketed',
                                                      'train.batch_tokens': 256})
  config_utils.check_values(bucketed, 3)  # batch_tokens sizes the batches: batch_size unused


@pytest.mark.parametrize('name', h.CONFIGS)
def test_configs_pass_the_checks(name):
  config_utils.check_values(h.load_config(name).get_config(None), 1)
