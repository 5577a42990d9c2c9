"""Measures of attention: one function per measure, numpy in, numbers out.

  alignment against gold   argmax_in_gold, gold_mass, aer
  per head and layer       entropy, distance
  across layers            rollout
  by ablation              head_importance (with batch_metric: the metric it reads)
  squeeze-and-excitation   se_selectivity

Shapes: B batch, N heads, Q query positions (output steps), K key positions (source positions,
memory slots), L positions of one sequence (self-attention), C channels. Weights are
[B, N, Q, K], each row a distribution over keys; a seq2seq alignment [B, Q, K] is one head
(`as_heads`). A memory network's hops [B, hops, M] are read as N = hops heads of one query each:
weights[:, :, None, :].

A query whose every key is masked has all-zero weights (the zoo's convention, never NaN); every
measure leaves such rows out. Gold alignments come from Task.gold_alignment (data.base.Alignment):
per example, per output step, a set of key positions; an empty set (a step without gold) and a
step past the weights' Q are left out.

  from attention_zoo.analysis import measures
  measures.entropy(w)                                   # [N] nats
  measures.argmax_in_gold(w, [a.possible for a in task.gold_alignment('validation', range(B))])
"""

from __future__ import annotations

from typing import AbstractSet, Any, Callable, Mapping, Sequence

import numpy as np
import optax
from flax import nnx

from attention_zoo.attention.capture import captured
from attention_zoo.attention.layers import MultiHeadAttention
from attention_zoo.specials import PAD

Gold = Sequence[Sequence[AbstractSet[int]]]  # per example, per output step: key positions
# The metric head_importance reads from task.metrics_fn, by preference (else minus the loss).
METRICS = ('token_accuracy', 'accuracy', 'sequence_accuracy')


def as_heads(weights: Any) -> np.ndarray:
  """[B, Q, K] (one head) or [B, N, Q, K] -> [B, N, Q, K] float64."""
  w = np.asarray(weights, np.float64)
  if w.ndim == 3:
    return w[:, None]
  if w.ndim != 4:
    raise ValueError(f'attention weights must be [B, Q, K] or [B, N, Q, K], got shape {w.shape}')
  return w


def _rows(w: np.ndarray, query_mask: Any | None) -> np.ndarray:
  """[B, N, Q] bool: the rows to measure (query_mask [B, Q], and not all-zero weights)."""
  rows = w.sum(-1) > 0  # [B, N, Q]
  if query_mask is not None:
    rows &= np.asarray(query_mask, bool)[:, None, :]
  return rows


def _mean_over_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """values, rows [B, N, Q] -> [N] mean of values over the rows kept (NaN where none is)."""
  count = rows.sum((0, 2))  # [N]
  total = np.where(rows, values, 0.0).sum((0, 2))  # [N]
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _gold_steps(w: np.ndarray, gold: Gold):
  """Yields (b, q, key positions) of every step with gold that the weights cover."""
  if len(gold) != w.shape[0]:
    raise ValueError(f'gold has {len(gold)} examples, the weights {w.shape[0]}')
  for b, steps in enumerate(gold):
    for q, keys in enumerate(steps[:w.shape[2]]):
      if keys:
        yield b, q, keys


def argmax_in_gold(weights: Any, gold: Gold) -> np.ndarray:
  """Alignment accuracy: the share of output steps whose most-attended key lies in the gold.

    acc_n = (1 / |G|) Σ_{(b, q) ∈ G} [argmax_k w[b, n, q, k] ∈ gold[b][q]]
  over the steps G with gold. For a memory network (hops as heads, one step: the question), the
  share of questions whose most-attended memory holds a supporting fact, per hop (the reading of
  Sukhbaatar et al. 2015, fig. 2; for seq2seq, the alignments of Bahdanau et al. 2015, fig. 3).

  weights [B, N, Q, K] or [B, Q, K]; gold: per example, per step, key positions -> [N]
  (NaN when no step has gold). Ties go to the first key.
  """
  w = as_heads(weights)
  best = w.argmax(-1)  # [B, N, Q]
  hits = [[int(best[b, n, q]) in keys for n in range(w.shape[1])]
          for b, q, keys in _gold_steps(w, gold)]
  return np.mean(hits, axis=0) if hits else np.full(w.shape[1], np.nan)


