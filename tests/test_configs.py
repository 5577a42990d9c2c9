"""Every config: loads (each size), takes every sweep entry, builds its task and model."""

import ast
import dataclasses

import jax
import pytest
from flax import nnx
from ml_collections import config_dict

from attention_zoo import sweeps
from attention_zoo.attention import COMBINES, SCORES
from attention_zoo.models.seq2seq import Seq2SeqOptions
from attention_zoo.models.transformer_blocks import BlockOptions
from attention_zoo.build import build_model
from attention_zoo.train import config_utils
from configs import common
from tests.fixtures import CONFIG_DIR, CONFIGS, built_task, tiny
from tests.fixtures import load_config as load


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def test_configs_are_found():
  assert {'dates_seq2seq', 'dates_transformer', 'listops_transformer'} <= set(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_docstring_starts_with_its_command(name):
  doc = load(name).__doc__.strip().splitlines()
  command = ' '.join(line.strip().rstrip('\\') for line in doc[2:4])
  assert command.startswith('python -m experiments.main --workdir=')
  assert f'--config=configs/{name}.py' in command


def _uncommented_fields(path):
  """Fields set in `c.<x> = dict(k=v, ...)` or, in common.py, `c.<x>.<y> = v` with no comment."""
  src = path.read_text()
  lines = src.splitlines()
  missing = []
  for node in ast.walk(ast.parse(src)):
    if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)):
      continue
    target = ast.unparse(node.targets[0])
    if not target.startswith('c.'):
      continue
    if isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == 'dict':
      for kw in node.value.keywords:
        if '#' not in lines[kw.value.end_lineno - 1]:
          missing.append(f'{target}.{kw.arg or "**"}')
    elif path.name == 'common.py' and '#' not in lines[node.end_lineno - 1]:
      missing.append(target)
  return missing


@pytest.mark.parametrize('name', CONFIGS + ['common'])
def test_every_field_has_a_comment(name):
  assert _uncommented_fields(CONFIG_DIR / f'{name}.py') == []


@pytest.mark.parametrize('name', CONFIGS)
def test_bad_arg_names_the_valid_ones(name):
  with pytest.raises(ValueError, match='valid'):
    load(name).get_config('nonsense=1')
  with pytest.raises(ValueError, match="valid values: .*'tiny'"):
    load(name).get_config('size=huge')


@pytest.mark.parametrize('name', CONFIGS)
def test_every_sweep_entry_builds_task_and_model(name, tfds_dir, request):
  sweep = load(name).get_sweep('size=tiny')
  assert len(sweep) >= 2
  for entry in sweep:
    overrides = {k: v for k, v in entry.items() if k != sweeps.CONFIG_ARG}
    config = tiny(name, tfds_dir, request, entry.get(sweeps.CONFIG_ARG, 'size=tiny'))
    c = config_utils.apply_overrides(config, overrides)
    for key, value in overrides.items():
      assert config_utils.flatten(config_utils.to_dict(c))[key] == value
    task = built_task(c.task)
    model = nnx.eval_shape(lambda: build_model(c, task))  # checks every model option, cheaply
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) > 0


def test_parse_arg_casts_to_default_types():
  arg = common.parse_arg('peeky=true,steps=5,lr=0.5', peeky=False, steps=1, lr=1.0, name='x')
  assert (arg.peeky, arg.steps, arg.lr, arg.name) == (True, 5, 0.5, 'x')
  valid = r"\['lr', 'name', 'peeky', 'steps'\]"
  with pytest.raises(ValueError, match=r"unknown config arg 'stepz'; valid keys: " + valid):
    common.parse_arg('stepz=5', peeky=False, steps=1, lr=1.0, name='x')


@pytest.mark.parametrize('task', ['copy', 'reverse', 'sort', 'recall'])
def test_sequence_tasks_each_build(task, tfds_dir, request):
  c = tiny('sequence_seq2seq', tfds_dir, request, f'task={task},size=tiny')
  built = built_task(c.task)
  assert built.kind == 'seq2seq' and c.task.name == task
  nnx.eval_shape(lambda: build_model(c, built))


def test_mnist_resnet_offers_cifar10_with_he_et_al_steps():
  c = load('mnist_resnet').get_config('data=cifar10,model=se_resnet20,size=cifar')
  assert (c.task.name, c.model_name, c.train.steps, c.train.batch_size, c.train.lr) == (
      'cifar10', 'se_resnet20', 64_000, 128, 0.1)
  with pytest.raises(ValueError, match="valid values: .*'mnist'"):
    load('mnist_resnet').get_config('data=imagenet')


