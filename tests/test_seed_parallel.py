"""Seed-parallel training (attention_zoo.train.seed_parallel) equals separate runs, seed by seed.

Tolerance: final params and logged metrics within rtol 1e-5, atol 1e-6 of the separate runs
(the vmapped program's matmuls may round differently; init is equal bitwise).
"""

import json
import math
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo import build, sweeps
from attention_zoo.analysis import report
from attention_zoo.models.registry import MODELS
from attention_zoo.sweeps import claims, seed_groups
from attention_zoo.train import batching, checkpoints, loop, optim, seed_parallel, steps
from attention_zoo.train import workdir as wd
from tests import fixtures

REPO = pathlib.Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-5, 1e-6
TIMING = ('steps_per_s',)  # per-row speed: the group's, not comparable


def _configs(seeds, **kwargs):
  base = fixtures.tiny_config(**kwargs)
  out = []
  for s in seeds:
    c = base.copy_and_resolve_references()
    c.seed = s
    c.lock()
    out.append(c)
  return out


def _params(config, task, workdir):
  """The final checkpoint's params of a run, as numpy leaves by path."""
  abstract = steps.split_model(nnx.eval_shape(lambda: build.build_model(config, task)))[1]
  params, _ = checkpoints.load_params(pathlib.Path(workdir) / wd.CHECKPOINTS, abstract)
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def _numbers(tree, prefix=''):
  """{dotted key: float} of the numeric leaves of a JSON tree (bools and timings excluded)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_numbers(v, f'{prefix}{k}.'))
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and k not in TIMING:
      out[prefix + k] = float(v)
  return out


def _keys(tree, prefix=''):
  return {prefix + k for k in tree} | {
      key for k, v in tree.items() if isinstance(v, dict) for key in _keys(v, f'{prefix}{k}.')}


def _assert_same_run(group_dir, separate_dir, config, task):
  a, b = _params(config, task, group_dir), _params(config, task, separate_dir)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL, err_msg=k)
  rows_a, rows_b = (wd.read_jsonl(pathlib.Path(d) / wd.METRICS) for d in (group_dir, separate_dir))
  assert [(r['step'], r['split']) for r in rows_a] == [(r['step'], r['split']) for r in rows_b]
  for ra, rb in zip(rows_a, rows_b):
    na, nb = _numbers(ra), _numbers(rb)
    assert na.keys() == nb.keys()
    for k in na:
      assert math.isclose(na[k], nb[k], rel_tol=RTOL, abs_tol=ATOL), (ra['step'], k, na[k], nb[k])
  res_a, res_b = (wd.read_json(pathlib.Path(d) / wd.RESULTS) for d in (group_dir, separate_dir))
  # the same structure, but for the group's size that only a seed-parallel run records
  assert _keys(res_a) - {'seed_group_size'} == _keys(res_b)
  for split in ('train', 'validation', 'test'):
    for k, v in _numbers(res_b[split]).items():
      assert math.isclose(res_a[split][k], v, rel_tol=RTOL, abs_tol=ATOL), (split, k)
  assert res_a['step'] == res_b['step'] and res_a['num_params'] == res_b['num_params']
  samples = [wd.read_jsonl(pathlib.Path(d) / wd.SAMPLES) for d in (group_dir, separate_dir)]
  assert samples[0] == samples[1]


@pytest.mark.usefixtures('tiny_models')
def test_vmapped_seed_step_equals_each_seeds_own_steps():
  # jax.vmap, the default off CPU (on CPU the other tests run the default, lax.map)
  how = 'vmap'
  task, seeds = fixtures.reverse_task(), (0, 3)
  configs = _configs(seeds)
  tc = configs[0].train
  mesh = batching.make_mesh()
  rep = batching.replicated(mesh)
  tx, lr = optim.make_optimizer(tc, configs[0].model), optim.learning_rate(tc, configs[0].model)
  streams = [batching.train_batches(task, tc, s) for s in seeds]
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  graphdef, _, state = seed_parallel.init_states(configs[0], task, tx, seeds, rep)
  first = seed_parallel.stack_to_device([b.batch(0) for b in streams], mesh)
  step, leaves, treedef = seed_parallel.compile_seed_step(graphdef, task, tx, lr, state, first,
                                                          keys, rep, how=how)
  for t in range(3):
    leaves, metrics = step(leaves, seed_parallel.stack_to_device([b.batch(t) for b in streams],
                                                                 mesh), keys)
  grouped = jax.tree.leaves(jax.tree.unflatten(treedef, leaves).params)
  alone_step = None
  for i, (c, stream) in enumerate(zip(configs, streams)):
    g, _, one = steps.init_state(build.build_model(c, task), tx, rep)
    batch = batching.to_device(stream.batch(0), mesh)
    if alone_step is None:  # one program for every seed: the seed key is an argument
      alone_step, _, tree = steps.compile_train_step(g, task, tx, lr, one, batch, keys[0], rep)
    own = jax.tree.leaves(one)
    for t in range(3):
      own, own_metrics = alone_step(own, batching.to_device(stream.batch(t), mesh), keys[i])
    for a, b in zip(grouped, jax.tree.leaves(jax.tree.unflatten(tree, own).params)):
      np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=RTOL, atol=ATOL)
    for k, v in own_metrics.items():
      np.testing.assert_allclose(np.asarray(metrics[k][i]), np.asarray(v), rtol=RTOL, atol=ATOL)


class NormClassifier(nnx.Module):
  """MLP with BatchNorm (state besides params) and dropout. Its first layer has no bias: BatchNorm
  would remove it, leaving it a gradient of rounding noise that Adam scales to steps of ±lr, so
  such a bias differs between any two programs that round differently."""

  def __init__(self, num_features: int, num_classes: int, hidden: int = 8, *, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(num_features, hidden, use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(hidden, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)
    self.l2 = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, inputs):  # [B, F] -> [B, C]
    return self.l2(self.drop(jax.nn.relu(self.bn(self.l1(inputs)))))


def test_group_resumes_from_its_seeds_checkpoints(tmp_path):
  # BatchNorm statistics and dropout; killed after step 4, the group resumes from each seed's
  # checkpoint of step 3 and ends where separate runs end.
  task = fixtures.blobs_task()
  configs = _configs((1, 2), model_name='_norm_classifier', model={'hidden': 8})
  group = [tmp_path / f'group{c.seed}' for c in configs]
  with MODELS.override('_norm_classifier', NormClassifier):
    assert seed_parallel.train_seeds(configs, group, task=task, stop_after_step=4) == [{}, {}]
    assert all(not (d / wd.RESULTS).exists() for d in group)
    seed_parallel.train_seeds(configs, group, task=task)
    for c, d in zip(configs, group):
      assert checkpoints.saved_steps(d / wd.CHECKPOINTS) == [3, 6]
      loop.train_and_evaluate(c, tmp_path / f'alone{c.seed}', task=task)
      _assert_same_run(d, tmp_path / f'alone{c.seed}', c, task)


class FragileClassifier(nnx.Module):
  """An MLP whose logits are scaled by sqrt(gain), gain ~ U(-1, 1) at init: NaN for the seeds
  that draw a negative gain (the NaN guard's test)."""

  def __init__(self, num_features: int, num_classes: int, hidden: int = 8, *, rngs: nnx.Rngs):
    self.gain = nnx.Param(jax.random.uniform(rngs.params(), (), minval=-1.0, maxval=1.0))
    self.l1 = nnx.Linear(num_features, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, inputs):  # [B, F] -> [B, C]
    return self.l2(jnp.tanh(self.l1(inputs))) * jnp.sqrt(self.gain[...])


def test_nan_guard_stops_only_the_failing_seed(tmp_path):
  task = fixtures.blobs_task()
  with MODELS.override('_tiny_fragile', FragileClassifier):
    gains = {s: float(FragileClassifier(4, 3, rngs=nnx.Rngs(s)).gain[...]) for s in range(8)}
    good = next(s for s, g in gains.items() if g > 0.3)  # stays positive over 6 steps
    bad = next(s for s, g in gains.items() if g < 0)
    configs = _configs((good, bad), model_name='_tiny_fragile', model={'hidden': 8})
    dirs = [tmp_path / f'seed{s}' for s in (good, bad)]
    with pytest.raises(seed_parallel.SeedsFailedError, match=rf'seed {bad} \(.*seed{bad}\): '
                       r"train metric 'loss' is nan at step 1"):
      seed_parallel.train_seeds(configs, dirs, task=task)
  good_dir, bad_dir = dirs
  assert wd.read_json(good_dir / wd.RESULTS)['step'] == 6
  assert not (bad_dir / wd.RESULTS).exists()
  assert [r['step'] for r in wd.read_jsonl(bad_dir / wd.METRICS)] == [0]  # step 0's validation
  assert not (bad_dir / wd.CHECKPOINTS).exists() or not checkpoints.saved_steps(
      bad_dir / wd.CHECKPOINTS)
  assert checkpoints.saved_steps(good_dir / wd.CHECKPOINTS) == [3, 6]


def test_bucketed_or_start_phase_configs_do_not_group():
  c = fixtures.tiny_config(batching='bucketed')
  assert 'bucket' in seed_parallel.groupable(c)
  assert seed_parallel.groupable(fixtures.tiny_config()) is None
  phase = fixtures.tiny_config(start_phase={'lr': 0.1, 'patience': 1, 'max_steps': 0})
  assert 'start_phase' in seed_parallel.groupable(phase)
  a, b = _configs((0, 1))
  wider = b.copy_and_resolve_references()
  wider.model.hidden = 32
  with pytest.raises(ValueError, match=r"differ only in 'seed'.*model.hidden"):
    seed_parallel.check_group([a, wider])


def _sweep_config(path, tfds_dir):
  """Two variants x two seeds of the tiny seq2seq of tests/fixtures.py on the tiny date task."""
  path.write_text(textwrap.dedent(f'''
      from configs import dates_demo
      from tests import fixtures
      fixtures.register_tiny_models_for_good()  # in the sweep's processes
      def get_config(arg=None):
        c = dates_demo.get_config('family=seq2seq,score=dot,size=tiny')
        c.task.update(tfds_dir={tfds_dir!r}, num_train=256, num_validation=32, num_test=32)
        c.model_name = '_tiny_seq2seq'
        c.model = dict(hidden=16)
        c.train.update(steps=4, eval_every=2, batch_size=16, checkpoint_every=2)
        return c
      def get_sweep(arg=None):
        return [{{'model.hidden': h, 'seed': seed}} for h in (16, 8) for seed in (0, 1)]
  '''))
  return path


def _table(sweep_dir):
  """report.md's table rows without the speed columns (steps/s, compile s)."""
  lines = (sweep_dir / wd.REPORT_MD).read_text().splitlines()
  return [line.rsplit('|', 3)[0] for line in lines if line.startswith('| ')]


@pytest.mark.usefixtures('tiny_models')
def test_sweep_seed_parallel_equals_separate_runs(tmp_path):
  # A seq2seq with dropout (an RNG stream per seed), validations with greedy decoding; the
  # seeds of each variant train in one process (--seed_parallel), each equal to its own run.
  spec = str(_sweep_config(tmp_path / 'sweep_cfg.py', str(tmp_path / 'tfds')))
  group_dir, alone_dir = tmp_path / 'seed_parallel', tmp_path / 'alone'
  out = subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--config={spec}',
                        f'--workdir={group_dir}', '--parallel=2', '--seed_parallel'], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  # What --noseed_parallel runs, one run at a time: experiments.main's train_and_evaluate.
  runs = sweeps.write_plan(spec, alone_dir)
  for run in runs:
    loop.train_and_evaluate(sweeps.run_config(spec, run), alone_dir / wd.RUNS / run.name)
  report.write(alone_dir)
  task = build.get_task(sweeps.run_config(spec, runs[0]))
  for run in runs:
    _assert_same_run(group_dir / wd.RUNS / run.name, alone_dir / wd.RUNS / run.name,
                     sweeps.run_config(spec, run), task)
  first, second = (_params(sweeps.run_config(spec, r), task, group_dir / wd.RUNS / r.name)
                   for r in runs[:2])
  assert all(not np.allclose(first[k], second[k]) for k in first if 'kernel' in k)  # own init
  assert _table(group_dir) == _table(alone_dir)
  group, alone = (json.loads((d / wd.REPORT_JSON).read_text()) for d in (group_dir, alone_dir))
  assert [v['runs'] for v in group['variants']] == [['hidden=16,seed=0', 'hidden=16,seed=1'],
                                                     ['hidden=8,seed=0', 'hidden=8,seed=1']]
  for va, vb in zip(group['variants'], alone['variants']):
    for m, summary in vb['metrics'].items():
      np.testing.assert_allclose(va['metrics'][m]['values'], summary['values'], rtol=RTOL,
                                 atol=ATOL, err_msg=m)
  # one program trained each variant's two seeds: their results.json share its compile time
  compile_s = [wd.read_json(group_dir / wd.RUNS / f'hidden=16,seed={s}' / wd.RESULTS)
               ['compile_s'] for s in (0, 1)]
  assert compile_s[0] == compile_s[1]
  assert {wd.read_json(group_dir / wd.RUNS / r.name / wd.RESULTS)['seed_group_size']
          for r in runs} == {2}


