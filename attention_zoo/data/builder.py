"""The one data path: a TFDS builder writes array_record files; splits are read back by random
access.

Every task family subclasses `ArrayBuilder`: it declares fixed-shape array features and generates
numpy examples per split from `builder_config.options` (and the manual dir for real data). The
options are hashed into the BuilderConfig name, so different options get different caches.
TensorFlow is never imported: only array_record is written and read.

Features are stored as raw little-endian bytes (`Encoding.BYTES`), so a batch is decoded with one
`np.frombuffer` per key (`SplitSource.read_batch`) instead of TFDS's per-example decoder, several
times slower on small rows such as seq2seq's; `python -m experiments.bench data` prints the rate
of this path per task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging as std_logging
import os
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

Spec = Mapping[str, tuple[tuple[int, ...], Any]]  # feature name -> (shape, numpy dtype)
Example = dict[str, np.ndarray]


class _DropCustomConfigWarning(std_logging.Filter):
  """TFDS warns on every custom BuilderConfig; ours are custom by design (hashed options)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not str(record.msg).startswith('Using custom data configuration')


std_logging.getLogger('absl').addFilter(_DropCustomConfigWarning())


@dataclasses.dataclass(eq=False)
class OptionsConfig(tfds.core.BuilderConfig):
  """A BuilderConfig whose name is a hash of its generation options (JSON-serializable)."""

  options: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def from_options(cls, options: Mapping[str, Any]) -> 'OptionsConfig':
    text = json.dumps(dict(options), sort_keys=True, default=str)
    name = 'o' + hashlib.sha1(text.encode()).hexdigest()[:16]
    return cls(name=name, description=text, options=dict(options))


class ArrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base builder: subclasses implement `feature_spec` and `generate`.

  `generate(options, manual_dir)` returns ({split: iterable of examples}, metadata dict); the
  metadata (e.g. a vocabulary built from the train split) is saved with the dataset.
  """

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Pass the folder holding the raw files as the task option '
                                  'data_dir.')

  @classmethod
  def feature_spec(cls, options: Mapping[str, Any]) -> Spec:
    raise NotImplementedError

  @classmethod
  def generate(cls, options: Mapping[str, Any], manual_dir: str | None
               ) -> tuple[dict[str, Iterable[Example]], dict[str, Any]]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.feature_spec(self.builder_config.options)
    features = tfds.features.FeaturesDict({
        k: tfds.features.Tensor(shape=tuple(shape), dtype=dtype,
                                encoding=tfds.features.Encoding.BYTES)
        for k, (shape, dtype) in spec.items()})
    return tfds.core.DatasetInfo(builder=self, description=self.builder_config.description,
                                 features=features, metadata=tfds.core.MetadataDict(),
                                 disable_shuffling=True)  # keep generation order; grain shuffles

  def _split_generators(self, dl_manager):
    manual = str(dl_manager.manual_dir) if self.builder_config.options.get('data_dir') else None
    splits, metadata = self.generate(self.builder_config.options, manual)
    self.info.metadata.update(metadata)
    return {name: self._generate_examples(examples) for name, examples in splits.items()}

  def _generate_examples(self, examples: Iterable[Example]):
    for i, example in enumerate(examples):
      yield i, example


def default_tfds_dir() -> str:
  """TFDS's own default: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.environ.get('TFDS_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets')


def resolve_data_dir(data_dir: str | None, subdir: str, task: str) -> str:
  """The raw-file folder of a real dataset: `data_dir`, else $ATTENTION_ZOO_DATA/<subdir>."""
  if data_dir is None:
    root = os.environ.get('ATTENTION_ZOO_DATA')
    if not root:
      raise ValueError(f'task {task!r}: set the option data_dir (the folder with the raw files) or '
                       'the environment variable ATTENTION_ZOO_DATA '
                       f'(the folder holding {subdir}/)')
    data_dir = os.path.join(root, subdir)
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  if not os.path.isdir(data_dir):
    raise ValueError(f'task {task!r}: data_dir {data_dir} does not exist or is not a directory')
  return data_dir


def memo_json(tfds_dir: str | None, kind: str, options: Mapping[str, Any],
              compute: Callable[[], dict]) -> dict:
  """compute() once per `options`: its JSON result is kept in
  <tfds_dir>/<kind>/memo/<hash of options>.json (OptionsConfig's hash). For what a builder's
  feature spec needs before the build (e.g. the longest tokenized sentence of a corpus)."""
  tfds_dir = os.path.expanduser(tfds_dir) if tfds_dir else default_tfds_dir()
  path = os.path.join(tfds_dir, kind, 'memo', OptionsConfig.from_options(options).name + '.json')
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  result = compute()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(result, f)
  os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
  return result


