"""Mixed precision (models/precision.py): what runs in bfloat16 and what stays float32.

- The traced train step (jaxpr) of a bfloat16 Transformer (dense and chunked kernels) and of a
  seq2seq model with attention: every matmul takes bfloat16 operands; the softmax statistics (the
  max and the exp-sum of every softmax, the log of the log-softmax) and the LayerNorm mean and
  variance are float32; parameters, optimizer state and loss stay float32. The checks are shown
  to flag a softmax and a layer norm written without the upcast.
- Each family's bfloat16 forward pass against its float32 forward pass on the same weights.
- A bfloat16 run's checkpoint loads into a float32 model for analysis.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.extend import core as jax_core

from attention_zoo.models import get_model, precision
from attention_zoo.train import steps
from tests import fixtures

BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)


# ---- walking a jaxpr -----------------------------------------------------------------------------
def _sub_jaxprs(value):
  if isinstance(value, jax_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def all_jaxprs(jaxpr: jax_core.Jaxpr):
  """`jaxpr` and every jaxpr nested in its equations (pjit, scan, custom_vjp, cond, remat, ...)."""
  yield jaxpr
  for eqn in jaxpr.eqns:
    for value in eqn.params.values():
      for sub in _sub_jaxprs(value):
        yield from all_jaxprs(sub)


# Elementwise and shape ops a statistic passes through on its way to its use (exp, rsqrt); a
# nested jit (jnp.where is one) is passed through to its inputs.
_THROUGH = {'sub', 'add', 'mul', 'div', 'neg', 'max', 'min', 'integer_pow', 'square', 'select_n',
            'stop_gradient', 'broadcast_in_dim', 'reshape', 'squeeze', 'expand_dims',
            'convert_element_type', 'copy', 'copy_p', 'is_finite', 'transpose', 'jit', 'pjit'}


def _reductions_feeding(eqn, producers, wanted: str):
  """The `wanted` reductions among what eqn's inputs are computed from, walking back through
  _THROUGH ops only (so a statistic, not the matmuls that made its operand)."""
  found, todo, seen = [], list(eqn.invars), set()
  while todo:
    var = todo.pop()
    if isinstance(var, jax_core.Literal) or id(var) in seen:
      continue
    seen.add(id(var))
    producer = producers.get(id(var))
    if producer is None:
      continue
    if producer.primitive.name == wanted:
      found.append(producer)
    elif producer.primitive.name in _THROUGH:
      todo.extend(producer.invars)
  return found


def _is_matmul(eqn) -> bool:
  """A dot_general with a free (non-contracted, non-batch) dimension: a matrix product, not a
  batched inner product (such as FlashAttention's δ = rowsum(dO ∘ O), a statistic)."""
  (lc, rc), (lb, rb) = eqn.params['dimension_numbers']
  lhs, rhs = (v.aval.ndim for v in eqn.invars)
  return lhs > len(lc) + len(lb) or rhs > len(rc) + len(rb)


def precision_report(closed: jax_core.ClosedJaxpr) -> dict[str, list]:
  """Per kind, the dtypes of the equations that kind covers, over every nested jaxpr:
    matmul:        (lhs, rhs) operand dtypes of every matrix product (dot_general, convolution);
    softmax_max:   the reduce_max whose result an exp reads (the max of a softmax / log-sum-exp);
    exp, exp_sum:  every exp, and every reduce_sum of an exp's result;
    log:           every log (log-sum-exp of the log-softmax; the chunked kernel's lse);
    norm_stats:    the reduce_sums an rsqrt reads (LayerNorm / BatchNorm mean and mean square);
    rsqrt:         every rsqrt (1 / sqrt(var + eps))."""
  out = {k: [] for k in ('matmul', 'softmax_max', 'exp', 'exp_sum', 'log', 'norm_stats', 'rsqrt')}
  for jaxpr in all_jaxprs(closed.jaxpr):
    producers = {id(v): eqn for eqn in jaxpr.eqns for v in eqn.outvars}
    exps = {id(v) for eqn in jaxpr.eqns if eqn.primitive.name == 'exp' for v in eqn.outvars}
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      dtype = lambda i=0, e=eqn: e.invars[i].aval.dtype  # noqa: E731
      if name == 'dot_general' and _is_matmul(eqn) or name == 'conv_general_dilated':
        out['matmul'].append((dtype(0), dtype(1)))
      elif name == 'exp':
        out['exp'].append(dtype())
        out['softmax_max'] += [r.invars[0].aval.dtype
                               for r in _reductions_feeding(eqn, producers, 'reduce_max')]
      elif name == 'reduce_sum' and id(eqn.invars[0]) in exps:
        out['exp_sum'].append(dtype())
      elif name == 'log':
        out['log'].append(dtype())
      elif name == 'rsqrt':
        out['rsqrt'].append(dtype())
        out['norm_stats'] += [r.invars[0].aval.dtype
                              for r in _reductions_feeding(eqn, producers, 'reduce_sum')]
  return out


def assert_mixed_precision(report: dict[str, list], *, softmaxes: int = 1, norms: int = 0):
  """Matmuls bfloat16; softmax and normalization statistics float32. The model has at least
  `softmaxes` softmaxes (attention and log-softmax) and `norms` normalizations: the walk must find
  a max and an exp-sum for each, and a mean and a mean square for each norm, so that no assertion
  passes on what it did not see."""
  kinds = ['matmul', 'softmax_max', 'exp', 'exp_sum', 'log'] + (['norm_stats', 'rsqrt'] if norms
                                                                else [])
  for kind in kinds:
    assert report[kind], f'no {kind} equation found: the walk missed it'
  assert set(report['matmul']) == {(BF16, BF16)}, report['matmul']
  for kind in kinds[1:]:
    assert set(report[kind]) == {F32}, f'{kind}: {report[kind]}'
  counts = {k: len(v) for k, v in report.items()}
  assert counts['softmax_max'] >= softmaxes and counts['exp_sum'] >= softmaxes, counts
  assert counts['norm_stats'] >= 2 * norms and counts['rsqrt'] >= norms, counts


# ---- the traced train steps ----------------------------------------------------------------------
TINY = dict(d_model=16, num_heads=2, num_layers=1, ffn_dim=32, max_len=16)
# name -> (model, options, softmaxes, normalizations): one encoder and one decoder layer have 3
# attention softmaxes (self, causal self, source-target) and the loss one log-softmax; post-norm
# 5 LayerNorms (one per sublayer), pre-norm 2 more (the stacks' final norms).
TRAIN_STEPS = {
    'transformer_dense': ('transformer', dict(TINY, norm='pre'), 4, 7),
    'transformer_chunked': ('transformer', dict(TINY, kernel='chunked', score='additive',
                                                score_dim=8), 4, 5),
    'seq2seq_attention': ('seq2seq', dict(hidden=16, embed_dim=8, score='general',
                                          style='luong'), 2, 0),
}


def traced_train_step(model_name: str, options: dict, dtype: str):
  """(jaxpr of the real train step (steps.make_train_step) on a batch of the reverse task,
  the abstract (state, metrics) it returns)."""
  task = fixtures.reverse_task(n_train=8, n_val=1, n_test=1)
  model = get_model(model_name, **task.model_dims, **options, dtype=dtype,
                    rngs=nnx.Rngs(0))
  tx = optax.adam(1e-3)
  graphdef, _, state = steps.init_state(model, tx, None)
  batch = {k: jnp.stack([ex[k] for ex in task.splits['train']]) for k in task.splits['train'][0]}
  step = steps.make_train_step(graphdef, task, tx, steps.rng_tags(state.rngs), lambda s: 1e-3)
  args = (state, batch, jax.random.key(0))
  return jax.make_jaxpr(step)(*args), jax.eval_shape(step, *args)


@pytest.mark.parametrize('name', sorted(TRAIN_STEPS))
def test_bf16_train_step_matmuls_bf16_statistics_f32(name):
  model_name, options, softmaxes, norms = TRAIN_STEPS[name]
  jaxpr, (state, metrics) = traced_train_step(model_name, options, 'bfloat16')
  assert_mixed_precision(precision_report(jaxpr), softmaxes=softmaxes, norms=norms)
  # parameters, optimizer state, loss and gradient norm stay float32
  floats = [x.dtype for x in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and set(floats) == {F32}
  assert metrics['loss'].dtype == F32 and metrics['grad_norm'].dtype == F32


def test_f32_train_step_has_no_bf16():
  """The float32 default: no equation of the step computes in bfloat16 (what the snapshot of
  tests/snapshot.py shows bit for bit on the configs)."""
  jaxpr, _ = traced_train_step('transformer', TINY, 'float32')
  dtypes = {v.aval.dtype for j in all_jaxprs(jaxpr.jaxpr) for eqn in j.eqns
            for v in eqn.outvars if hasattr(v.aval, 'dtype')}
  assert BF16 not in dtypes


def test_the_checks_flag_statistics_computed_in_bf16():
  """A softmax, log-softmax and layer norm written without the upcast fail the checks that the
  models pass (the test above would fail if a model lost its float32 statistics)."""

  def naive(x, w):  # x [B, F] bf16, w [F, F] bf16
    h = x @ w
    mean = jnp.sum(h, -1, keepdims=True, dtype=BF16) / h.shape[-1]
    var = jnp.sum(jnp.square(h - mean), -1, keepdims=True, dtype=BF16) / h.shape[-1]
    h = (h - mean) * jax.lax.rsqrt(var + jnp.asarray(1e-6, BF16))
    m = jnp.max(h, -1, keepdims=True)
    e = jnp.exp(h - m)
    p = e / jnp.sum(e, -1, keepdims=True, dtype=BF16)
    return jnp.sum(jnp.log(p + jnp.asarray(1e-3, BF16)), dtype=BF16)

  x, w = jnp.ones((2, 8), BF16), jnp.ones((8, 8), BF16)
  report = precision_report(jax.make_jaxpr(jax.value_and_grad(naive, argnums=1))(x, w))
  for kind in ('softmax_max', 'exp', 'exp_sum', 'log', 'norm_stats', 'rsqrt'):
    assert BF16 in report[kind], (kind, report[kind])
  with pytest.raises(AssertionError):
    assert_mixed_precision(report, norms=1)
  # and an f32 matmul in a bf16 model is flagged too
  report = precision_report(jax.make_jaxpr(lambda a, b: a @ b)(jnp.ones((2, 3)), jnp.ones((3, 2))))
  assert report['matmul'] == [(F32, F32)]


# ---- bfloat16 against float32 forward outputs, on the same weights -------------------------------
def _tokens(shape, vocab, seed):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(4, vocab, shape), jnp.int32)


def _inputs(family: str):
  """Model constructor kwargs (without dtypes) and call inputs, per family."""
  if family.startswith('seq2seq'):
    source = _tokens((4, 9), 20, 0).at[0, 6:].set(0)  # one padded source
    return dict(src_vocab_size=20, tgt_vocab_size=20), (source, _tokens((4, 7), 20, 1))
  if family == 'transformer':
    source = _tokens((4, 9), 20, 0).at[0, 6:].set(0)
    return dict(src_vocab_size=20, tgt_vocab_size=20), (source, _tokens((4, 7), 20, 1))
  if family == 'memn2n':
    story = _tokens((4, 6, 5), 30, 0).at[:, 4:].set(0)  # 4 sentences of 6 slots
    return dict(vocab_size=30, num_classes=30, memory_size=6, sentence_len=5), (
        story, _tokens((4, 5), 30, 1))
  images = jnp.asarray(np.random.default_rng(0).random((4, 12, 12, 1)), jnp.float32)
  return dict(num_classes=10, in_channels=1), (images,)


# family -> (registry name, options). The sizes are those of the configs' tiny models or larger.
FAMILIES = {
    'seq2seq': ('seq2seq', dict(hidden=32, embed_dim=16, score='none')),
    'seq2seq_attention': ('seq2seq', dict(hidden=32, embed_dim=16, score='additive',
                                          style='bahdanau')),
    'transformer': ('transformer', dict(d_model=32, num_heads=4, num_layers=2, ffn_dim=64,
                                        dropout_rate=0.0, max_len=16)),
    'memn2n': ('memn2n', dict(embed_dim=16, hops=3)),
    'se_resnet': ('se_resnet_small', {}),
}
# bfloat16 keeps 8 significant bits: one rounding has relative error <= u = 2^-8 (0.39%). The
# forward pass rounds each layer's inputs, weights and outputs; these errors are independent and
# add in quadrature, so over the few dozen roundings on the path of these small models the logits'
# relative error (RMS over all logits, against their RMS) is a few u (measured: 0.8u for the
# SE-ResNet to 2.3u for the Transformer). The bound is 8u = 3.1%. The lower bound 0.05u fails a
# model that ignores `dtype` and computes in float32 (error 0); the float32 statistics themselves
# are checked on the jaxpr above, not by this tolerance.
U = 2.0 ** -8
REL_TOL = 8 * U


def forward(model: nnx.Module, inputs: tuple):
  """(model(*inputs) in eval mode, jit-compiled once; the jaxpr of that call)."""
  model.eval()
  graphdef, state = nnx.split(model)
  call = lambda s, *x: nnx.merge(graphdef, s)(*x)  # noqa: E731
  return jax.jit(call)(state, *inputs), jax.make_jaxpr(call)(state, *inputs)


def _relative_error(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_bf16_forward_matches_f32_on_the_same_weights(family):
  name, options = FAMILIES[family]
  dims, inputs = _inputs(family)
  models = {dt: get_model(name, **dims, **options, dtype=dt, rngs=nnx.Rngs(3))
            for dt in ('float32', 'bfloat16')}
  params = {dt: nnx.state(m, nnx.Param) for dt, m in models.items()}
  for a, b in zip(jax.tree.leaves(params['float32']), jax.tree.leaves(params['bfloat16']),
                  strict=True):  # the same float32 weights: dtype changes only the computation
    assert b.dtype == F32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  (f32, _), (bf16, jaxpr) = forward(models['float32'], inputs), forward(models['bfloat16'], inputs)
  assert f32.dtype == F32 and bf16.dtype == BF16
  err = _relative_error(bf16, f32)
  assert 0.05 * U < err < REL_TOL, f'{family}: relative error {err:.2e} (u = {U:.2e})'
  # every matrix product of the bfloat16 forward pass takes bfloat16 operands
  matmuls = precision_report(jaxpr)['matmul']
  assert matmuls and set(matmuls) == {(BF16, BF16)}, matmuls


def test_unknown_dtype_is_refused_naming_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown dtype \(model.dtype\) 'bf16'.*bfloat16, float32"):
    get_model('transformer', src_vocab_size=8, tgt_vocab_size=8, dtype='bf16', rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"param_dtype \(model.param_dtype\) 'float16'"):
    get_model('resnet_small', num_classes=3, in_channels=1, param_dtype='float16',
              rngs=nnx.Rngs(0))
  assert sorted(precision.DTYPES) == ['bfloat16', 'float32']
  assert math.isclose(float(jnp.finfo(jnp.bfloat16).eps), 2 * U)  # u = eps / 2: the tolerance


# ---- a bfloat16 run's checkpoint, loaded into a float32 model for analysis -----------------------
@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.mark.parametrize('param_dtype', ['float32', 'bfloat16'])
def test_bf16_run_loads_into_a_float32_model(tmp_path, tfds_dir, param_dtype):
  """Two steps of the demo's tiny Transformer with model.dtype=bfloat16, then load_run with
  dtype='float32': float32 parameters (param_dtype='bfloat16' ones widened exactly by orbax's
  restore onto the float32 target) and finite float32 logits within REL_TOL of the bfloat16
  model's."""
  from attention_zoo.analysis import load  # pylint: disable=import-outside-toplevel
  from attention_zoo.train.loop import train_and_evaluate  # pylint: disable=import-outside-toplevel
  from configs import dates_demo  # pylint: disable=import-outside-toplevel
  config = dates_demo.get_config('family=transformer,score=scaled_dot,size=tiny')
  config.task.tfds_dir = tfds_dir
  config.model.update(dtype='bfloat16', param_dtype=param_dtype)
  config.train.update(steps=2, log_every=1, eval_every=0, checkpoint_every=2)
  config.eval.update(generate=False, max_examples=32)
  train_and_evaluate(config, tmp_path)
  _, trained, task = load.load_run(tmp_path)  # as the run was: bfloat16 computation
  config, analysed, _ = load.load_run(tmp_path, dtype='float32')
  assert config.model.dtype == 'bfloat16'  # the run's config, as it was written
  stored = jax.tree.leaves(nnx.state(trained, nnx.Param))
  loaded = jax.tree.leaves(nnx.state(analysed, nnx.Param))
  assert {x.dtype for x in stored} == {jnp.dtype(param_dtype)}
  assert {x.dtype for x in loaded} == {F32}
  for a, b in zip(stored, loaded, strict=True):  # bfloat16 -> float32 is exact
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b))
  batch = next(iter(task.batches('validation', 16, seed=0, shuffle=False, num_epochs=1)))
  inputs = task.model_inputs({k: jnp.asarray(v) for k, v in batch.items()})
  (bf16_logits, _), (f32_logits, _) = forward(trained, inputs), forward(analysed, inputs)
  assert bf16_logits.dtype == BF16 and f32_logits.dtype == F32
  assert np.all(np.isfinite(np.asarray(f32_logits)))
  err = _relative_error(bf16_logits, f32_logits)
  assert 0 < err < REL_TOL, err
