"""Look inside a trained model: its sown attention weights and SE channel weights, as heatmaps.

Every model sows what it attends with (`capture_weights`), under one of these layouts:
  [B, T, S]       seq2seq alignment: target step x source position
  [B, N, Q, K]    a multi-head attention layer (self or source-target), per head
  [B, hops, M]    memory network: hop x memory slot
  [B, C]          SE channel weights ('se_weights'), averaged per class here
`capture(model, task, batch)` collects them by module path (build the model with
capture_weights=True, e.g. load_run(workdir, capture_weights=True)); `plot_examples` draws them
with the tokens on the axes, cropped to the real (unpadded) lengths.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np

from attention_zoo.attention.capture import captured
from attention_zoo.specials import PAD

def capture(model, task, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Runs the model (eval mode) on `batch` -> {'path/to/module/name': captured array}."""
  model.eval()
  _, found = captured(model, *task.model_inputs(batch))
  return {path: np.asarray(jax.device_get(value)) for path, value in found.items()}


def _labels(vocab, ids: np.ndarray, stop_at_eos: bool = False) -> list[str]:
  """vocab.labels(ids): one string per token, PAD dropped; the ids themselves without a vocab."""
  if vocab is None:
    return [str(i) for i in np.asarray(ids).tolist() if i != PAD]
  return vocab.labels(ids, stop_at_eos=stop_at_eos)


def axis_labels(task, batch: dict[str, np.ndarray], i: int) -> dict[int, tuple[str, list[str]]]:
  """{sequence length: (name, tokens)} of example i, so an axis of that length gets those labels."""
  seqs = {}
  if task.kind == 'seq2seq':
    seqs['source'] = (batch['source'][i], _labels(task.source_vocab, batch['source'][i]))
    seqs['target'] = (batch['target_out'][i], _labels(task.vocab, batch['target_out'][i], True))
  elif task.kind in ('lm', 'classify') and np.issubdtype(batch['inputs'].dtype, np.integer):
    seqs['inputs'] = (batch['inputs'][i], _labels(task.vocab, batch['inputs'][i]))
  elif task.kind == 'qa':
    story = [' '.join(_labels(task.vocab, s)) for s in batch['story'][i]]
    seqs['story'] = (batch['story'][i][:, 0], [s or '(empty)' for s in story])
  return {len(ids): (name, labels) for name, (ids, labels) in seqs.items()}


def matrices(path: str, w: np.ndarray, i: int, labels: dict[int, tuple[str, list[str]]]):
  """The 2-D maps of example i in one captured array -> [(title, matrix, ylabels, xlabels)]."""
  def crop(m):  # to the real lengths of the labelled axes
    rows = labels.get(m.shape[0], ('', [str(r) for r in range(m.shape[0])]))[1]
    cols = labels.get(m.shape[1], ('', [str(c) for c in range(m.shape[1])]))[1]
    return m[:len(rows), :len(cols)], rows, cols
  if w.ndim == 4:  # [B, N, Q, K]
    return [(f'{path} head {h}', *crop(w[i, h])) for h in range(w.shape[1])]
  if w.ndim == 3:  # [B, T, S] or memory [B, hops, M]
    m, rows, cols = crop(w[i])
    if path.endswith('attention_weights') and w.shape[1] != len(rows):
      rows = [f'hop {k + 1}' for k in range(w.shape[1])]
    return [(path, m, rows, cols)]
  return []


def plot_examples(model, task, batch, out_dir: pathlib.Path, examples: int = 2) -> list[dict]:
  """One PNG per (captured attention array, example) -> records {file, path, shape}."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  out_dir.mkdir(parents=True, exist_ok=True)
  captured = capture(model, task, batch)
  records = []
  for path, w in captured.items():
    if path.endswith('se_weights'):
      continue
    for i in range(min(examples, w.shape[0])):
      labels = axis_labels(task, batch, i)
      maps = matrices(path, w, i, labels)
      if not maps:
        continue
      name_of = {len(tokens): name for name, tokens in labels.values()}
      cols = min(4, len(maps))
      rows = -(-len(maps) // cols)
      fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
      for ax, (title, m, ylab, xlab) in zip(axes.flat, maps):
        ax.imshow(m, cmap='viridis', vmin=0, vmax=max(float(m.max()), 1e-9), aspect='auto')
        ax.set_title(title, fontsize=8)
        ax.set_xticks(range(len(xlab)), xlab, fontsize=6, rotation=90)
        ax.set_yticks(range(len(ylab)), ylab, fontsize=6)
        ax.set_xlabel(name_of.get(len(xlab), 'key'), fontsize=7)
        ax.set_ylabel(name_of.get(len(ylab), 'query'), fontsize=7)
      for ax in list(axes.flat)[len(maps):]:
        ax.axis('off')
      fig.tight_layout()
      name = path.replace('/', '.') + f'.example{i}.png'
      fig.savefig(out_dir / name, dpi=90)
      plt.close(fig)
      records.append({'file': str(out_dir / name), 'path': path, 'example': i,
                      'shape': [list(m.shape) for _, m, _, _ in maps]})
  se = {p: w for p, w in captured.items() if p.endswith('se_weights')}
  if se and 'label' in batch:
    records.append(plot_se_per_class(se, batch['label'], out_dir / 'se_weights_per_class.png'))
  return records


def plot_se_per_class(se: dict[str, np.ndarray], labels: np.ndarray, path: pathlib.Path) -> dict:
  """Mean SE channel weight per class, one panel per SE block (Hu et al. 2018, fig. 6)."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  classes = np.unique(labels)
  fig, axes = plt.subplots(len(se), 1, figsize=(9, 1.6 * len(se) + 1), squeeze=False)
  shapes = []
  for ax, (name, w) in zip(axes[:, 0], se.items()):
    per_class = np.stack([w[labels == c].mean(0) for c in classes])  # [classes, C]
    shapes.append(list(per_class.shape))
    ax.imshow(per_class, cmap='magma', vmin=0, vmax=1, aspect='auto')
    ax.set_title(name, fontsize=8)
    ax.set_yticks(range(len(classes)), [str(c) for c in classes], fontsize=6)
    ax.set_ylabel('class', fontsize=7)
  axes[-1, 0].set_xlabel('channel')
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return {'file': str(path), 'path': 'se_weights', 'shape': shapes}


def plot_learning_curves(metrics: list[dict[str, Any]], path: pathlib.Path) -> dict | None:
  """Train and validation loss (and the first accuracy-like metric) against step."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  keys = [k for k in ('loss', 'gen_exact_match', 'accuracy') if any(k in r for r in metrics)]
  if not keys:
    return None
  fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
  for ax, key in zip(axes[0], keys):
    for split in ('train', 'validation'):
      rows = [r for r in metrics if r.get('split') == split and key in r]
      if rows:
        ax.plot([r['step'] for r in rows], [r[key] for r in rows], marker='.', label=split)
    ax.set_xlabel('step')
    ax.set_title(key)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return {'file': str(path), 'path': 'learning_curves', 'shape': None}
