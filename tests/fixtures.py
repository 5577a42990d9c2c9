"""What several test modules share (no tests here): tiny in-test tasks and models for the
training-loop tests, and the configs of configs/ at their tiny sizes.

The tiny models are added to the model registry (names starting with '_tiny') only for the
duration of a test, by the `tiny_models` fixture of conftest.py, so that registry-wide tests
never see them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import pathlib
import textwrap
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_zoo import data
from attention_zoo.data.base import Task
from attention_zoo.data.vocab import Vocab
from attention_zoo.specials import BOS, EOS, SPECIALS
from attention_zoo.models.registry import MODELS
from configs import common

VOCAB = Vocab('abcdefg')  # ids 4..10 are the letters


TINY_MODELS: dict[str, type] = {}


def _register(name):
  def add(cls):
    TINY_MODELS[name] = cls
    return cls
  return add


@contextlib.contextmanager
def tiny_models_registered() -> Iterator[None]:
  """The tiny models in the model registry inside a `with` block only."""
  with contextlib.ExitStack() as stack:
    for name, cls in TINY_MODELS.items():
      stack.enter_context(MODELS.override(name, cls))
    yield


def register_tiny_models_for_good() -> None:
  """For a subprocess that runs the loop on a tiny model."""
  for name, cls in TINY_MODELS.items():
    if name not in MODELS:
      MODELS.register(name)(cls)


@_register('_tiny_seq2seq')
class TinySeq2Seq(nnx.Module):
  """Bag-of-source-embeddings + target-embedding decoder; enough to learn reversal a little."""

  def __init__(self, src_vocab_size: int, tgt_vocab_size: int, hidden: int = 16,
               dropout: float = 0.1, *, rngs: nnx.Rngs):
    self.src = nnx.Embed(src_vocab_size, hidden, rngs=rngs)
    self.tgt = nnx.Embed(tgt_vocab_size, hidden, rngs=rngs)
    self.pos = nnx.Param(jnp.zeros((16, hidden)))
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    self.out = nnx.Linear(hidden, tgt_vocab_size, rngs=rngs)

  def __call__(self, source, target_in):  # [B, S], [B, T] -> [B, T, V]
    ctx = self.src(source).mean(axis=1, keepdims=True)  # [B, 1, D]
    h = jnp.tanh(self.tgt(target_in) + ctx + self.pos[:target_in.shape[1]])
    return self.out(self.drop(h))

  def generate(self, source, *, max_len: int, beam_size: int = 1):  # -> [B, max_len]
    tokens = jnp.full((source.shape[0], max_len + 1), BOS, jnp.int32)
    for t in range(max_len):
      logits = self(source, tokens[:, :t + 1])
      tokens = tokens.at[:, t + 1].set(jnp.argmax(logits[:, -1], -1))
    return tokens[:, 1:]


@_register('_tiny_classifier')
class TinyClassifier(nnx.Module):
  """MLP with BatchNorm (state beyond params) and dropout (an RNG stream)."""

  def __init__(self, num_features: int, num_classes: int, hidden: int = 16, *, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(num_features, hidden, rngs=rngs)
    self.bn = nnx.BatchNorm(hidden, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)
    self.l2 = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, inputs):  # [B, F] -> [B, C]
    return self.l2(self.drop(jax.nn.relu(self.bn(self.l1(inputs)))))


@_register('_tiny_memory')
class TinyMemory(nnx.Module):
  """One-hop memory network with linear start: no softmax over the memories for its first
  `linear_start_steps` train-mode calls, which it counts itself (state the loop checkpoints)."""

  def __init__(self, vocab_size: int, num_classes: int, hidden: int = 8,
               linear_start_steps: int = 0, *, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab_size, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, num_classes, rngs=rngs)
    self.linear_start_steps = linear_start_steps
    self.train_calls = nnx.Variable(jnp.zeros((), jnp.int32))
    self.deterministic = False  # set by model.train() / model.eval()

  def __call__(self, story, query):  # [B, M, W], [B, W] -> [B, C]
    memory = self.embed(story).sum(axis=2)  # [B, M, F]
    q = self.embed(query).sum(axis=1)  # [B, F]
    scores = jnp.einsum('bmf,bf->bm', memory, q)
    linear = self.train_calls[...] < self.linear_start_steps
    weights = jnp.where(linear, scores, jax.nn.softmax(scores, axis=-1))
    if not self.deterministic:
      self.train_calls[...] += 1
    return self.out(jnp.einsum('bm,bmf->bf', weights, memory) + q)


def recall_qa_task(n=128, memory=4, width=2, vocab=12, seed=0) -> Task:
  """Each memory row is (key, value); the query asks for one key's value."""
  rng = np.random.default_rng(seed)

  def split(count):
    out = []
    for _ in range(count):
      keys = rng.choice(np.arange(3, 7), memory, replace=False)
      values = rng.integers(7, vocab, memory)
      q = int(rng.integers(memory))
      out.append({'story': np.stack([keys, values], 1).astype(np.int32),
                  'query': np.array([keys[q], 0], np.int32), 'label': np.int32(values[q])})
    return out

  return Task(name='tiny_recall', kind='qa',
              splits={'train': split(n), 'validation': split(32), 'test': split(32)},
              model_dims={'vocab_size': vocab, 'num_classes': vocab})


