r"""`make demo`: the default comparison on date normalization, with error bars and heatmaps.

  python -m experiments.demo [--workdir=runs/demo] [--parallel=2]
  python -m experiments.demo --workdir=/tmp/demo --arg=size=tiny,seeds=1   (a smoke run)
  python -m experiments.demo --seed_map=processes   (one process per run, not one per variant)

Runs the sweep of configs/dates_demo.py (8 variants x 3 seeds; re-running skips finished runs),
writes runs/demo/report.md (table with mean ± std and 95% CIs, plots), then draws the attention
of one validation example for every attention variant (seed 0) into runs/demo/heatmaps/ and
links them from the report.
"""

import pathlib
import shutil
import time

from absl import app, flags

from attention_zoo import sweeps
from attention_zoo.analysis import analyze_run, report
from attention_zoo.train import seeds
from attention_zoo.train import workdir as wd

_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'the demo sweep directory')
_PARALLEL = flags.DEFINE_integer('parallel', 2, 'runs at a time')
_PIN = flags.DEFINE_bool('pin_cpus', True, 'give each of the parallel runs its own CPUs '
                          '(XLA single-threaded when that is one CPU each)')
_SEED_MAP = flags.DEFINE_enum('seed_map', None, list(seeds.CHOICES),
                              'how the seeds of each variant train: one program in one process '
                              '(map or vmap; default: the platform\'s) or one process per run '
                              '(processes); see attention_zoo.train.seeds')
_ARG = flags.DEFINE_string('arg', '', "the sweep's arg, e.g. 'size=tiny,seeds=1'")
ROOT = pathlib.Path(__file__).resolve().parents[1]  # holds experiments/ and configs/
CONFIG = str(ROOT / 'configs' / 'dates_demo.py')
# The maps to show per model family: the source-target attention (seq2seq alignment; the last
# decoder layer's cross-attention of the Transformer).
SHOWN = ('attention_weights.example0.png', 'cross_attn.attention_weights.example0.png')


def heatmaps(spec: str, sweep_dir: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
  out_dir = sweep_dir / 'heatmaps'
  out_dir.mkdir(exist_ok=True)
  shown = []
  for run in sweeps.expand(spec):
    run_dir = sweep_dir / wd.RUNS / run.name
    if run.overrides.get('seed') != 0 or 'score=none' in (run.arg or ''):
      continue
    if not (run_dir / wd.RESULTS).exists():
      continue
    records = analyze_run(run_dir, examples=1)
    cross = ([r for r in records if r['file'].endswith(SHOWN[1])]
             or [r for r in records if r['file'].endswith(SHOWN[0])])
    if cross:
      best = cross[-1]  # the last (deepest) source-target map
      target = out_dir / f'{run.arg.replace(",", "_").replace("=", "-")}.png'
      shutil.copyfile(best['file'], target)
      shown.append((run.arg, target))
  return shown


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  sweeps.share_run_cache()  # the heatmaps' models were compiled by the runs
  sweep_dir = pathlib.Path(_WORKDIR.value)
  spec = f'{CONFIG}:{_ARG.value}' if _ARG.value else CONFIG
  start = time.perf_counter()
  status = sweeps.run_sweep(spec, sweep_dir, parallel=_PARALLEL.value, pin=_PIN.value, root=ROOT,
                            seed_map=_SEED_MAP.value)
  trained = time.perf_counter() - start
  report.write(sweep_dir, title='attention_zoo demo: date normalization')
  maps = heatmaps(spec, sweep_dir)
  report_md = sweep_dir / wd.REPORT_MD
  with open(report_md, 'a') as f:
    f.write('\n## Attention of one validation example (seed 0)\n\nRows: output characters; '
            'columns: input characters; bright = high weight.\n')
    for variant, path in maps:
      f.write(f'\n### {variant}\n\n![{variant}](heatmaps/{path.name})\n')
  print(report_md.read_text())
  failed = [n for n, s in status.items() if s == 'failed']
  print(f'demo: {len(status)} runs ({len(failed)} failed) trained in {trained:.0f} s, '
        f'{len(maps)} heatmaps; report: {report_md}')
  if failed:
    raise SystemExit(f'failed runs: {", ".join(failed)}')


if __name__ == '__main__':
  app.run(main)
