r"""Look inside a run: attention maps, SE channel weights, learning curves, a text summary.

  python -m experiments.analyze --workdir=runs/demo/runs/attention=additive,seed=0 --examples=2

Writes PNGs and summary.txt into WORKDIR/analysis[_step<N>]/.
"""

import json
import pathlib

import numpy as np
from absl import app, flags

from attention_zoo.analysis import load, maps

_WORKDIR = flags.DEFINE_string('workdir', None, 'the workdir of one run')
_STEP = flags.DEFINE_integer('step', None, 'checkpoint step (default: latest)')
_EXAMPLES = flags.DEFINE_integer('examples', 2, 'examples to draw per attention layer')
_SPLIT = flags.DEFINE_string('split', 'validation', 'split the examples come from')
flags.mark_flags_as_required(['workdir'])


def analyze(workdir: str, step: int | None = None, examples: int = 2,
            split: str = 'validation') -> list[dict]:
  """Writes the analysis of one run; returns the records of the files written."""
  workdir = pathlib.Path(workdir)
  config, model, task = load.load_run(workdir, step, capture_weights=True)
  out_dir = workdir / (f'analysis_step{step}' if step is not None else 'analysis')
  n = max(examples, 64) if task.kind in ('classify', 'qa') else examples  # SE per class needs more
  batch = next(iter(task.batches(split, n, seed=0, shuffle=False, num_epochs=1,
                                 drop_remainder=False)))
  batch = {k: np.asarray(v) for k, v in batch.items()}
  records = maps.plot_examples(model, task, batch, out_dir, examples)
  metrics_path = workdir / 'metrics.jsonl'
  if metrics_path.exists():
    rows = [json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip()]
    curve = maps.plot_learning_curves(rows, out_dir / 'learning_curves.png')
    if curve:
      records.append(curve)
  results_path = workdir / 'results.json'
  results = json.loads(results_path.read_text()) if results_path.exists() else {}
  lines = [f'run: {workdir}', f'model: {config.model_name} {dict(config.model)}',
           f'task: {config.task.name} (kind {task.kind})',
           f'params: {results.get("num_params", "?")}',
           f'final: ' + json.dumps({k: results.get(k) for k in ('validation', 'test')}),
           '', 'files:'] + [f'  {r["file"]}  {r["path"]} {r["shape"] or ""}' for r in records]
  (out_dir / 'summary.txt').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  return records


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  analyze(_WORKDIR.value, _STEP.value, _EXAMPLES.value, _SPLIT.value)


if __name__ == '__main__':
  app.run(main)