@pytest.mark.usefixtures('tiny_models')
def test_plan_groups_the_seeds_of_each_variant(tmp_path):
  config = _sweep_config(tmp_path / 'sweep_cfg.py', str(tmp_path / 'tfds'))
  runs = sweeps.expand(str(config))
  ahead = tmp_path / 's' / wd.RUNS / 'hidden=8,seed=1' / wd.CHECKPOINTS / '2'
  ahead.mkdir(parents=True)  # a seed with a checkpoint the other lacks trains apart
  units = seed_groups.plan(str(config), runs, tmp_path / 's')
  assert [u.name for u in units] == ['hidden=16,seed=0 + hidden=16,seed=1',
                                     'hidden=8,seed=0', 'hidden=8,seed=1']
  assert isinstance(units[0], seed_groups.Group) and units[0].variant == 'hidden=16'


def test_a_group_runs_under_all_its_claims_or_waits(tmp_path):
  runs = (sweeps.Run('seed=0', {'seed': 0}), sweeps.Run('seed=1', {'seed': 1}))
  peer = claims.try_claim(tmp_path / wd.RUNS / 'seed=1')  # another process holds seed=1
  with peer:
    got = seed_groups.attempt(seed_groups.Group(runs), None, spec='unused.py', sweep_dir=tmp_path,
                              root=None, claim_timeout_s=60, by_peer=lambda run: None,
                              log=print, finished=lambda *a: None)
  assert got is None
  assert not (tmp_path / wd.RUNS / 'seed=0' / claims.CLAIM).exists()  # released
  done = seed_groups.attempt(seed_groups.Group(runs), None, spec='unused.py', sweep_dir=tmp_path,
                             root=None, claim_timeout_s=60, by_peer=lambda run: 'elsewhere',
                             log=print, finished=lambda *a: None)
  assert done == {'seed=0': 'elsewhere', 'seed=1': 'elsewhere'}