def reverse_task(n_train=256, n_val=40, n_test=50, length=5, seed=0) -> Task:
  """Reverse a string of letters; seq2seq with exact-match generation metric."""
  rng = np.random.default_rng(seed)

  def split(n):
    out = []
    for _ in range(n):
      x = rng.integers(len(SPECIALS), len(VOCAB), length).astype(np.int32)
      y = x[::-1]
      out.append({'source': x,
                  'target_in': np.concatenate([[BOS], y]).astype(np.int32),
                  'target_out': np.concatenate([y, [EOS]]).astype(np.int32)})
    return out

  def gen_metrics(pred, batch):
    target = batch['target_out']
    return {'exact_match': float(np.mean(np.all(pred == target, axis=1)))}

  def metrics_fn(logits, batch):
    return {'seq_accuracy': jnp.mean(jnp.all(jnp.argmax(logits, -1) == batch['target_out'], -1))}

  return Task(name='tiny_reverse', kind='seq2seq',
              splits={'train': split(n_train), 'validation': split(n_val), 'test': split(n_test)},
              model_dims={'src_vocab_size': len(VOCAB), 'tgt_vocab_size': len(VOCAB)},
              vocab=VOCAB, max_target_len=length + 1, metrics_fn=metrics_fn,
              generation_metrics_fn=gen_metrics)


def blobs_task(n_train=256, n_val=64, n_test=64, nan_inputs=False, seed=0) -> Task:
  """Label = argmax of the first 3 of 4 features; optionally every input NaN."""
  rng = np.random.default_rng(seed)

  def split(n):
    x = rng.normal(size=(n, 4)).astype(np.float32)
    if nan_inputs:
      x[:] = np.nan
    return [{'inputs': x[i], 'label': np.int32(np.argmax(x[i, :3]))} for i in range(n)]

  return Task(name='tiny_blobs', kind='classify',
              splits={'train': split(n_train), 'validation': split(n_val), 'test': split(n_test)},
              model_dims={'num_features': 4, 'num_classes': 3})


def tiny_config(model_name='_tiny_seq2seq', steps=6, model=None, **train):
  """A locked config of a tiny model: config.model = `model` (default {'hidden': 16}), config.train
  updated with `train`."""
  c = common.base_config()
  c.task.name = 'unused'
  c.model_name = model_name
  c.model = model or {'hidden': 16}
  c.train.update(dict(steps=steps, batch_size=16, lr=3e-3, log_every=2, eval_every=3,
                      checkpoint_every=3, keep_checkpoints=5, clip_norm=1.0), **train)
  c.eval.batch_size = 32
  c.lock()
  return c


# ---- the configs of configs/ ---------------------------------------------------------------------
CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob('*.py') if p.stem not in ('__init__', 'common'))
# real-data task -> its folder under the data_dir fixture
DATA_SUBDIR = {'mnist': 'mnist-t10k', 'tiny_shakespeare': 'tinyshakespeare', 'babi': 'babi/en',
               'multi30k': 'multi30k'}


def load_config(name: str):
  """The module configs/<name>.py."""
  return importlib.import_module(f'configs.{name}')


def tiny(name, tfds_dir, request, arg='size=tiny'):
  """The config at `arg` (its tiny size), datasets cached under tfds_dir; real data from the
  data_dir fixture (which skips the test when the data is absent)."""
  c = load_config(name).get_config(arg)
  c.task.tfds_dir = tfds_dir
  if 'data_dir' in c.task:
    root = pathlib.Path(request.getfixturevalue('data_dir'))
    c.task.data_dir = str(root / DATA_SUBDIR[c.task.name])
  return c


def sweep_config_file(path: pathlib.Path, tfds_dir: str, entries: list[dict], *,
                      task: dict | None = None, model: dict | None = None, **train) -> pathlib.Path:
  """Writes a sweep config file over the tiny demo seq2seq (task, model and train fields
  updated, no validation during training) whose get_sweep returns `entries`."""
  path.write_text(textwrap.dedent(f'''
      from configs import dates_demo
      def get_config(arg=None):
        c = dates_demo.get_config('family=seq2seq,score=dot,size=tiny')
        c.task.update(tfds_dir={tfds_dir!r}, **{task or {}!r})
        c.model.update(**{model or {}!r})
        c.train.update(eval_every=0, **{train!r})
        return c
      def get_sweep(arg=None):
        return {entries!r}
  '''))
  return path


def built_task(task_config) -> Task:
  """data.get_task(task_config), built once per process for equal task configs (the config and
  lowering tests build the same tiny tasks for many entries)."""
  return _built_task(json.dumps(task_config.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=None)
def _built_task(task_json: str) -> Task:
  return data.get_task(json.loads(task_json))
