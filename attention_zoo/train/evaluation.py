"""Evaluation of a split: loss and task metrics over every batch, greedy generation for seq2seq.

Metric names (also the keys of metrics.jsonl rows with split 'validation' / 'test'):
  loss, accuracy (token accuracy without PAD, or label accuracy), the task's metrics_fn keys
  (means over examples of each example's value), and for seq2seq with eval.generate:
  gen_<key> for each key of task.generation_metrics_fn over the whole split (e.g. gen_exact_match).

Every batch of every split has one shape, min(eval.batch_size, split size): the last batch is
filled up with copies of its first example, masked out of every sum and of the generations. So
eval_step and generate compile once per run, not once per remainder (a 2-layer Transformer's
greedy decoder took seconds to compile on CPU, for each of validation's and test's remainders).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from attention_zoo.data.base import Task
from attention_zoo.train import batching, steps


def make_evaluator(graphdef, task: Task, mesh, cfg, train_batch: dict) -> Evaluator:
  """The Evaluator of the eval-mode `graphdef` with config.eval `cfg`: greedy generation for
  seq2seq with cfg.generate, of task.max_target_len tokens (else the target length of
  `train_batch`)."""
  generate = None
  if task.kind == 'seq2seq' and cfg.generate:
    max_len = task.max_target_len or train_batch[task.target_key].shape[1]
    generate = steps.make_generate(graphdef, max_len)
  return Evaluator(task, steps.make_eval_step(graphdef, task), generate, mesh, cfg)


class Evaluator:
  """Runs eval_step (and generate) over a split; jitted functions are compiled once per shape."""

  def __init__(self, task: Task, eval_step: Callable, generate: Callable | None, mesh, cfg):
    self.task, self.mesh, self.cfg = task, mesh, cfg
    self.eval_step = jax.jit(eval_step)
    self.generate = jax.jit(generate) if generate is not None else None

  def __call__(self, split: str, params, rngs, other) -> tuple[dict[str, float], list[dict]]:
    """-> (metrics, decoded samples) of `split`."""
    task, cfg = self.task, self.cfg
    source = task.splits[split]
    n = len(source) if cfg.max_examples <= 0 else min(len(source), cfg.max_examples)
    if not n:
      raise ValueError(f'task {task.name!r}: split {split!r} is empty')
    size = min(cfg.batch_size, n)  # the one shape of every batch
    sums: dict[str, float] = {}
    predictions, batches = [], []
    for batch in batching.eval_batches(source, cfg.batch_size, cfg.max_examples):
      b = len(batch[task.target_key])
      padded = {k: np.concatenate([v, np.repeat(v[:1], size - b, axis=0)])
                for k, v in batch.items()}
      example_mask = (np.arange(size) < b).astype(np.float32)
      device_batch = batching.to_device(dict(padded, example_mask=example_mask), self.mesh,
                                        global_size=size)
      mask = device_batch.pop('example_mask')
      m = jax.device_get(self.eval_step(params, rngs, other, device_batch, mask))
      for k, v in m.items():
        sums[k] = sums.get(k, 0.0) + float(v)
      if self.generate is not None:
        tokens = self.generate(params, rngs, other, device_batch[task.input_keys[0]])
        predictions.append(np.asarray(jax.device_get(tokens))[:b])
        batches.append(batch)
    loss_sum, weight = sums.pop('loss_sum'), sums.pop('weight')
    correct, count = sums.pop('correct'), sums.pop('count')
    metrics = {k: v / count for k, v in sums.items()}
    metrics['loss'] = loss_sum / max(weight, 1.0)
    metrics['accuracy'] = correct / max(weight, 1.0)
    samples = []
    if predictions:
      pred = np.concatenate(predictions)
      full = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
      if task.generation_metrics_fn is not None:
        for k, v in task.generation_metrics_fn(pred, full).items():
          metrics[f'gen_{k}'] = float(v)
      samples = self._samples(pred, full)
    return metrics, samples

  def _samples(self, pred: np.ndarray, batch: dict[str, Any]) -> list[dict[str, str]]:
    task = self.task
    return [{'source': task.source_vocab.decode(batch[task.input_keys[0]][i]),
             'target': task.vocab.decode(batch[task.target_key][i]),
             'prediction': task.vocab.decode(pred[i])}
            for i in range(min(self.cfg.num_samples, len(pred)))]