def gold_mass(weights: Any, gold: Gold) -> np.ndarray:
  """The attention mass on the gold: mean over the steps with gold of Σ_{k ∈ gold} w[b, n, q, k].

  The soft counterpart of argmax_in_gold (1 when every step puts all its weight on its gold).
  weights [B, N, Q, K] or [B, Q, K]; gold as in argmax_in_gold -> [N] (NaN without gold).
  """
  w = as_heads(weights)
  mass = [w[b, :, q][:, sorted(keys)].sum(-1) for b, q, keys in _gold_steps(w, gold)]  # [N] each
  return np.mean(mass, axis=0) if mass else np.full(w.shape[1], np.nan)


def aer(weights: Any, sure: Gold, possible: Gold) -> np.ndarray:
  """Alignment error rate of the argmax alignment (Och & Ney 2003, "A systematic comparison of
  various statistical alignment models").

    AER = 1 - (|A ∩ S| + |A ∩ P|) / (|A| + |S|)
  with S ⊆ P the sure and possible gold links and A the hard alignment read from the weights:
  one link (q, argmax_k w[q, k]) per step that has possible links, counted over every example
  (the corpus-level rate). 0: every argmax is a possible link and every sure link is hit. Since
  A holds one link per step, a step with two sure links (addition: the two operand digits of its
  place) cannot reach 0: the best it allows is 1/3 when every step has two.

  weights [B, N, Q, K] or [B, Q, K]; sure, possible: per example, per step, key positions
  (data.base.Alignment.sure / .possible) -> [N] (NaN when no step has possible links).
  """
  w = as_heads(weights)
  best = w.argmax(-1)  # [B, N, Q]
  num = np.zeros(w.shape[1])  # [N] |A ∩ S| + |A ∩ P|
  links = np.zeros(w.shape[1])  # [N] |A| + |S|
  for b, q, keys in _gold_steps(w, possible):
    s = sure[b][q]
    a = best[b, :, q]  # [N]
    num += np.array([(int(k) in s) + (int(k) in keys) for k in a])
    links += 1 + len(s)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(links > 0, 1.0 - num / np.maximum(links, 1), np.nan)


def entropy(weights: Any, query_mask: Any | None = None) -> np.ndarray:
  """Mean entropy of the attention distributions, per head, in nats.

    H_n = mean_{b, q} -Σ_k w[b, n, q, k] log w[b, n, q, k]      (0 log 0 = 0)
  over the queries of query_mask [B, Q] (default: all) with weights. Uniform attention over K
  keys gives log K, one-hot attention 0. Entropy as a summary of how broadly a head looks:
  Clark et al. (2019), "What does BERT look at? An analysis of BERT's attention".

  weights [B, N, Q, K] or [B, Q, K] -> [N].
  """
  w = as_heads(weights)
  with np.errstate(divide='ignore', invalid='ignore'):
    h = -np.where(w > 0, w * np.log(w), 0.0).sum(-1)  # [B, N, Q]
  return _mean_over_rows(h, _rows(w, query_mask))


def distance(weights: Any, query_mask: Any | None = None) -> np.ndarray:
  """Mean distance attended in self-attention, per head, in positions.

    D_n = mean_{b, q} Σ_k w[b, n, q, k] |q - k|
  over the queries of query_mask [B, Q] (default: all) with weights: how far a head looks, on
  average (the mean attention distance of Vig & Belinkov 2019, "Analyzing the structure of
  attention in a Transformer language model"). Queries and keys must index one sequence.

  weights [B, N, L, L] or [B, L, L] -> [N].
  """
  w = as_heads(weights)
  if w.shape[2] != w.shape[3]:
    raise ValueError(f'distance is for self-attention [B, N, L, L], got shape {w.shape}')
  pos = np.arange(w.shape[2])
  gap = np.abs(pos[:, None] - pos[None, :])  # [L, L]
  return _mean_over_rows((w * gap).sum(-1), _rows(w, query_mask))


