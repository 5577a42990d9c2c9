"""Evaluation of a split: loss and task metrics over every batch, generation for seq2seq.

Periodic validation decodes greedily. The final evaluation (validation and test after the last
step, `final=True`) decodes with beam search when eval.beam_size > 1 (GNMT length penalty
eval.length_penalty, Wu et al. 2016, sec. 7) and, with eval.average_checkpoints = N > 1, runs on
the mean parameters of the last N checkpoints (see checkpoints.average_params; the loop does it).
`loss` is the plain cross-entropy, never the label-smoothed one.

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
  """The Evaluator of the eval-mode `graphdef` with config.eval `cfg`: for seq2seq with
  cfg.generate, generation of task.max_target_len tokens (else the target length of
  `train_batch`), greedy, and for the final evaluation beam search when cfg.beam_size > 1."""
  generate = final_generate = None
  if task.kind == 'seq2seq' and cfg.generate:
    max_len = task.max_target_len or train_batch[task.target_key].shape[1]
    generate = steps.make_generate(graphdef, max_len)
    if cfg.beam_size < 1:
      raise ValueError(f'eval.beam_size must be >= 1, got {cfg.beam_size}')
    if cfg.beam_size > 1:
      final_generate = steps.make_generate(graphdef, max_len, cfg.beam_size, cfg.length_penalty)
  return Evaluator(task, steps.make_eval_step(graphdef, task), generate, mesh, cfg,
                   final_generate=final_generate)


class Evaluator:
  """Runs eval_step (and generate) over a split; jitted functions are compiled once per shape.

  `generate` decodes for every evaluation, `final_generate` (if given, e.g. beam search) instead
  of it for the final one (`final=True`).
  """

  def __init__(self, task: Task, eval_step: Callable, generate: Callable | None, mesh, cfg, *,
               final_generate: Callable | None = None):
    self.task, self.mesh, self.cfg = task, mesh, cfg
    self.eval_step = jax.jit(eval_step)
    # Tokens replicated: every process reads all of them (the batch is sharded over processes).
    # (mesh None: an evaluator used only for its host-side helpers, e.g. _samples in tests.)
    out = {} if mesh is None else {'out_shardings': batching.replicated(mesh)}
    self.generate = jax.jit(generate, **out) if generate is not None else None
    self.final_generate = jax.jit(final_generate, **out) if final_generate is not None else None

  def __call__(self, split: str, params, rngs, other, *,
               final: bool = False) -> tuple[dict[str, float], list[dict]]:
    """-> (metrics, decoded samples) of `split`; `final`: decode with final_generate if any."""
    task, cfg = self.task, self.cfg
    generate = self.final_generate if final and self.final_generate is not None else self.generate
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
      if generate is not None:
        tokens = generate(params, rngs, other, device_batch[task.input_keys[0]])
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