class SplitSource(Sequence):
  """Random access to one split: `src[i]` -> example dict, `read_batch(idx)` -> stacked dict.

  A split of at most `cache_bytes` is decoded once, on first read, into numpy arrays in memory
  (like tf.data's cache(): random reads from array_record would be slower than the grain index
  pipeline, which is the limit once the split is in memory; `python -m experiments.bench data`
  shows the first batch, which decodes the split, and the steady rate); larger splits are read
  from disk per batch.
  `postprocess` maps a stacked batch to its final form (e.g. uint8 -> float32 in [0, 1]).
  """

  def __init__(self, tfds_source, spec: Spec,
               postprocess: Callable[[Example], Example] | None = None,
               cache_bytes: int = 2 ** 30):
    self._tfds = tfds_source
    self._raw = tfds_source.data_source  # array_record's source: raw bytes per record
    self._spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in spec.items()}
    self._post = postprocess or (lambda batch: batch)
    row_bytes = sum(int(np.prod(s)) * d.itemsize for s, d in self._spec.values())
    self._cacheable = len(self) * row_bytes <= cache_bytes
    self._cache: Example | None = None
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._tfds)

  def __getitem__(self, index: int) -> Example:
    if not -len(self) <= index < len(self):
      raise IndexError(f'index {index} out of range for a split of {len(self)} examples')
    batch = self.read_batch([index % len(self)])
    return {k: v[0] for k, v in batch.items()}

  def _decode(self, indices: Sequence[int]) -> Example:
    records = self._raw.__getitems__([int(i) for i in indices])
    parsed = [tf_example_pb2.Example.FromString(r).features.feature for r in records]
    batch = {}
    for key, (shape, dtype) in self._spec.items():
      data = b''.join(f[key].bytes_list.value[0] for f in parsed)
      batch[key] = np.frombuffer(data, dtype=dtype).reshape((len(indices),) + shape)
    return batch

  def _all(self) -> Example:
    with self._lock:
      if self._cache is None:
        chunks = [self._decode(range(i, min(i + 8192, len(self))))
                  for i in range(0, len(self), 8192)]
        self._cache = {k: np.concatenate([c[k] for c in chunks]) for k in self._spec}
    return self._cache

  def read_batch(self, indices: Sequence[int]) -> Example:
    """Reads and decodes records `indices` at once: dict of [len(indices), ...] arrays."""
    if self._cacheable:
      idx = np.asarray(indices, dtype=np.int64)
      return self._post({k: v[idx] for k, v in self._all().items()})
    return self._post(self._decode(indices))

  def tfds_example(self, index: int) -> dict:
    """The same example through TFDS's own decoder (for checking `read_batch`)."""
    return self._tfds[index]


def build(builder_cls: type[ArrayBuilder], options: Mapping[str, Any], *, tfds_dir: str | None,
          manual_dir: str | None = None,
          postprocess: Callable[[Example], Example] | None = None
          ) -> tuple[dict[str, SplitSource], dict[str, Any]]:
  """Builds (once, cached under tfds_dir) and opens a dataset: ({split: source}, metadata)."""
  options = dict(options)
  if manual_dir is not None:
    options['data_dir'] = manual_dir  # part of the hash: other files, other cache
  config = OptionsConfig.from_options(options)
  tfds_dir = os.path.expanduser(tfds_dir) if tfds_dir else default_tfds_dir()
  builder = builder_cls(data_dir=tfds_dir, config=config)
  if not builder.is_prepared():
    start = time.perf_counter()
    tfds.display_progress_bar(False)
    try:
      builder.download_and_prepare(
          file_format='array_record',
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except FileExistsError:
      # Another process finished the same (deterministic) build first: use its files.
      builder = builder_cls(data_dir=tfds_dir, config=config)
      if not builder.is_prepared():
        raise
      logging.info('%s was built concurrently by another process; using it', builder.name)
    finally:
      tfds.display_progress_bar(True)  # TFDS's default
    logging.info('built %s in %.1f s at %s', builder.name, time.perf_counter() - start,
                 builder.data_dir)
  spec = builder_cls.feature_spec(options)
  sources = builder.as_data_source()
  splits = {name: SplitSource(src, spec, postprocess) for name, src in sources.items()}
  return splits, dict(builder.info.metadata)
