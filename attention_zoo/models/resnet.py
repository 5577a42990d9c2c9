"""CIFAR-style ResNet (He et al. 2016) and SE-ResNet (Hu et al. 2018).

Three stages of basic blocks (two 3x3 convs) with `widths` channels; the first block of stages 2 and
3 halves the resolution with stride 2. Depth = 6n + 2 for n blocks per stage (ResNet-20: n = 3).
Shortcut option B of He et al. (2016): identity when the shape is unchanged, otherwise a 1x1
strided conv + BatchNorm projection.

SE-ResNet puts a squeeze-and-excitation block on each residual branch, after its last BatchNorm and
before the addition (SENet, Fig. 3):  y = relu(x + SE(F(x))).

Precision (models/precision.py): convolutions, SE and the head compute in `dtype` with
parameters of `param_dtype`; BatchNorm statistics (batch and running) are float32, the pooled
mean accumulates in float32.

Shapes: images [B, height, width, C], C channels (NHWC, float32).
References: He, Zhang, Ren, Sun (2016), "Deep Residual Learning for Image Recognition", sec. 4.2;
Hu, Shen, Sun (2018), "Squeeze-and-Excitation Networks".
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from attention_zoo.attention.squeeze_excite import SqueezeExcite
from attention_zoo.models import precision as precision_lib
from attention_zoo.models.registry import register_model

_BN_MOMENTUM = 0.9  # running = 0.9 running + 0.1 batch, as PyTorch's default 0.1
_CONV_INIT = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')  # He init


def _conv(cin: int, cout: int, kernel: int, stride: int, rngs: nnx.Rngs,
          dtypes: dict[str, Any]) -> nnx.Conv:
  return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding='SAME', use_bias=False,
                  kernel_init=_CONV_INIT, **dtypes, rngs=rngs)


def _bn(channels: int, rngs: nnx.Rngs, dtypes: dict[str, Any]) -> nnx.BatchNorm:
  return nnx.BatchNorm(channels, momentum=_BN_MOMENTUM, epsilon=1e-5, **dtypes, rngs=rngs)


class BasicBlock(nnx.Module):
  """y = relu(shortcut(x) + [SE](bn(conv(relu(bn(conv(x))))))); option-B projection shortcut.
  dtypes: flax's dtype= and param_dtype=."""

  def __init__(self, cin: int, cout: int, stride: int, *, se_reduction: int | None,
               capture_weights: bool = False, rngs: nnx.Rngs, **dtypes: Any):
    self.conv1 = _conv(cin, cout, 3, stride, rngs, dtypes)
    self.bn1 = _bn(cout, rngs, dtypes)
    self.conv2 = _conv(cout, cout, 3, 1, rngs, dtypes)
    self.bn2 = _bn(cout, rngs, dtypes)
    self.se = (SqueezeExcite(cout, se_reduction, capture_weights=capture_weights, **dtypes,
                             rngs=rngs)
               if se_reduction is not None else None)
    if stride != 1 or cin != cout:
      self.proj_conv = _conv(cin, cout, 1, stride, rngs, dtypes)
      self.proj_bn = _bn(cout, rngs, dtypes)
    else:
      self.proj_conv = self.proj_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    # x [B, height, width, Cin] -> [B, height/s, width/s, Cout], s the stride
    h = jax.nn.relu(self.bn1(self.conv1(x)))  # [B, height/s, width/s, Cout]
    h = self.bn2(self.conv2(h))  # [B, height/s, width/s, Cout]
    if self.se is not None:
      h = self.se(h)  # [B, height/s, width/s, Cout], channels rescaled by SE weights
    shortcut = x if self.proj_conv is None else self.proj_bn(self.proj_conv(x))
    return jax.nn.relu(shortcut + h)


