"""Evaluation of a split: loss and task metrics over every batch, greedy generation for seq2seq.

Metric names (also the keys of metrics.jsonl rows with split 'validation' / 'test'):
  loss, accuracy (token accuracy without PAD, or label accuracy), the task's metrics_fn keys
  (example-weighted means over batches), and for seq2seq with eval.generate:
  gen_<key> for each key of task.generation_metrics_fn over the whole split (e.g. gen_exact_match).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from attention_zoo.data.base import BOS, EOS, PAD, Task
from attention_zoo.train import batching


def decode(ids: Sequence[int], vocab: Sequence[str] | None) -> str:
  """Token ids -> text, stopping at EOS and skipping PAD / BOS."""
  out = []
  for i in np.asarray(ids).tolist():
    if i == EOS:
      break
    if i in (PAD, BOS):
      continue
    out.append(vocab[i] if vocab is not None and 0 <= i < len(vocab) else f'<{i}>')
  sep = '' if vocab is not None and all(len(t) <= 1 for t in out) else ' '
  return sep.join(out)


class Evaluator:
  """Runs eval_step (and generate) over a split; jitted functions are compiled once per shape."""

  def __init__(self, task: Task, eval_step: Callable, generate: Callable | None, mesh, cfg):
    self.task, self.mesh, self.cfg = task, mesh, cfg
    self.eval_step = jax.jit(eval_step)
    self.generate = jax.jit(generate) if generate is not None else None

  def __call__(self, split: str, params, rngs, other) -> tuple[dict[str, float], list[dict]]:
    """-> (metrics, decoded samples) of `split`."""
    task, cfg = self.task, self.cfg
    sums: dict[str, float] = {}
    n_examples, loss_sum, weight, correct = 0, 0.0, 0.0, 0.0
    predictions, batches = [], []
    for batch in batching.eval_batches(task.splits[split], cfg.batch_size, cfg.max_examples):
      b = len(batch[task.target_key])
      device_batch = batching.to_device(batch, self.mesh, global_size=b)
      m = jax.device_get(self.eval_step(params, rngs, other, device_batch))
      loss_sum += float(m.pop('loss_sum'))
      weight += float(m.pop('weight'))
      correct += float(m.pop('correct'))
      for k, v in m.items():
        sums[k] = sums.get(k, 0.0) + float(v) * b
      n_examples += b
      if self.generate is not None:
        source = device_batch[task.input_keys[0]]
        predictions.append(np.asarray(jax.device_get(self.generate(params, rngs, other, source))))
        batches.append(batch)
    if not n_examples:
      raise ValueError(f'task {task.name!r}: split {split!r} is empty')
    metrics = {k: v / n_examples for k, v in sums.items()}
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
    src_vocab = task.source_vocab if task.source_vocab is not None else task.vocab
    return [{'source': decode(batch[task.input_keys[0]][i], src_vocab),
             'target': decode(batch[task.target_key][i], task.vocab),
             'prediction': decode(pred[i], task.vocab)}
            for i in range(min(self.cfg.num_samples, len(pred)))]
