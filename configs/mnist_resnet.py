r"""ResNet and SE-ResNet on MNIST digits (the t10k file, split into train / validation / test).

  python -m experiments.main --workdir=runs/mnist_se \
    --config=configs/mnist_resnet.py:model=se_resnet_small,size=small

Needs $ATTENTION_ZOO_DATA/mnist-t10k (or --config.task.data_dir). Args: model = resnet_small |
se_resnet_small | resnet20 | se_resnet20 | ..., size = tiny | small, data = mnist | cifar10.

CIFAR-10 comes from the TFDS catalog and needs a machine that can download it (or a TFDS cache
that holds it); nothing here runs it. `size=cifar` follows He et al. (2016, sec. 4.2)'s CIFAR
setting for ResNet-20 / SE-ResNet-20: SGD lr 0.1, momentum 0.9, batch 128, 64k steps.
Deviations: no weight decay (the paper: 1e-4; the sgd optimizer here has none), a cosine decay
instead of dividing the lr by 10 at 32k and 48k steps, no data augmentation (the paper: 4-pixel
padding, random crops and flips).

  python -m experiments.main --workdir=runs/cifar10_se \
    --config=configs/mnist_resnet.py:data=cifar10,model=se_resnet20,size=cifar
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=dict(num_test=64, num_validation=64),
                 train=dict(steps=6, batch_size=16, log_every=2, eval_every=3,
                            checkpoint_every=3), eval=dict(batch_size=32, max_examples=64)),
    'small': dict(train=dict(steps=2_000, batch_size=64)),
    'cifar': dict(train=dict(steps=64_000, batch_size=128, lr=0.1, log_every=500,
                             eval_every=4_000, checkpoint_every=4_000)),
}


DATA = {  # data arg -> the task section
    'mnist': dict(
        name='mnist',  # 28x28 digits, 10 classes
        num_test=2_000,  # test images (the rest of t10k is train + validation)
        num_validation=1_000,  # validation images
        data_dir=common.optional(str),  # IDX files (None: $ATTENTION_ZOO_DATA/mnist-t10k)
        tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or TFDS's default)
    ),
    'cifar10': dict(
        name='cifar10',  # 32x32 colour images, 10 classes, from the TFDS catalog
        num_validation=5_000,  # train images held out for validation
        download=True,  # fetch through TFDS when the cache lacks it
        tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or TFDS's default)
    ),
}


def config(model: str = 'se_resnet_small', size: str = 'small',
           data: str = 'mnist') -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task = common.pick('data', data, DATA)
  c.model_name = model  # resnet_small | se_resnet_small | resnet20 | se_resnet20 | ...
  # the resnet constructors take their sizes from the task, and the dtypes (models/precision.py)
  c.model = ml_collections.ConfigDict(common.precision_fields())
  return common.finish(c, SIZES, size,
                       optimizer='sgd', lr=0.05, momentum=0.9, schedule='cosine', warmup_steps=100)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def get_sweep(arg: str | None = None) -> list[dict]:
  """ResNet vs SE-ResNet (arg `models`: '+'-separated model names), `seeds` seeds each
  (default 3), at `size` (default: the config's own), e.g. 'models=se_resnet_small'."""
  arg = common.parse_arg(arg, models='resnet_small+se_resnet_small', seeds=3, size='')
  config_arg = f'size={arg.size}' if arg.size else ''  # '': each run's config takes no arg
  return [{'config_arg': config_arg, 'model_name': m, 'seed': s}
          for m in arg.models.split('+') for s in common.seeds(arg.seeds)]
