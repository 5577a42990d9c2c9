"""experiments.bench train: the --quick run writes its JSON; the PyTorch models of the comparison
have the zoo models' parameter counts (only where torch is importable: it is not a dependency)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import dates_demo

REPO = pathlib.Path(__file__).resolve().parents[1]
FIELDS = {'model', 'threads', 'zoo_steps_per_s', 'torch_eager_steps_per_s',
          'torch_compiled_steps_per_s', 'ratio'}


@pytest.fixture(scope='module')
def quick_json(tmp_path_factory) -> dict:
  """The JSON of `bench train --quick --notorch` (the zoo side alone, as CI, which has no torch)."""
  tmp = tmp_path_factory.mktemp('bench_train')
  out = tmp / 'bench_train.json'
  env = dict(os.environ, TFDS_DATA_DIR=str(tmp / 'tfds'))
  proc = subprocess.run([sys.executable, '-m', 'experiments.bench', 'train', '--quick',
                         '--notorch', f'--json={out}'], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
  assert '| seq2seq (batch 64) | 1 |' in proc.stdout  # the table
  return json.loads(out.read_text())


def test_quick_run_writes_the_json(quick_json):
  assert set(quick_json['load']) == {'before', 'after'}
  assert all(len(quick_json['load'][k]) == 3 for k in ('before', 'after'))  # 1, 5, 15 min
  rows = quick_json['rows']
  assert [(r['model'], r['threads']) for r in rows] == [('seq2seq', 1), ('transformer', 1)]
  for r in rows:
    assert FIELDS <= set(r), r
    assert r['zoo_steps_per_s'] > 0 and r['zoo_param_count'] > 0
    assert r['torch_eager_steps_per_s'] is None and r['torch_compiled_steps_per_s'] is None
    assert r['ratio'] is None
    assert r['zoo_flop_per_s'] == pytest.approx(r['zoo_flops_per_step'] * r['zoo_steps_per_s'])
    assert 0 < r['zoo_mfu'] <= 1 and r['zoo_peak_flop_per_s'] > 1e9  # the measured CPU peak
  # the seq2seq LSTM's scan repeats its matmuls: counted per step of the loop, not once
  assert [r['zoo_flops_source'] for r in rows] == ['xla_hlo_matmuls', 'xla_cost_analysis']
  assert [r['batch_size'] for r in rows] == [64, 32]  # the demo's batches


def test_torch_models_have_the_zoo_param_counts(quick_json):
  torch = pytest.importorskip('torch', reason='torch is not installed (not a dependency of the '
                              'package; .venv/bin/pip install torch==2.13.0 for the comparison)')
  from experiments.bench import train_torch  # pylint: disable=import-outside-toplevel
  for row in quick_json['rows']:
    config = dates_demo.get_config(row['config_arg'])
    model = train_torch.build(config.model_name, model=config.model.to_dict(),
                                    **row['model_dims'])
    assert isinstance(model, torch.nn.Module)
    count = train_torch.param_count(model)
    assert abs(count - row['zoo_param_count']) <= 0.02 * row['zoo_param_count'], (
        row['model'], count, row['zoo_param_count'])


def _copy_zoo_weights(name: str, zoo: dict, model) -> None:
  """Loads the zoo model's parameters (nnx.to_pure_dict of its Param state) into `model`."""
  import torch  # pylint: disable=import-outside-toplevel
  sd = {}
  t = lambda x: torch.from_numpy(np.array(x)).T.contiguous()  # flax [in, out] -> torch [out, in]
  if name == 'seq2seq':
    for side in ('encoder', 'decoder'):
      cell = zoo[side]  # flax OptimizedLSTMCell: gates i, f, g, o as torch's, one bias
      sd[f'{side}.weight_ih_l0'] = t(cell['dense_i']['kernel'])
      sd[f'{side}.weight_hh_l0'] = t(cell['dense_h']['kernel'])
      sd[f'{side}.bias_ih_l0'] = torch.from_numpy(np.array(cell['dense_h']['bias']))
      sd[f'{side}.bias_hh_l0'] = torch.zeros_like(sd[f'{side}.bias_ih_l0'])
    score = zoo['decoder_step']['attention']['score']
    for k in ('w_q', 'w_k', 'v'):
      sd[f'{k}.weight'] = t(score[k]['kernel'])
    sd['w_c.weight'] = t(zoo['decoder_step']['combine']['w_c']['kernel'])
    sd['out.weight'], sd['out.bias'] = t(zoo['readout']['kernel']), zoo['readout']['bias']
  else:
    def attention(prefix, a):  # LinearGeneral kernels [F, N, D] / [N, D, F]
      flat = lambda p: np.asarray(p['kernel']).reshape(np.asarray(p['kernel']).shape[0], -1)
      sd[f'{prefix}.in_proj_weight'] = torch.from_numpy(
          np.concatenate([flat(a[k]).T for k in ('query', 'key', 'value')]))
      sd[f'{prefix}.in_proj_bias'] = torch.from_numpy(
          np.concatenate([np.asarray(a[k]['bias']).ravel() for k in ('query', 'key', 'value')]))
      out = np.asarray(a['out']['kernel'])
      sd[f'{prefix}.out_proj.weight'] = t(out.reshape(-1, out.shape[-1]))
      sd[f'{prefix}.out_proj.bias'] = a['out']['bias']

    def norm(prefix, sub):
      sd[f'{prefix}.weight'], sd[f'{prefix}.bias'] = sub['norm']['scale'], sub['norm']['bias']

    def ffn(prefix, f):
      for torch_name, zoo_name in (('linear1', 'w1'), ('linear2', 'w2')):
        sd[f'{prefix}.{torch_name}.weight'] = t(f[zoo_name]['kernel'])
        sd[f'{prefix}.{torch_name}.bias'] = f[zoo_name]['bias']

    items = lambda layers: layers.items() if isinstance(layers, dict) else enumerate(layers)
    for i, layer in items(zoo['encoder']['layers']):
      attention(f'encoder.layers.{i}.self_attn', layer['self_attn'])
      norm(f'encoder.layers.{i}.norm1', layer['attn_sub'])
      ffn(f'encoder.layers.{i}', layer['ffn'])
      norm(f'encoder.layers.{i}.norm2', layer['ffn_sub'])
    for i, layer in items(zoo['decoder']['layers']):
      attention(f'decoder.layers.{i}.self_attn', layer['self_attn'])
      norm(f'decoder.layers.{i}.norm1', layer['self_sub'])
      attention(f'decoder.layers.{i}.multihead_attn', layer['cross_attn'])
      norm(f'decoder.layers.{i}.norm2', layer['cross_sub'])
      ffn(f'decoder.layers.{i}', layer['ffn'])
      norm(f'decoder.layers.{i}.norm3', layer['ffn_sub'])
    sd['out.weight'], sd['out.bias'] = t(zoo['out']['kernel']), zoo['out']['bias']
  for side in ('src_embed', 'tgt_embed'):  # nnx.Embed, or the Transformer's Embedder around one
    embed = zoo[side] if name == 'seq2seq' else zoo[side]['embed']
    sd[f'{side}.weight'] = embed['embedding']
  sd = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v))
        for k, v in sd.items()}
  missing, unexpected = model.load_state_dict(sd, strict=False)
  assert not unexpected and set(missing) <= {'positions'}, (missing, unexpected)


