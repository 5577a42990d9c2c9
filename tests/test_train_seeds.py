"""The loop's seed axis (attention_zoo.train.seeds): S seeds of one config trained as one program
equal S separate runs, seed by seed, for each seed map.

Tolerance: final params and logged metrics within rtol 1e-5, atol 1e-6 of the separate runs
(the program over the seeds may round its matmuls differently; init is equal bitwise).
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
from attention_zoo.sweeps import claims, groups
from attention_zoo.train import batching, checkpoints, loop, optim, seeds as seeds_lib, steps
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
  assert _keys(res_a) - {'seed_group_size', 'seed_map'} == _keys(res_b)
  for split in ('train', 'validation', 'test'):
    for k, v in _numbers(res_b[split]).items():
      assert math.isclose(res_a[split][k], v, rel_tol=RTOL, abs_tol=ATOL), (split, k)
  assert res_a['step'] == res_b['step'] and res_a['num_params'] == res_b['num_params']
  samples = [wd.read_jsonl(pathlib.Path(d) / wd.SAMPLES) for d in (group_dir, separate_dir)]
  assert samples[0] == samples[1]


@pytest.mark.usefixtures('tiny_models')
@pytest.mark.parametrize('how', sorted(seeds_lib.SEED_MAPS))
def test_seed_step_equals_each_seeds_own_steps(how):
  task, seeds = fixtures.reverse_task(), (0, 3, 5)
  configs = _configs(seeds)
  tc = configs[0].train
  mesh = batching.make_mesh()
  rep = batching.replicated(mesh)
  tx, lr = optim.make_optimizer(tc, configs[0].model), optim.learning_rate(tc, configs[0].model)
  streams = [batching.train_batches(task, tc, s) for s in seeds]
  axis = seeds_lib.SeedAxis(seeds, mesh, how)
  keys = axis.keys()
  graphdef, _, state = axis.init(configs[0], task, tx)
  assert jax.tree.leaves(state.params)[0].shape[0] == len(seeds)  # the leading seed axis
  init = [np.asarray(x) for x in jax.tree.leaves(state.params)]  # before the step donates them
  first = axis.to_device([b.batch(0) for b in streams])
  step, leaves, treedef = steps.compile_train_step(graphdef, task, tx, lr, state, first, keys,
                                                   rep, over_seeds=axis.over)
  for t in range(3):
    leaves, metrics = step(leaves, axis.to_device([b.batch(t) for b in streams]), keys)
  grouped = jax.tree.leaves(jax.tree.unflatten(treedef, leaves).params)
  alone_step = None
  for i, (c, stream) in enumerate(zip(configs, streams)):
    one_axis = seeds_lib.SeedAxis([c.seed], mesh)
    g, _, one = one_axis.init(c, task, tx)
    assert jax.tree.leaves(one.params)[0].shape == grouped[0].shape[1:]  # S = 1: no seed axis
    for a, b in zip(init, jax.tree.leaves(one.params)):
      np.testing.assert_array_equal(a[i], np.asarray(b))  # init: bitwise
    batch = one_axis.to_device([stream.batch(0)])
    if alone_step is None:  # one program for every seed: the seed key is an argument
      alone_step, _, tree = steps.compile_train_step(g, task, tx, lr, one, batch,
                                                     one_axis.keys(), rep)
    own = jax.tree.leaves(one)
    for t in range(3):
      own, own_metrics = alone_step(own, one_axis.to_device([stream.batch(t)]), one_axis.keys())
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


@pytest.mark.parametrize('how', sorted(seeds_lib.SEED_MAPS))
def test_group_resumes_from_its_seeds_checkpoints(tmp_path, how):
  # BatchNorm statistics and dropout; killed after step 4, the group of 3 seeds resumes from each
  # seed's checkpoint of step 3 and ends where 3 separate runs end.
  task = fixtures.blobs_task()
  configs = _configs((1, 2, 3), model_name='_norm_classifier', model={'hidden': 8})
  group = [tmp_path / f'group{c.seed}' for c in configs]
  with MODELS.override('_norm_classifier', NormClassifier):
    seeds = [c.seed for c in configs]
    assert loop.train_and_evaluate(configs[0], group, seeds=seeds, seed_map=how, task=task,
                                   stop_after_step=4) == [{}, {}, {}]
    assert all(not (d / wd.RESULTS).exists() for d in group)
    results = loop.train_and_evaluate(configs[0], group, seeds=seeds, seed_map=how, task=task)
    assert [r['seed_map'] for r in results] == [how] * 3
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
    with pytest.raises(loop.NonFiniteError, match=rf'seed {bad} \(.*seed{bad}\): '
                       r"train metric 'loss' is nan at step 1"):
      loop.train_and_evaluate(configs[0], dirs, seeds=[good, bad], task=task)
  good_dir, bad_dir = dirs
  assert wd.read_json(good_dir / wd.RESULTS)['step'] == 6
  assert not (bad_dir / wd.RESULTS).exists()
  assert [r['step'] for r in wd.read_jsonl(bad_dir / wd.METRICS)] == [0]  # step 0's validation
  assert not (bad_dir / wd.CHECKPOINTS).exists() or not checkpoints.saved_steps(
      bad_dir / wd.CHECKPOINTS)
  assert checkpoints.saved_steps(good_dir / wd.CHECKPOINTS) == [3, 6]


def test_bucketed_or_start_phase_configs_do_not_train_together(tmp_path):
  c = fixtures.tiny_config(batching='bucketed')
  assert 'bucket' in seeds_lib.why_not_together(c)
  assert seeds_lib.why_not_together(fixtures.tiny_config()) is None
  phase = fixtures.tiny_config(start_phase={'lr': 0.1, 'patience': 1, 'max_steps': 0})
  assert 'start_phase' in seeds_lib.why_not_together(phase)
  with pytest.raises(ValueError, match=r"cannot train as one program: .*start_phase.*"
                     r"seed map 'processes'"):
    loop.train_and_evaluate(phase, tmp_path, seeds=[0, 1], task=fixtures.blobs_task())
  with pytest.raises(ValueError, match=r"seed map 'processes' does not run in one program"):
    loop.train_and_evaluate(fixtures.tiny_config(), tmp_path, seeds=[0, 1], seed_map='processes')
  with pytest.raises(ValueError, match='distinct'):
    loop.train_and_evaluate(fixtures.tiny_config(), tmp_path, seeds=[1, 1])
  assert not any(tmp_path.iterdir())  # refused before any workdir was made


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
def test_sweep_seed_groups_equal_separate_runs(tmp_path):
  # A seq2seq with dropout (an RNG stream per seed), validations with greedy decoding; the
  # seeds of each variant train in one experiments.main (--seeds), each equal to its own run.
  spec = str(_sweep_config(tmp_path / 'sweep_cfg.py', str(tmp_path / 'tfds')))
  group_dir, alone_dir = tmp_path / 'seed_parallel', tmp_path / 'alone'
  out = subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--config={spec}',
                        f'--workdir={group_dir}', '--parallel=2'], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  # What --seed_map=processes runs, one run at a time: experiments.main's train_and_evaluate.
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
  units = groups.group_runs(str(config), runs, tmp_path / 's', None)
  assert [u.name for u in units] == ['hidden=16,seed=0 + hidden=16,seed=1',
                                     'hidden=8,seed=0', 'hidden=8,seed=1']
  assert units[0].variant == 'hidden=16'


  alone = groups.group_runs(str(config), runs, tmp_path / 's', 'processes')
  assert [u.name for u in alone] == [r.name for r in runs]
  command = groups.command(str(config), tmp_path / 's', units[0].runs, 'vmap')
  assert command[1:3] == ['-m', 'experiments.main'] and '--seeds=0,1' in command
  assert [c for c in command if c.startswith('--workdir=')] == [
      f'--workdir={tmp_path / "s" / wd.RUNS / r.name}' for r in units[0].runs]
  assert '--seed_map=vmap' in command and not any(c.startswith('--config.seed') for c in command)


def test_conv_nets_train_their_seeds_apart_by_default_on_cpu(tmp_path):
  # bench seeds --models=se_resnet: lax.map / vmap of a conv net's seeds run 0.15x / 0.18x the
  # speed of separate runs on XLA CPU, so a sweep gives each seed its own process there
  assert seeds_lib.apart_by_default('resnet_small', 'cpu')
  assert seeds_lib.apart_by_default('se_resnet20', 'cpu')
  assert not seeds_lib.apart_by_default('resnet_small', 'gpu')
  assert not seeds_lib.apart_by_default('transformer', 'cpu')
  assert seeds_lib.platform_of_a_fresh_process() == jax.default_backend()
  spec = str(fixtures.CONFIG_DIR / 'mnist_resnet.py') + ':models=se_resnet_small,seeds=2'
  runs = sweeps.expand(spec)
  default = groups.group_runs(spec, runs, tmp_path, None)
  asked = groups.group_runs(spec, runs, tmp_path, 'map')
  if jax.default_backend() == 'cpu':
    assert [u.name for u in default] == [r.name for r in runs]  # one run each
  assert [len(u.runs) for u in asked] == [2]  # a seed map asked for is kept


def test_a_group_runs_under_all_its_claims_or_waits(tmp_path):
  runs = (sweeps.Run('seed=0', {'seed': 0}), sweeps.Run('seed=1', {'seed': 1}))
  spec = tmp_path / 'cfg.py'
  spec.write_text('def get_config(arg=None): pass\ndef get_sweep(arg=None): return []\n')
  runner = sweeps.Runner(str(spec), tmp_path, log=print)
  runner.old_errors = {r.name: None for r in runs}
  peer = claims.try_claim(tmp_path / wd.RUNS / 'seed=1')  # another process holds seed=1
  with peer:
    assert runner.attempt(groups.Group(runs), None) is None
  assert not (tmp_path / wd.RUNS / 'seed=0' / claims.CLAIM).exists()  # released
  for run in runs:  # another process finished both meanwhile
    wd.write_json(tmp_path / wd.RUNS / run.name / wd.RESULTS, {})
  done = runner.attempt(groups.Group(runs), None)
  assert done == {'seed=0': 'elsewhere', 'seed=1': 'elsewhere'}


def test_processes_seed_map_runs_one_experiments_main_per_seed(tmp_path):
  # experiments.main --seeds=... --seed_map=processes: each seed as its own run, bitwise.
  spec = str(_sweep_config(tmp_path / 'cfg.py', str(tmp_path / 'tfds')))
  out = subprocess.run([sys.executable, '-m', 'experiments.main', f'--config={spec}',
                        f'--workdir={tmp_path / "p"}', '--seeds=0,1', '--seed_map=processes',
                        '--config.train.steps=2'], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  for seed in (0, 1):
    run = tmp_path / 'p' / f'seed={seed}'
    assert wd.read_json(run / wd.CONFIG)['seed'] == seed
    assert 'seed_group_size' not in wd.read_json(run / wd.RESULTS)  # a run of its own


def test_a_conv_nets_seeds_get_a_process_each_without_a_seed_map_on_cpu(tmp_path, data_dir):
  if jax.default_backend() != 'cpu':
    pytest.skip('the default that trains seeds apart is the CPU\'s')
  mnist = pathlib.Path(data_dir) / fixtures.DATA_SUBDIR['mnist']
  out = subprocess.run([sys.executable, '-m', 'experiments.main',
                        f'--config={fixtures.CONFIG_DIR / "mnist_resnet.py"}:'
                        'model=resnet_small,size=tiny', f'--config.task.data_dir={mnist}',
                        f'--config.task.tfds_dir={tmp_path / "tfds"}', '--config.train.steps=2',
                        f'--workdir={tmp_path / "p"}', '--seeds=0,1'], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  for seed in (0, 1):
    results = wd.read_json(tmp_path / 'p' / f'seed={seed}' / wd.RESULTS)
    assert 'seed_group_size' not in results  # its own process, not one program of 2 seeds
