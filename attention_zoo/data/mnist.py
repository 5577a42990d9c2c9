"""MNIST from IDX files (LeCun et al. 1998), e.g. the 10,000-image test set (t10k).

IDX: big-endian header, magic 2051 (images: count, rows, cols) or 2049 (labels: count), then uint8.
The t10k files are the official TEST set only. They are split with a fixed seed: permutation
np.random.default_rng(split_seed=0) of the 10,000 -> the first num_test (2,000) are test, the rest
(8,000) train, of which the first num_validation (1,000) are validation: 7,000 / 1,000 / 2,000.
Numbers reported on it are NOT comparable with MNIST's official split.
kind 'classify': inputs float32 [28, 28, 1] in [0, 1] (stored as uint8), label [] int32.
"""

from __future__ import annotations

import os

import numpy as np

from attention_zoo.data import files, metrics
from attention_zoo.data.base import Task
from attention_zoo.data.builder import ArrayBuilder, build, resolve_data_dir
from attention_zoo.data.registry import register_task

IMAGES, LABELS = 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'


def read_idx(path: str, magic: int) -> np.ndarray:
  """uint8 array of an IDX file (.gz or raw): [count, rows, cols] for 2051, [count] for 2049."""
  if not os.path.exists(path):
    raise ValueError(f'MNIST: file {path} does not exist')
  with files.open_file(path, 'rb') as f:
    data = f.read()
  ndim = {2051: 3, 2049: 1}[magic]
  header = np.frombuffer(data[:4 + 4 * ndim], '>u4') if len(data) >= 4 + 4 * ndim else None
  if header is None or header[0] != magic:
    got = None if header is None else int(header[0])
    raise ValueError(f'MNIST: {path} has magic number {got}, expected {magic} '
                     f'({"images" if magic == 2051 else "labels"} IDX file)')
  shape = tuple(int(x) for x in header[1:])
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise ValueError(f'MNIST: {path} header says shape {shape} but holds {body.size} bytes')
  return body.reshape(shape)


def _to_float(batch):
  return dict(batch, inputs=batch['inputs'].astype(np.float32) / np.float32(255))


class AzMnistIdx(ArrayBuilder):
  """TFDS builder of MNIST from IDX files: inputs uint8 [28, 28, 1], label int32."""

  @classmethod
  def feature_spec(cls, o):
    return {'inputs': ((28, 28, 1), np.uint8), 'label': ((), np.int32)}

  @classmethod
  def generate(cls, o, manual_dir):
    images = read_idx(os.path.join(manual_dir, o['images']), 2051)
    labels = read_idx(os.path.join(manual_dir, o['labels']), 2049)
    if len(images) != len(labels) or images.shape[1:] != (28, 28):
      raise ValueError(f'MNIST: {len(images)} images of {images.shape[1:]} vs {len(labels)} labels')
    if o['num_test'] + o['num_validation'] >= len(images):
      raise ValueError(f'MNIST: num_test + num_validation must be < {len(images)}')
    order = np.random.default_rng(o['split_seed']).permutation(len(images))
    test, rest = order[:o['num_test']], order[o['num_test']:]
    parts = {'validation': rest[:o['num_validation']], 'train': rest[o['num_validation']:],
             'test': test}

    def examples(idx):
      for i in idx:
        yield {'inputs': images[i][:, :, None], 'label': np.int32(labels[i])}

    return {name: examples(idx) for name, idx in parts.items()}, {}


@register_task('mnist')
def mnist(num_test: int = 2_000, num_validation: int = 1_000, split_seed: int = 0,
          images: str = IMAGES, labels: str = LABELS, data_dir: str | None = None,
          tfds_dir: str | None = None) -> Task:
  """MNIST digits from IDX files in data_dir (default $ATTENTION_ZOO_DATA/mnist-t10k)."""
  data_dir = resolve_data_dir(data_dir, 'mnist-t10k', 'mnist')
  options = dict(num_test=num_test, num_validation=num_validation, split_seed=split_seed,
                 images=images, labels=labels)
  splits, _ = build(AzMnistIdx, options, tfds_dir=tfds_dir, manual_dir=data_dir,
                    postprocess=_to_float)
  return Task(name='mnist', kind='classify', splits=splits,
              model_dims={'num_classes': 10, 'in_channels': 1, 'image_shape': (28, 28, 1)},
              metrics_fn=metrics.classify_metrics)
