"""Every attention measure of one run (attention_zoo.analysis.measures), written beside its
heatmaps: <workdir>/analysis[_step<N>]/measures.json, and the explorable view attention.html.

  from attention_zoo.analysis import measure_run
  found = measure_run.measure_workdir('runs/dates')      # the measures as a dict (nothing written)
  paths = measure_run.write_measures('runs/dates')       # {'measures': .json, 'view': .html}
  path = measure_run.write_split('runs/dates', 'test')   # analysis/measures_test.json
  found = measure_run.measure(model, task, batch, gold)  # a loaded model, any batch

measures.json:
  {"run", "step", "split", "examples": B, "task", "kind",
   "attention": {module path: {"role": "self" | "source-target" | "memory", "axis": "head" |
       "hop", "shape", "entropy": [N] nats, "uniform_entropy": mean log(#keys), "distance": [N]
       (self-attention only)}},
   "alignment": {"gold": null, "note"}  (a task without gold alignment), or
       {"gold": "...", "steps", "sure_links", "by_attention": {module path: {"argmax_in_gold",
       "gold_mass", "aer": [N] (null where the gold has no sure links), "chance_in_gold": the
       argmax_in_gold of uniform attention over the real keys, "heads_mean": {the same three
       for the mean of the heads} (N > 1)}}},
   "head_importance": {"metric", "base", "drop": {module path: [N]}} (multi-head layers), or
       {"note"},
   "rollout": {stack: {"layers": [module paths], "examples": [{"tokens", "matrix"}]}},
   "se_selectivity": {"measure", "blocks": {module path: value}} (SE models with labels)}
  Lists per head follow the heads' order; NaN is written as null. Which attention arrays are
  self-attention and which read a source is read from the module path ('self' in a layer's
  name, 'encoder' for an encoder-decoder's source side), and the task kind.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Mapping

import numpy as np

from attention_zoo.analysis import load, maps, measures, view
from attention_zoo.data import pipeline
from attention_zoo.specials import PAD
from attention_zoo.train import workdir as wd

NUM_EXAMPLES = 256  # examples of the split each run is measured on (the first ones, in order)
MEASURES, VIEW = 'measures.json', 'attention.html'


def module_path(captured_path: str) -> str:
  """'decoder/layers/0/cross_attn/attention_weights' -> 'decoder/layers/0/cross_attn'; what the
  model sows itself (a seq2seq alignment) keeps its name, 'attention_weights'."""
  return captured_path.rsplit('/', 1)[0] if '/' in captured_path else captured_path


def role(task, path: str, weights: np.ndarray) -> str | None:
  """What a captured array is: 'self' (queries and keys index one sequence), 'source-target'
  (the target reads the source), 'memory' (a memory network's hops [B, hops, M]), or None (SE
  channel weights)."""
  if path.endswith('se_weights') or weights.ndim < 3:
    return None
  if task.kind == 'qa':
    return 'memory'
  if task.kind != 'seq2seq':
    return 'self'
  layer = module_path(path).rsplit('/', 1)[-1]
  if weights.ndim == 4 and ('self' in layer or path.startswith('encoder')):
    return 'self'
  return 'source-target'


def _real(ids: np.ndarray) -> np.ndarray:
  return np.asarray(ids) != PAD


def masks(task, batch: Mapping[str, np.ndarray], path: str, weights: np.ndarray,
          kind: str) -> tuple[np.ndarray, np.ndarray]:
  """(query mask [B, Q], key mask [B, K]) of the real positions of a captured array: from the
  batch's tokens where their lengths match (a [CLS] position in front is real too), else the
  keys that take weight and the queries that give it."""
  w = measures.as_heads(weights if kind != 'memory' else weights[:, :, None, :])
  b, _, q_len, k_len = w.shape
  seqs = []
  if task.kind == 'seq2seq':
    src, tgt = _real(batch['source']), _real(batch['target_out'])
    seqs = [(src, src)] if path.startswith('encoder') else []
    seqs += [(tgt, tgt if kind == 'self' else src)]
  elif task.kind == 'qa':
    seqs = [(np.ones((b, q_len), bool), np.any(_real(batch['story']), -1))]
  elif np.issubdtype(np.asarray(batch['inputs']).dtype, np.integer):
    real = _real(batch['inputs'])
    seqs = [(real, real), (np.pad(real, ((0, 0), (1, 0)), constant_values=True),) * 2]
  for query, key in seqs:
    if query.shape == (b, q_len) and key.shape == (b, k_len):
      return query, key
  keys = (w > 0).any((1, 2))  # [B, K]
  return (keys if q_len == k_len else (w.sum(-1) > 0).any(1)), keys


def _list(x) -> Any:
  """JSON-ready: arrays to lists, NaN to None."""
  if isinstance(x, dict):
    return {k: _list(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_list(v) for v in x]
  if isinstance(x, np.ndarray):
    return _list(x.tolist())
  if isinstance(x, (float, np.floating)):
    return None if math.isnan(float(x)) else round(float(x), 6)
  if isinstance(x, np.integer):
    return int(x)
  return x


def _alignment(weights: np.ndarray, gold, has_sure: bool) -> dict[str, Any]:
  sure = [a.sure for a in gold]
  possible = [a.possible for a in gold]
  out = {'argmax_in_gold': measures.argmax_in_gold(weights, possible),
         'gold_mass': measures.gold_mass(weights, possible),
         'aer': measures.aer(weights, sure, possible) if has_sure else None}
  return out


def chance_in_gold(key_mask: np.ndarray, q_len: int, gold) -> float:
  """The alignment accuracy (argmax_in_gold) that attention with no information reaches: a key
  drawn uniformly from the real keys of the example lies in the gold with probability
  |gold[b][q]| / K_b, K_b = the real keys of example b; averaged over the steps with gold, as
  argmax_in_gold is. Computed as the gold_mass of uniform attention over key_mask [B, K]."""
  real = np.asarray(key_mask, np.float64)  # [B, K]
  uniform = real / np.maximum(real.sum(-1, keepdims=True), 1)  # [B, K]
  w = np.broadcast_to(uniform[:, None, None, :], (real.shape[0], 1, q_len, real.shape[1]))
  return float(measures.gold_mass(w, [a.possible for a in gold])[0])


def measure(model, task, batch: Mapping[str, np.ndarray], gold=None, *, examples: int = 2,
            captured: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
  """The measures of one batch (see the module docstring for the layout; no run fields).

  model: built with capture_weights=True (load.load_run(..., capture_weights=True)); gold:
  task.gold_alignment(split, indices of the batch's rows) or None; examples: how many examples'
  rollouts to keep; captured: maps.capture(model, task, batch), when already computed.
  """
  batch = {k: np.asarray(v) for k, v in batch.items()}
  captured = maps.capture(model, task, batch) if captured is None else captured
  out: dict[str, Any] = {'attention': {}}
  stacks: dict[str, list[tuple[int, str]]] = {}
  by_attention = {}
  for path, w in captured.items():
    kind = role(task, path, w)
    if kind is None:
      continue
    name = module_path(path)
    heads = w[:, :, None, :] if kind == 'memory' else measures.as_heads(w)  # [B, N, Q, K]
    query, key = masks(task, batch, path, w, kind)
    rows = query[:, None, :] & (heads.sum(-1) > 0)  # [B, N, Q]
    log_k = np.log(np.maximum(key.sum(-1), 1))[:, None, None]  # [B, 1, 1]
    entry = {'role': kind, 'axis': 'hop' if kind == 'memory' else 'head', 'shape': list(w.shape),
             'entropy': measures.entropy(heads, query),
             'uniform_entropy': float(np.broadcast_to(log_k, rows.shape)[rows].mean())
             if rows.any() else float('nan')}
    if kind == 'self':
      entry['distance'] = measures.distance(heads, query)
      stack, index = view.group_key(path)
      if stack != name:  # a layer of a stack ('.../layers/<index>/...')
        stacks.setdefault(stack, []).append((index, path))
    out['attention'][name] = entry
    if gold is not None and kind != 'self':
      has_sure = any(s for a in gold for s in a.sure)
      result = _alignment(heads, gold, has_sure)
      result['chance_in_gold'] = chance_in_gold(key, heads.shape[2], gold)
      if heads.shape[1] > 1 and kind != 'memory':
        result['heads_mean'] = _alignment(heads.mean(1, keepdims=True), gold, has_sure)
      by_attention[name] = result
  out['alignment'] = _alignment_summary(task, gold, by_attention)
  out['head_importance'] = _head_importance(model, task, batch)
  out['rollout'] = _rollouts(task, batch, captured, stacks, examples)
  se = {module_path(p): w for p, w in captured.items() if p.endswith('se_weights')}
  if se and 'label' in batch:
    out['se_selectivity'] = {
        'measure': 'mean over channels of Var_y(mu_yc) / mean_y(mu_yc), mu_yc the mean '
                   'excitation of channel c over the examples of class y (measures.se_selectivity)',
        'blocks': {p: measures.se_selectivity(w, batch['label']) for p, w in se.items()}}
  return out


def _alignment_summary(task, gold, by_attention) -> dict[str, Any]:
  if gold is None:
    return {'gold': None, 'note': f'task {task.name!r} has no gold alignment (Task.gold_alignment '
                                  'is None)'}
  if not by_attention:
    return {'gold': None, 'note': 'the model has no attention over the source or memory'}
  steps = sum(1 for a in gold for p in a.possible if p)
  return {'gold': 'possible links = the gold span of each output step; sure links = its '
                  'one-to-one source (data.base.Alignment)',
          'steps': steps, 'sure_links': sum(len(s) for a in gold for s in a.sure),
          'by_attention': by_attention}


def _head_importance(model, task, batch) -> dict[str, Any]:
  evaluate = measures.batch_metric(task, batch)
  base, drops = measures.head_importance(model, evaluate)
  if not drops:
    return {'note': 'the model has no multi-head attention layer'}
  return {'metric': evaluate.metric, 'base': base, 'drop': drops}


def _rollouts(task, batch, captured, stacks, examples: int) -> dict[str, Any]:
  out = {}
  for stack, layers in stacks.items():
    paths = [p for _, p in sorted(layers)]
    matrix = measures.rollout([captured[p] for p in paths])  # [B, L, L]
    query, _ = masks(task, batch, paths[0], captured[paths[0]], 'self')
    rows = []
    for i in range(min(examples, matrix.shape[0])):
      real = np.flatnonzero(query[i])
      tokens = maps.axis_labels(task, batch, i).get(matrix.shape[-1], ('', None))[1]
      rows.append({'tokens': tokens[:len(real)] if tokens else [str(r) for r in real],
                   'matrix': matrix[i][np.ix_(real, real)]})
    out[stack] = {'layers': [module_path(p) for p in paths], 'examples': rows}
  return out


def analysis_dir(workdir: str | pathlib.Path, step: int | None = None) -> pathlib.Path:
  """Where a run's analysis goes: <workdir>/analysis, or analysis_step<N> for a given step."""
  return pathlib.Path(workdir) / (f'{wd.ANALYSIS}_step{step}' if step is not None
                                  else wd.ANALYSIS)


def _load(workdir, step, split: str, num_examples: int):
  config, model, task = load.load_run(workdir, step, capture_weights=True)
  indices = np.arange(min(num_examples, len(task.splits[split])))
  batch = {k: np.asarray(v) for k, v in
           pipeline.read_rows(task.splits[split], indices).items()}
  return config, model, task, batch, indices


def measure_workdir(workdir: str | pathlib.Path, step: int | None = None,
                    split: str = 'validation', examples: int = 2,
                    num_examples: int = NUM_EXAMPLES) -> dict[str, Any]:
  """The measures of a run on the first `num_examples` examples of `split` (as measures.json
  holds them, NaN as None; nothing is written)."""
  _, model, task, batch, indices = _load(workdir, step, split, num_examples)
  found = measure(model, task, batch, task.gold_alignment(split, indices), examples=examples)
  return _list(_header(workdir, step, split, task, len(indices)) | found)


def _header(workdir, step, split, task, n) -> dict[str, Any]:
  return {'run': str(workdir), 'step': step, 'split': split, 'examples': n, 'task': task.name,
          'kind': task.kind}


def split_file(split: str) -> str:
  """The file name of one split's measures that write_split writes: 'measures_<split>.json'."""
  return f'measures_{split}.json'


def write_split(workdir: str | pathlib.Path, split: str, num_examples: int = NUM_EXAMPLES,
                step: int | None = None) -> pathlib.Path:
  """The measures of a run on the first `num_examples` examples of `split` (measure_workdir, no
  rollout examples, no view) written to analysis_dir(workdir, step)/measures_<split>.json, the
  file a reproduction card commits per run and split -> its path."""
  found = measure_workdir(workdir, step, split, examples=0, num_examples=num_examples)
  out = analysis_dir(workdir, step) / split_file(split)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(found, indent=1) + '\n')
  return out


def write_measures(workdir: str | pathlib.Path, step: int | None = None, examples: int = 2,
                   split: str = 'validation', num_examples: int = NUM_EXAMPLES
                   ) -> dict[str, pathlib.Path]:
  """Measures a run (measure_workdir) and writes measures.json and the attention view
  attention.html (view.write_view: the first `examples` examples) into analysis_dir(workdir,
  step) -> {'measures': path, 'view': path}."""
  _, model, task, batch, indices = _load(workdir, step, split, num_examples)
  captured = maps.capture(model, task, batch)
  found = measure(model, task, batch, task.gold_alignment(split, indices), examples=examples,
                  captured=captured)
  out_dir = analysis_dir(workdir, step)
  out_dir.mkdir(parents=True, exist_ok=True)
  result = _list(_header(workdir, step, split, task, len(indices)) | found)
  (out_dir / MEASURES).write_text(json.dumps(result, indent=1) + '\n')
  title = f'{pathlib.Path(workdir).name}: {task.name}, {split}'
  view.write_view(out_dir / VIEW, view.view_data(task, batch, captured, examples,
                                                 rollouts=result['rollout']), title)
  return {'measures': out_dir / MEASURES, 'view': out_dir / VIEW}

