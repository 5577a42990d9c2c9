"""A new score is one module and its numpy reference: the cosine score of tests/cosine_score.py,
registered by the test and removed after, reaches every kernel and layer test, the configs and
their validation, and the attention bench, with no other file edited."""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_zoo.attention import SCORES
from attention_zoo.models import get_model
from attention_zoo.models.seq2seq import Seq2SeqOptions
from attention_zoo.models.transformer_blocks import BlockOptions
from configs import dates_demo, dates_seq2seq, dates_transformer
from tests import cosine_score
from tests import numpy_reference as ref
from tests import test_attention_kernels

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS='cpu')


def _run(args, timeout=900):
  return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=timeout)


def test_registered_only_inside_the_block():
  assert 'cosine' not in SCORES and 'cosine' not in ref.SCORE_REFERENCES
  with cosine_score.registered():
    assert SCORES.get('cosine') is cosine_score.CosineScore
  assert 'cosine' not in SCORES and 'cosine' not in ref.SCORE_REFERENCES
  with pytest.raises(ValueError, match=r"unknown score 'cosine'; known: "):
    BlockOptions(max_len=8, score='cosine')


def test_every_kernel_and_layer_test_takes_it():
  """The kernel and layer test files, run with the score registered (as a pytest plugin) and
  only their cosine cases selected: every test parametrized by the registered scores collects
  them (outputs and gradients of every kernel that takes the score, its temperature included;
  finite on the zero padding; the chunked backward pass; the one-head layer), and they pass."""
  proc = _run(['-m', 'pytest', '-q', '-p', 'tests.cosine_score', '-p', 'no:cacheprovider',
               'tests/test_attention_kernels.py', 'tests/test_attention_layers.py',
               '-k', 'cosine'])
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with cosine_score.registered():
    kernel_cases = [c for c in test_attention_kernels.cases() if c[0] == 'cosine']
  assert {k for _, k in kernel_cases} == {'dense', 'chunked'}  # not fused: no fused_scale
  # outputs and gradients per kernel; zero padding and the chunked backward; the layer test
  expected = 2 * len(kernel_cases) + 3
  passed = int(re.search(r'(\d+) passed', proc.stdout).group(1))
  assert passed >= expected, proc.stdout[-2000:]


def test_the_zero_padding_check_catches_a_cosine_without_its_eps():
  """Without EPS, cos(0, 0) is 0 / 0: the interface check of the score fails."""
  bare = type('BareCosine', (cosine_score.CosineScore,), {'eps': 0.0})
  with cosine_score.registered(bare):
    with pytest.raises(AssertionError):
      test_attention_kernels.test_scores_stay_finite_on_the_chunked_kernels_zero_padding('cosine')


def test_its_temperature_is_one_parameter_per_head():
  with cosine_score.registered():
    mha_score = get_model('transformer_lm', rngs=nnx.Rngs(0), vocab_size=11, d_model=16,
                          num_heads=4, score='cosine').decoder.layers[0].self_attn.score
  assert isinstance(mha_score, cosine_score.CosineScore)
  assert mha_score.temperature.shape == (4,)  # N heads: the score was built for them


def test_the_configs_and_their_validation_take_it():
  """The sweep axes read the registry (dates_transformer's score axis, the demo's rows); a
  config with score=cosine resolves, its options pass BlockOptions / Seq2SeqOptions, and its
  model trains (finite loss and gradients) for both families."""
  with cosine_score.registered():
    assert ('cosine', 'residual') in dates_transformer.axes()['score']
    sweep = [e['config_arg'] for e in dates_demo.get_sweep('size=tiny,seeds=1')]
    assert {'family=seq2seq,score=cosine,size=tiny',
            'family=transformer,score=cosine,size=tiny'} <= set(sweep)
    for config, dims in ((dates_transformer.get_config('score=cosine,size=tiny'),
                          dict(src_vocab_size=20, tgt_vocab_size=15)),
                         (dates_seq2seq.get_config('score=cosine,size=tiny'),
                          dict(src_vocab_size=20, tgt_vocab_size=15)),
                         (dates_demo.get_config('family=transformer,score=cosine,size=tiny'),
                          dict(src_vocab_size=20, tgt_vocab_size=15))):
      assert config.model.score == 'cosine'
      model = get_model(config.model_name, rngs=nnx.Rngs(0), **dims, **config.model.to_dict())
      source = jnp.asarray(np.random.default_rng(0).integers(3, 20, (2, 6)), jnp.int32)
      target_in = source[:, :5] % 15

      def loss(model):
        return jnp.mean(model(source, target_in) ** 2)

      value, grads = nnx.value_and_grad(loss)(model)
      assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert Seq2SeqOptions(score='cosine').wiring.score is cosine_score.CosineScore
    with pytest.raises(ValueError, match=r"unknown score 'cosin' \(did you mean 'cosine'\?\)"):
      get_model('transformer', src_vocab_size=9, tgt_vocab_size=9, score='cosin',
                rngs=nnx.Rngs(0))


def test_the_attention_bench_takes_it(tmp_path):
  """`experiments.bench attention --scores=cosine` with the score registered in the process:
  the flag's check knows it, and its rows are timed through the kernels that take it."""
  out = tmp_path / 'attention.json'
  code = ('import runpy, sys; from tests import cosine_score\n'
          'with cosine_score.registered():\n'
          "  sys.argv = ['experiments.bench', 'attention', '--scores=cosine', '--lengths=32',\n"
          "              '--reps=1', '--batch=1', '--heads=2', '--head_dim=8',\n"
          f"              '--nomemory_targets', '--json={out}']\n"
          "  runpy.run_module('experiments.bench', run_name='__main__')\n")
  proc = _run(['-c', code])
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  rows = json.loads(out.read_text())['rows']
  ours = {(r['score'], r['kernel'], r['pass']) for r in rows if r['score'] is not None}
  assert {s for s, _, _ in ours} == {'cosine'}
  assert {('cosine', 'dense', 'fwd+bwd'), ('cosine', 'chunked', 'fwd+bwd')} <= ours
  assert not any(k in ('fused', 'chunked_xla') for _, k, _ in ours)  # dot-product scores only
  unknown = _run(['-m', 'experiments.bench', 'attention', '--scores=cosine', '--lengths=32'])
  assert unknown.returncode != 0 and '--scores: unknown cosine' in unknown.stderr