@pytest.mark.parametrize('model_name', ['seq2seq', 'transformer'])
def test_torch_models_compute_the_zoo_logits(quick_json, model_name):
  """With the zoo model's weights, the PyTorch model gives the same logits on a padded batch:
  the comparison times one architecture in two frameworks."""
  torch = pytest.importorskip('torch', reason='torch is not installed (not a dependency)')
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from attention_zoo.models import get_model  # pylint: disable=import-outside-toplevel
  from experiments.bench import train_torch  # pylint: disable=import-outside-toplevel
  row = next(r for r in quick_json['rows'] if r['model'] == model_name)
  config = dates_demo.get_config(row['config_arg'])
  dims = row['model_dims']
  zoo = get_model(config.model_name, rngs=nnx.Rngs(0), **dims, **config.model.to_dict())
  model = train_torch.build(config.model_name, model=config.model.to_dict(), **dims)
  _copy_zoo_weights(model_name, nnx.to_pure_dict(nnx.state(zoo, nnx.Param)), model)
  rng = np.random.default_rng(0)
  lengths = np.array([30, 17, 9, 1])  # PAD after each source's length
  source = np.where(np.arange(30) < lengths[:, None], rng.integers(4, dims['src_vocab_size'],
                                                                   (4, 30)), 0).astype(np.int32)
  target_in = rng.integers(1, dims['tgt_vocab_size'], (4, 11)).astype(np.int32)
  want = np.asarray(zoo(source, target_in))  # [B, T, V]
  with torch.no_grad():
    got = model(torch.from_numpy(source).long(), torch.from_numpy(target_in).long()).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
