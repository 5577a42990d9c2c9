"""ResNet / SE-ResNet: shapes, parameter formulas, BatchNorm modes, SE weights, learning, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from attention_zoo.models import get_model
from attention_zoo.models import resnet

NAMES = sorted(resnet._SIZES)


def n_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def resnet_formula(blocks: int, widths, in_channels: int, num_classes: int) -> int:
  """Parameters counted by hand: 3x3 convs without bias, BN scale + bias, option-B projections."""
  total = 9 * in_channels * widths[0] + 2 * widths[0]  # stem conv + BN
  cin = widths[0]
  for cout in widths:
    for _ in range(blocks):
      total += 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout
      if cin != cout:
        total += cin * cout + 2 * cout  # 1x1 projection + BN (first block of stages 2, 3)
      cin = cout
  return total + widths[-1] * num_classes + num_classes


def se_formula(blocks: int, widths, r: int) -> int:
  """SE parameters: C*C/r + C/r + C/r*C + C per block."""
  return sum(blocks * (2 * c * (c // r) + c // r + c) for c in widths)


@pytest.mark.parametrize('name', NAMES + [f'se_{n}' for n in NAMES])
def test_output_shape(name):
  x = jnp.ones((2, 8, 8, 3))
  if resnet._SIZES[name.removeprefix('se_')][0] > 3:  # deep ones: shapes only (fast)
    model = get_model(name, rngs=nnx.Rngs(0), num_classes=7)
    assert nnx.eval_shape(lambda m: m(x), model).shape == (2, 7)
    return
  model = get_model(name, rngs=nnx.Rngs(0), num_classes=7, in_channels=3)
  model.eval()
  logits = model(x)
  assert logits.shape == (2, 7)
  assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize('size', [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_small_variant_on_digits_mnist_cifar_sizes(size):
  model = get_model('se_resnet_small', rngs=nnx.Rngs(0), num_classes=10, in_channels=size[-1])
  assert model(jnp.ones((3,) + size)).shape == (3, 10)


@pytest.mark.parametrize('name', NAMES)
def test_param_count_formula_and_se_adds_exactly_se_params(name):
  blocks, widths = resnet._SIZES[name]
  plain = get_model(name, rngs=nnx.Rngs(0), num_classes=10, in_channels=3)
  se = get_model(f'se_{name}', rngs=nnx.Rngs(0), num_classes=10, in_channels=3)
  r = resnet._SE_REDUCTION.get(name, 16)
  assert n_params(plain) == resnet_formula(blocks, widths, 3, 10)
  assert n_params(se) == n_params(plain) + se_formula(blocks, widths, r)


def test_resnet20_is_the_paper_size():
  # He et al. report 0.27M for ResNet-20 (option A); option B adds 2752 projection parameters.
  model = get_model('resnet20', rngs=nnx.Rngs(0), num_classes=10, in_channels=3)
  assert n_params(model) == 269_722 + 2_752


def test_reduction_option_changes_se_size():
  a = get_model('se_resnet20', rngs=nnx.Rngs(0), num_classes=10, reduction=16)
  b = get_model('se_resnet20', rngs=nnx.Rngs(0), num_classes=10, reduction=4)
  assert n_params(b) - n_params(a) == se_formula(3, (16, 32, 64), 4) - se_formula(
      3, (16, 32, 64), 16)


def test_batchnorm_train_and_eval_modes():
  model = get_model('resnet_small', rngs=nnx.Rngs(0), num_classes=5, in_channels=3)
  x = jax.random.normal(jax.random.key(1), (8, 8, 8, 3)) * 3.0 + 1.0
  stats = lambda: [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]

  before = stats()
  model.eval()
  eval_out = model(x)
  # Eval mode: running statistics, so each example is independent of the rest of the batch,
  # and the running statistics stay as they were.
  np.testing.assert_allclose(model(x[:2]), eval_out[:2], rtol=1e-5, atol=1e-5)
  assert all(np.array_equal(a, b) for a, b in zip(before, stats()))

  model.train()
  train_out = model(x)
  assert any(not np.allclose(a, b) for a, b in zip(before, stats()))  # updated by the train call
  assert not np.allclose(train_out, eval_out, atol=1e-3)  # batch statistics differ
  # Train mode uses batch statistics: a sub-batch gives different outputs.
  assert not np.allclose(model(x[:2]), train_out[:2], atol=1e-3)
  after = stats()

  model.eval()
  out2 = model(x)
  assert all(np.array_equal(a, b) for a, b in zip(stats(), after))  # eval call: no update
  assert not np.allclose(out2, eval_out, atol=1e-4)  # eval now uses the updated running stats


def test_se_weights_are_captured():
  model = get_model('se_resnet_small', rngs=nnx.Rngs(0), num_classes=3, in_channels=1,
                    capture_weights=True)
  model.eval()
  _, inter = nnx.capture(model, nnx.Intermediate)(jnp.ones((2, 8, 8, 1)))
  weights = [np.asarray(v[-1])  # sow keeps a tuple of the values
             for p, v in nnx.to_flat_state(inter) if 'se_weights' in map(str, p)]
  assert sorted(w.shape for w in weights) == sorted([(2, 8), (2, 16), (2, 32)])
  assert all(((w > 0) & (w < 1)).all() for w in weights)


def _branch(block, x):
  """The residual branch F(x) = bn2(conv2(relu(bn1(conv1(x))))), without SE."""
  return block.bn2(block.conv2(jax.nn.relu(block.bn1(block.conv1(x)))))


def _shortcut(block, x):
  return x if block.proj_conv is None else block.proj_bn(block.proj_conv(x))


# Wrong wirings, from the pieces of a block: the SENet journal version's integration ablation
# places SE after the addition (SE-POST) or on the identity branch (SE-Identity).
WRONG_WIRINGS = {
    'se_after_addition': lambda b, x: b.se(jax.nn.relu(_shortcut(b, x) + _branch(b, x))),
    'se_on_shortcut': lambda b, x: jax.nn.relu(b.se(_shortcut(b, x)) + _branch(b, x)),
}


def _numpy_shortcut(block, x, stride):
  """relu's argument with the branch gone: x, or BN(conv1x1 stride s (x)) with batch statistics."""
  if block.proj_conv is None:
    return x
  y = x[:, ::stride, ::stride] @ np.asarray(block.proj_conv.kernel[...])[0, 0]  # [B, h/s, w/s, C]
  mean, var = y.mean((0, 1, 2)), y.var((0, 1, 2))
  return ((y - mean) / np.sqrt(var + 1e-5) * np.asarray(block.proj_bn.scale[...])
          + np.asarray(block.proj_bn.bias[...]))


