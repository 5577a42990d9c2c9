r"""The demo's date Transformer trained in float32 and in bfloat16 (mixed precision).

  python -m experiments.main --workdir=runs/dates_bf16 \
    --config=configs/dates_precision.py:dtype=bfloat16

The model, data and recipe are the demo's (configs/dates_demo.py, family=transformer,
score=scaled_dot); only `model.dtype` changes. Under dtype=bfloat16 the parameters, optimizer
state and loss stay float32, and so do the softmax and layer-norm statistics
(attention_zoo/models/precision.py). The sweep: both dtypes, `seeds` seeds each (default 3).
Args: dtype = float32 | bfloat16, size = demo | tiny.
"""

import ml_collections

from attention_zoo.models import precision
from configs import common, dates_demo


def config(dtype: str = precision.DEFAULT, size: str = 'demo') -> ml_collections.ConfigDict:
  c = dates_demo.config(family='transformer', score='scaled_dot', size=size)
  common.pick('dtype', dtype, precision.DTYPES)  # an unknown name: the valid ones
  c.model.dtype = dtype  # the computation dtype; parameters stay float32
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.call_with_arg(config, arg)


def get_sweep(arg: str | None = None) -> list[dict]:
  """Each dtype of models.precision.DTYPES at `size`, `seeds` seeds each (default demo, 3)."""
  arg = common.parse_arg(arg, size='demo', seeds=3)
  return [{'config_arg': f'dtype={d},size={arg.size}', 'seed': s}
          for d in precision.DTYPES for s in common.seeds(arg.seeds)]