@pytest.mark.parametrize('name', CONFIGS)
def test_get_config_parses_the_arg_once_and_calls_config(name):
  """A config's fields are the arguments of its `config` function; get_config(arg) is
  config(**the arg's fields) and nothing more."""
  module = load(name)
  assert module.get_config().to_dict() == module.config().to_dict()
  assert module.get_config('size=tiny').to_dict() == module.config(size='tiny').to_dict()


def test_demo_calls_the_family_configs_with_its_fields():
  demo, transformer = load('dates_demo'), load('dates_transformer')
  c = demo.config(family='transformer', score='additive', size='tiny')
  want = transformer.config(score='additive', size='small')
  assert c.model.score == 'additive' and c.task.name == want.task.name
  assert demo.get_config('family=transformer,score=additive,size=tiny').to_dict() == c.to_dict()


def test_demo_runs_a_variant_longer_beside_its_own_length():
  """`steps` sets the training length (the cosine schedule decays to 0 there); the sweep's
  `longer` adds 'variant@steps' runs beside the demo's own and refuses what is not a variant."""
  demo = load('dates_demo')
  c = demo.get_config('family=transformer,score=additive,steps=3000')
  assert c.train.steps == 3000 and demo.get_config('family=transformer').train.steps == 1_500
  plain = demo.get_sweep()
  longer = demo.get_sweep('longer=family=transformer;score=additive@3000,seeds=2')
  assert len(plain) == 3 * len(demo.variants()) and len(longer) == 2 * (len(demo.variants()) + 1)
  assert longer[-2:] == [{'config_arg': 'family=transformer,score=additive,steps=3000', 'seed': s}
                         for s in (0, 1)]
  for bad in ('family=transformer;score=cosine@3000', 'family=transformer;score=additive@0',
              'family=transformer;score=additive'):
    with pytest.raises(ValueError, match='is not <variant>@<steps> with a variant of'):
      demo.get_sweep(f'longer={bad}')
  with pytest.raises(ValueError, match='steps must be >= 0'):
    demo.config(steps=-1)


def test_ladder_sweeps_both_operand_distributions():
  ladder = load('addition_seq2seq')
  both = [r['config_arg'] for r in ladder.get_sweep('size=saito,operands=uniform+saito,seeds=1')]
  assert both == [f'{v},size=saito' for v in ladder.LADDER] + [
      f'{v},size=saito,operands=saito' for v in ladder.LADDER]
  with pytest.raises(ValueError, match=r"operands='book'; valid values"):
    ladder.get_sweep('operands=uniform+book')


def test_model_helpers_take_the_models_defaults():
  """configs.common's model fields are the options dataclasses' defaults (None: a placeholder
  that the command line can set), not a second set of numbers."""
  fields = common.transformer_model(max_len=8)
  defaults = BlockOptions(max_len=8)
  for key, value in fields.items():
    assert getattr(defaults, key) == (None if isinstance(value, config_dict.FieldReference)
                                      else value), key
  assert set(fields) == {f.name for f in dataclasses.fields(BlockOptions) if f.init} - {
      'capture_weights'}
  fields = common.seq2seq_model()
  defaults = Seq2SeqOptions()
  for key, value in fields.items():
    assert getattr(defaults, key) == (None if isinstance(value, config_dict.FieldReference)
                                      else value), key
  assert (fields['embed_dim'], fields['score']) == (32, 'none')
  with pytest.raises(ValueError, match=r"seq2seq_model: unknown field\(s\) \['hiden'\]"):
    common.seq2seq_model(hiden=3)


def test_sweep_axes_come_from_the_registries():
  """Every registered score is on the date Transformer's score axis but the one left out with
  its reason; every combine on its combine axis; the paper's pair first (the baseline)."""
  axes = load('dates_transformer').axes()
  assert [s for s, _ in axes['score']] == ['scaled_dot'] + [
      s for s in SCORES if s not in ('scaled_dot', 'concat')]
  assert [c for _, c in axes['combine']] == ['residual'] + [c for c in COMBINES if c != 'residual']
  assert len(axes['both']) == len(axes['score']) * len(COMBINES.names())
  with pytest.raises(ValueError, match=r"\['cosine'\] are not registered"):
    common.axis(SCORES, cosine='not a score here')