def rollout(layers: Sequence[Any], residual: bool = True) -> np.ndarray:
  """Attention rollout (Abnar & Zuidema 2020, "Quantifying attention flow in Transformers"):
  how much each input position flows into each position after a stack of self-attention layers.

    Â_l = normalize_rows(0.5 · mean_n A_l + 0.5 · I)     (residual=True: the skip connection)
    R = Â_L · ... · Â_2 · Â_1
  layers: the layers' weights, first layer first, each [B, N, L, L] (or [B, L, L]) -> R
  [B, L, L], rows = the last layer's positions, columns = the input positions. With
  residual=False, Â_l = mean_n A_l. Identity attention rolls out to the identity.
  """
  if not layers:
    raise ValueError('rollout needs at least one layer')
  out = None
  for a in layers:
    a = as_heads(a).mean(1)  # [B, L, L]
    if residual:
      a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
      a = a / np.maximum(a.sum(-1, keepdims=True), 1e-12)
    out = a if out is None else np.einsum('bij,bjk->bik', a, out)
  return out


def head_importance(model: nnx.Module, evaluate: Callable[[nnx.Module], float]
                    ) -> tuple[float, dict[str, np.ndarray]]:
  """Head importance by ablation: the metric drop when one head is masked, every other head kept
  (Michel, Levy & Neubig 2019, "Are sixteen heads really better than one?", ablating one head).

    drop_{l, n} = metric(model) - metric(model with head n of layer l masked)
  A head is masked by its MultiHeadAttention's head_mask (its output zeroed before the output
  projection); the layers' masks are restored afterwards. Positive: the head helps.

  model: any NNX model (its MultiHeadAttention layers are found by path); evaluate: model ->
  a number, higher is better (e.g. batch_metric(task, batch)) -> (metric with every head,
  {'encoder/layers/0/self_attn': drops [N], ...}).
  """
  base = float(evaluate(model))
  drops = {}
  for path, layer in nnx.iter_modules(model):
    if not isinstance(layer, MultiHeadAttention):
      continue
    kept = layer.head_mask
    drop = []
    try:
      for n in range(layer.num_heads):
        mask = [1.0] * layer.num_heads if kept is None else list(kept)
        mask[n] = 0.0
        layer.head_mask = tuple(mask)
        drop.append(base - float(evaluate(model)))
    finally:
      layer.head_mask = kept
    drops['/'.join(str(p) for p in path)] = np.asarray(drop)
  return base, drops


def batch_metric(task, batch: Mapping[str, Any], metric: str | None = None
                 ) -> Callable[[nnx.Module], float]:
  """model -> the task's metric on `batch` (teacher-forced for seq2seq), for head_importance.

  metric: a key of task.metrics_fn's output (default: the first of METRICS it has), or 'loss'
  for minus the mean cross-entropy (over the non-PAD targets of a sequence task; over every
  label of a 'classify' / 'qa' task). After the first call, `evaluate.metric` names the metric.
  """
  target = np.asarray(batch[task.target_key])

  def evaluate(model: nnx.Module) -> float:
    logits = captured(model, *task.model_inputs(batch))[0]  # sown weights not kept in model
    found = task.metrics_fn(logits, batch) if task.metrics_fn else {}
    name = metric or next((m for m in METRICS if m in found), 'loss')
    evaluate.metric = name
    if name != 'loss':
      return float(found[name])
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, target))
    keep = np.ones_like(target, bool) if task.kind in ('classify', 'qa') else target != PAD
    return -float((ce * keep).sum() / max(int(keep.sum()), 1))

  evaluate.metric = metric
  return evaluate


def se_selectivity(se_weights: Any, labels: Any) -> float:
  """Class selectivity of one SE block's excitations.

    μ_{y, c} = mean of s_c over the examples of class y            (class-mean excitation)
    sel = mean_c Var_y(μ_{y, c}) / mean_y(μ_{y, c})                  (index of dispersion)
  Var over the classes present (population variance). 0: every class gets the same mean
  excitation (class-agnostic); larger: channels are scaled differently per class. A measure of
  ours for the claim of Hu et al. (2018, sec. 6.4, fig. 6) that excitations are class-agnostic
  in early layers and class-specific with depth (they show it by plotting μ, without a number).

  se_weights [B, C] (sigmoid outputs, > 0), labels [B] -> float.
  """
  s = np.asarray(se_weights, np.float64)
  y = np.asarray(labels)
  mu = np.stack([s[y == c].mean(0) for c in np.unique(y)])  # [classes, C]
  mean = mu.mean(0)  # [C]
  keep = mean > 0
  return float(np.mean(mu.var(0)[keep] / mean[keep])) if keep.any() else float('nan')
