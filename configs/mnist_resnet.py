r"""ResNet and SE-ResNet on MNIST digits (the t10k file, split into train / validation / test).

  python -m experiments.main --workdir=runs/mnist_se \
    --config=configs/mnist_resnet.py:model=se_resnet_small,size=small

Needs $ATTENTION_ZOO_DATA/mnist-t10k (or --config.task.data_dir). Args: model = resnet_small |
se_resnet_small | resnet20 | se_resnet20 | ..., size = tiny | small.
"""

import ml_collections

from configs import common

SIZES = {  # size -> overrides of the sections below
    'tiny': dict(task=dict(num_test=64, num_validation=64),
                 train=dict(steps=6, batch_size=16, log_every=2, eval_every=3,
                            checkpoint_every=3), eval=dict(batch_size=32, max_examples=64)),
    'small': dict(train=dict(steps=2_000, batch_size=64)),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, model='se_resnet_small', size='small')
  c = common.base_config()
  c.task = dict(
      name='mnist',  # 28x28 digits, 10 classes
      num_test=2_000,  # test images (the rest of t10k is train + validation)
      num_validation=1_000,  # validation images
      data_dir=common.optional(str),  # IDX files (None: $ATTENTION_ZOO_DATA/mnist-t10k)
      tfds_dir=common.optional(str),  # dataset cache (None: TFDS_DATA_DIR or ~/tensorflow_datasets)
  )
  c.model_name = arg.model  # resnet_small | se_resnet_small | resnet20 | se_resnet20 | ...
  c.model = ml_collections.ConfigDict()  # the resnet constructors take only sizes from the task
  return common.finish(c, SIZES, arg.size,
                       optimizer='sgd', lr=0.05, momentum=0.9, schedule='cosine', warmup_steps=100)


def get_sweep(arg: str | None = None) -> list[dict]:
  """ResNet vs SE-ResNet, 3 seeds each."""
  del arg
  return [{'model_name': m, 'seed': s}
          for m in ('resnet_small', 'se_resnet_small') for s in common.seeds()]