class ResNet(nnx.Module):
  """CIFAR ResNet: conv3x3 stem, 3 stages of `blocks_per_stage` basic blocks, avg pool, linear.

  Args:
    num_classes: output logits.
    in_channels: image channels C.
    blocks_per_stage: n (depth 6n + 2).
    widths: channels of the stem/stage 1, stage 2, stage 3 (16, 32, 64 in the paper).
    se_reduction: None for a plain ResNet; r for SE-ResNet (SE hidden size C / r).
    capture_weights: SE blocks sow their channel weights [B, C] as 'se_weights'.
    dtype, param_dtype: computation and parameter dtype, names in models.precision.DTYPES
      ('float32', 'bfloat16').
  """

  def __init__(self, num_classes: int, in_channels: int = 3, *, blocks_per_stage: int,
               widths: Sequence[int] = (16, 32, 64), se_reduction: int | None = None,
               capture_weights: bool = False, dtype: str = precision_lib.DEFAULT,
               param_dtype: str = precision_lib.DEFAULT, rngs: nnx.Rngs):
    dtypes = precision_lib.resolve(dtype, param_dtype).kwargs
    if blocks_per_stage < 1:
      raise ValueError(f'blocks_per_stage must be >= 1, got {blocks_per_stage}')
    if len(widths) != 3:
      raise ValueError(f'widths must have 3 entries (one per stage), got {tuple(widths)}')
    self.stem_conv = _conv(in_channels, widths[0], 3, 1, rngs, dtypes)
    self.stem_bn = _bn(widths[0], rngs, dtypes)
    blocks = []
    cin = widths[0]
    for stage, cout in enumerate(widths):
      for i in range(blocks_per_stage):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(BasicBlock(cin, cout, stride, se_reduction=se_reduction,
                                 capture_weights=capture_weights, **dtypes, rngs=rngs))
        cin = cout
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(cin, num_classes, **dtypes, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    # images [B, height, width, C] float32 -> logits [B, classes]
    if images.ndim != 4:
      raise ValueError(f'ResNet expects images [B, height, width, C], got shape {images.shape}')
    h = jax.nn.relu(self.stem_bn(self.stem_conv(images)))  # [B, height, width, widths[0]]
    for block in self.blocks:
      h = block(h)  # [B, height/4, width/4, widths[2]] after the last stage
    return self.head(jnp.mean(h, axis=(1, 2)))  # [B, classes]


# name -> (blocks per stage, widths). 'small' suits 8x8 digits and 28x28 MNIST on a CPU.
_SIZES = {
    'resnet20': (3, (16, 32, 64)),
    'resnet32': (5, (16, 32, 64)),
    'resnet56': (9, (16, 32, 64)),
    'resnet110': (18, (16, 32, 64)),
    'resnet_small': (1, (8, 16, 32)),
}
# Default SE reduction r per size: SENet's 16, or 4 where 16 exceeds the 8 channels of 'small'.
_SE_REDUCTION = {'resnet_small': 4}


def _register(name: str, blocks: int, widths: tuple[int, ...]) -> None:
  def resnet(num_classes: int = 10, in_channels: int = 3, *, dtype: str = precision_lib.DEFAULT,
             param_dtype: str = precision_lib.DEFAULT, rngs: nnx.Rngs) -> ResNet:
    return ResNet(num_classes, in_channels, blocks_per_stage=blocks, widths=widths, dtype=dtype,
                  param_dtype=param_dtype, rngs=rngs)

  def se_resnet(num_classes: int = 10, in_channels: int = 3, *,
                reduction: int = _SE_REDUCTION.get(name, 16), capture_weights: bool = False,
                dtype: str = precision_lib.DEFAULT, param_dtype: str = precision_lib.DEFAULT,
                rngs: nnx.Rngs) -> ResNet:
    return ResNet(num_classes, in_channels, blocks_per_stage=blocks, widths=widths,
                  se_reduction=reduction, capture_weights=capture_weights, dtype=dtype,
                  param_dtype=param_dtype, rngs=rngs)

  resnet.__doc__ = f'{name}: ResNet with {blocks} blocks per stage, widths {widths}.'
  se_resnet.__doc__ = f'se_{name}: {name} with an SE block (reduction r) on each residual branch.'
  # The task sizes a ResNet takes (an image task also offers image_shape). On XLA CPU one
  # program over a sweep's seeds runs a conv net several times slower than one process per seed
  # (`python -m experiments.bench seeds --models=se_resnet`, one Zen 4 core, 18 seeds: lax.map
  # 0.15x, vmap 0.18x the speed of separate runs): there its seeds train apart by default.
  for registered, ctor in ((name, resnet), (f'se_{name}', se_resnet)):
    register_model(registered, task_dims=('num_classes', 'in_channels'),
                   seeds_apart_on=('cpu',))(ctor)


for _name, (_blocks, _widths) in _SIZES.items():
  _register(_name, _blocks, _widths)