@pytest.mark.parametrize('cin, cout, stride', [(8, 8, 1), (8, 16, 2)], ids=['identity', 'proj'])
def test_se_sits_on_the_residual_branch_before_the_addition(cin, cout, stride):
  """Hu et al. (2018), fig. 3: y = relu(shortcut(x) + SE(F(x))). With the SE gate forced to 0
  (excitation bias -1e4, σ = 0) the block outputs relu(shortcut(x)); the wrong wirings do not."""
  block = resnet.BasicBlock(cin, cout, stride, se_reduction=4, rngs=nnx.Rngs(0))  # train mode
  x = np.asarray(jax.random.normal(jax.random.key(1), (4, 8, 8, cin)))  # [B, height, width, C]
  expected = np.maximum(_numpy_shortcut(block, x, stride), 0.0)
  assert np.abs(np.asarray(block(jnp.asarray(x))) - expected).max() > 0.1  # SE on: not vacuous
  block.se.expand.bias[...] = jnp.full((cout,), -1e4)
  np.testing.assert_allclose(block(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5)
  for name, wrong in WRONG_WIRINGS.items():
    assert np.abs(np.asarray(wrong(block, jnp.asarray(x))) - expected).max() > 0.1, name


def test_se_resnet_small_overfits_a_tiny_batch():
  model = get_model('se_resnet_small', rngs=nnx.Rngs(0), num_classes=4, in_channels=3)
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3))
  y = jnp.arange(8) % 4
  tx = optax.adam(1e-2)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # rest: BatchNorm statistics

  def loss_fn(params, rest):
    m = nnx.merge(graphdef, params, rest, copy=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
    return loss, nnx.state(m, nnx.Not(nnx.Param))  # running statistics updated in train mode

  @jax.jit
  def fit(params, rest):
    def step(carry, _):
      params, rest, opt_state = carry
      (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), rest, opt_state), loss
    (params, rest, _), losses = jax.lax.scan(step, (params, rest, tx.init(params)), None,
                                             length=150)
    return params, rest, losses

  params, rest, losses = fit(params, rest)
  assert losses[0] > 1.0
  assert losses[-1] < 0.05
  nnx.update(model, params, rest)
  model.eval()
  assert (np.asarray(jnp.argmax(model(x), -1)) == np.asarray(y)).all()  # with running stats


def test_bad_configuration_raises():
  with pytest.raises(ValueError, match='larger than channels'):
    get_model('se_resnet_small', rngs=nnx.Rngs(0), num_classes=10, reduction=16)
  with pytest.raises(ValueError, match='does not divide'):
    get_model('se_resnet20', rngs=nnx.Rngs(0), num_classes=10, reduction=3)
  with pytest.raises(ValueError, match='reduction'):
    get_model('resnet20', rngs=nnx.Rngs(0), num_classes=10, reduction=4)  # plain ResNet: no SE
  with pytest.raises(ValueError, match='widths'):
    resnet.ResNet(10, blocks_per_stage=1, widths=(8, 16), rngs=nnx.Rngs(0))
  model = get_model('resnet_small', rngs=nnx.Rngs(0), num_classes=10, in_channels=1)
  with pytest.raises(ValueError, match='images'):
    model(jnp.ones((2, 8, 8)))
