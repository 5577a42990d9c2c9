"""One run's analysis on disk: attention maps, SE weights, learning curves and summary.txt.

  from attention_zoo.analysis import analyze_run
  records = analyze_run('runs/dates', examples=2)   # -> [{file, path, example, shape}, ...]
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from attention_zoo.analysis import load, maps
from attention_zoo.train import workdir as wd


def analyze_run(workdir: str | pathlib.Path, step: int | None = None, examples: int = 2,
                split: str = 'validation') -> list[dict]:
  """Writes the analysis of one run; returns the records of the files written."""
  workdir = pathlib.Path(workdir)
  config, model, task = load.load_run(workdir, step, capture_weights=True)
  out_dir = workdir / (f'{wd.ANALYSIS}_step{step}' if step is not None else wd.ANALYSIS)
  n = max(examples, 64) if task.kind in ('classify', 'qa') else examples  # SE per class needs more
  batch = next(iter(task.batches(split, n, seed=0, shuffle=False, num_epochs=1,
                                 drop_remainder=False)))
  batch = {k: np.asarray(v) for k, v in batch.items()}
  records = maps.plot_examples(model, task, batch, out_dir, examples)
  curve = maps.plot_learning_curves(wd.read_jsonl(workdir / wd.METRICS),
                                    out_dir / 'learning_curves.png')
  if curve:
    records.append(curve)
  results_path = workdir / wd.RESULTS
  results = wd.read_json(results_path) if results_path.exists() else {}
  lines = [f'run: {workdir}', f'model: {config.model_name} {dict(config.model)}',
           f'task: {config.task.name} (kind {task.kind})',
           f'params: {results.get("num_params", "?")}',
           'final: ' + json.dumps({k: results.get(k) for k in ('validation', 'test')}),
           '', 'files:'] + [f'  {r["file"]}  {r["path"]} {r["shape"] or ""}' for r in records]
  (out_dir / 'summary.txt').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  return records
