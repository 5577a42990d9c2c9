r"""Runs a reproduction card and writes its evidence; regenerates REPRODUCTIONS.md and the README.

  python -m experiments.reproduce --card=multi30k_transformer --parallel=1
  python -m experiments.reproduce --card=multi30k_transformer --collect_only   (no training)
  python -m experiments.reproduce --card=multi30k_transformer --collect_only --keep_rows
  python -m experiments.reproduce --docs                  (only re-render from the evidence)

A card (attention_zoo/reproductions/cards.py) is a sweep plus the paper's claim. Its runs go to
`--workdir/<card>/` (re-running skips finished runs and resumes the others); its evidence,
`reproductions/<card>/runs/<run>/` (each run's resolved config, results.json, validation curve and
the sitting's conditions: attention_zoo/reproductions/evidence.py), is written from the finished
runs, replacing the previous evidence at once; a card that names `measures` first measures each
finished run's final checkpoint (attention_zoo.analysis.measure_run.write_split), and its
evidence holds those measures too. With --keep_rows the committed runs stay and the runs
finished here join them (a run of the same name replaced), so the seeds of one card can be
run over several sittings (e.g. on another machine, `--run_index=K` of experiments.sweep for the
seeds still missing). --docs derives every number of REPRODUCTIONS.md and the README's card
tables from those files and the cards' definitions; tests/test_reproductions.py checks that the
committed docs equal that derivation.
"""

from __future__ import annotations

import pathlib

from absl import app, flags

from attention_zoo import sweeps
from attention_zoo.analysis import report as sweep_report
from attention_zoo.reproductions import cards, evidence, render
from attention_zoo.train import seeds

ROOT = pathlib.Path(__file__).resolve().parents[1]  # holds configs/ and the files below
EVIDENCE = ROOT / 'reproductions'
REPRODUCTIONS_MD = ROOT / 'REPRODUCTIONS.md'
README = ROOT / 'README.md'

_CARD = flags.DEFINE_string('card', None,
                            f'the card to run, one of: {", ".join(cards.CARDS.names())}')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/reproductions', 'where the runs of cards go')
_PARALLEL = flags.DEFINE_integer('parallel', None, "runs at a time (default: the card's own)")
_COLLECT = flags.DEFINE_bool('collect_only', False, 'write the evidence from the runs there are, '
                             'training nothing')
_DOCS = flags.DEFINE_bool('docs', False, 'only regenerate REPRODUCTIONS.md and the README tables')
_KEEP = flags.DEFINE_bool('keep_rows', False, 'keep the committed runs (collected in an earlier '
                          'sitting) beside the finished runs in --workdir: the seeds of a row '
                          'add up, and rows with no run here stay as committed')
_SEED_MAP = flags.DEFINE_enum('seed_map', None, list(seeds.CHOICES),
                              'how runs that differ only in their seed train (as '
                              'experiments.sweep): one program in one process (map, vmap), a '
                              'run\'s wall time then its share of the group\'s; or one process '
                              'per run (processes); default: the card\'s own, else the '
                              'platform\'s')
_CONDITIONS = flags.DEFINE_string('conditions', '', 'what else ran on the machine during the runs '
                                  '(wall times depend on it), kept in the evidence')


def write_docs() -> None:
  """REPRODUCTIONS.md and the README's card blocks, derived from the committed runs."""
  found = evidence.load(EVIDENCE)
  REPRODUCTIONS_MD.write_text(render.render(found))
  README.write_text(render.splice(README.read_text(), render.readme_blocks(found)))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _DOCS.value:
    if _CARD.value is None:
      raise app.UsageError(f'--card is required; cards: {", ".join(cards.CARDS.names())}')
    card = cards.CARDS.get(_CARD.value)
    sweep_dir = pathlib.Path(_WORKDIR.value) / card.name
    spec = str(ROOT / card.config)
    if _COLLECT.value:
      sweeps.write_plan(spec, sweep_dir)  # runs started by hand have none
    else:
      status = sweeps.run_sweep(spec, sweep_dir, parallel=_PARALLEL.value or card.parallel,
                                root=ROOT, seed_map=_SEED_MAP.value or card.seed_map)
      failed = [n for n, s in status.items() if s == 'failed']
      if failed:
        print(f'{len(failed)} run(s) failed: {", ".join(failed)} (see their error.log)')
    for path in evidence.measure_runs(card, sweep_dir):  # a card's attention measures
      print(f'measured {path}')
    sweep_report.write(sweep_dir, title=card.title)
    report = evidence.write(card, sweep_dir, EVIDENCE, _CONDITIONS.value, _KEEP.value)
    print(f'{card.name}: {report["verdict"]}: {report["reason"]}')
    print(render.table(report))
  write_docs()
  print(f'wrote {REPRODUCTIONS_MD.name} and the README tables')


if __name__ == '__main__':
  app.run(main)
