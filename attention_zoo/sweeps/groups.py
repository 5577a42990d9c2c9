"""Which runs of a sweep train together: a Group is the runs one experiments.main trains.

  units = group_runs(spec, runs, sweep_dir, seed_map)   # every run in exactly one Group

Runs form one Group when their configs are equal but for `seed`, the config lets seeds train as
one program (attention_zoo.train.seeds.why_not_together: padded batches, no per-seed hook), the
seed map is not 'processes' (asked for, or the model's default on this platform:
seeds.apart_by_default, the conv nets on CPU), and their folders' latest checkpoint steps agree
(a group resumes from one step). Every other run is a Group of one. A Group of S runs is one
child process,
  python -m experiments.main --config=SPEC --config.<override>=... --seeds=0,1,2 \
    --workdir=runs/<name0> --workdir=runs/<name1> --workdir=runs/<name2>
(`command`), which trains each seed in its own runs/<name>/ folder.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Sequence

from attention_zoo.sweeps import processes
from attention_zoo.sweeps.plan import Run, config_spec, run_config
from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd



@dataclasses.dataclass(frozen=True)
class Group:
  """Runs of one variant, equal but for their seeds, trained by one process (one run or more)."""
  runs: tuple[Run, ...]

  @property
  def name(self) -> str:
    return ' + '.join(r.name for r in self.runs)

  @property
  def variant(self) -> str:  # what the Scheduler orders by
    return self.runs[0].variant


def _latest_step(run_dir: pathlib.Path) -> int:
  """The newest step under run_dir/checkpoints (0: none)."""
  ckpts = run_dir / wd.CHECKPOINTS
  return max((int(p.name) for p in ckpts.iterdir() if p.name.isdigit()), default=0) if (
      ckpts.is_dir()) else 0


def group_runs(spec: str, runs: list[Run], sweep_dir: pathlib.Path,
               seed_map: str | None) -> list[Group]:
  """`runs` as Groups, in listing order (a group where its first run is)."""
  from attention_zoo.train import seeds  # pylint: disable=import-outside-toplevel  # loads JAX
  units: dict[tuple, list[Run]] = {}
  for run in runs:
    config = run_config(spec, run)
    apart = seed_map == seeds.PROCESSES or (
        seed_map is None and seeds.apart_by_default(config.model_name))
    if apart or seeds.why_not_together(config) is not None:
      key: tuple = ('alone', run.name)
    else:
      fields = config_utils.to_dict(config)
      fields.pop(seeds.SEED, None)
      key = (json.dumps(fields, sort_keys=True, default=str),
             _latest_step(sweep_dir / wd.RUNS / run.name))
    units.setdefault(key, []).append(run)
  return [Group(tuple(rs)) for rs in units.values()]


def command(spec: str, sweep_dir: pathlib.Path, runs: Sequence[Run], seed_map: str | None,
            flags: Sequence[str] = ()) -> list[str]:
  """The experiments.main command line that trains `runs` (equal but for their seeds)."""
  run_dirs = [sweep_dir / wd.RUNS / r.name for r in runs]
  if len(runs) == 1:
    return processes.command(config_spec(spec, runs[0]), runs[0].overrides, run_dirs, flags)
  from attention_zoo.train import seeds  # pylint: disable=import-outside-toplevel  # loads JAX
  overrides = {k: v for k, v in runs[0].overrides.items() if k != seeds.SEED}
  group_flags = [f'--seeds={",".join(str(run_config(spec, r).seed) for r in runs)}']
  if seed_map is not None:
    group_flags.append(f'--seed_map={seed_map}')
  return processes.command(config_spec(spec, runs[0]), overrides, run_dirs,
                           [*group_flags, *flags])
