"""Seed-parallel sweeps: the runs that differ only in their seed train as one program.

  units = plan(spec, runs, sweep_dir)     # a Group per set of seeds, a Run for a run alone

Runs form a Group when their configs are equal but for `seed`, the config can train seed-parallel
(attention_zoo.train.seed_parallel.groupable: padded batches, no start phase) and their folders'
latest checkpoint steps agree (a group resumes from one step). The others run alone, as before.

A group runs in one child process,
  python -m experiments.sweep --config=SPEC --workdir=DIR --train_run=NAME --train_run=NAME ...
(`command`; the child calls `train_group`), which trains the runs in their own runs/<name>/
folders (seed_parallel.train_seeds). It runs under the claim of every run in it
(attention_zoo.sweeps.claims), taken in listing order, all or none: a process that cannot take
them all waits. Each run's status is its own: 'done' when it wrote results.json, else 'failed',
with the child's output tail in its error.log (the NaN guard's message names the seed it stopped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Callable

from attention_zoo.sweeps import claims, processes
from attention_zoo.sweeps.sweep import Run, expand, run_config
from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd

TAIL_LINES = 60  # lines of the child's output kept in a failed run's error.log


@dataclasses.dataclass(frozen=True)
class Group:
  """Runs of one variant, equal but for their seeds, trained as one program."""
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


def plan(spec: str, runs: list[Run], sweep_dir: pathlib.Path) -> list[Run | Group]:
  """`runs` as units, in listing order (a group where its first run is)."""
  from attention_zoo.train import seed_parallel  # pylint: disable=import-outside-toplevel
  units: dict[tuple, list[Run]] = {}
  for run in runs:
    config = run_config(spec, run)
    if seed_parallel.groupable(config) is not None:
      key: tuple = ('alone', run.name)
    else:
      fields = config_utils.to_dict(config)
      fields.pop(seed_parallel.SEED, None)
      key = (json.dumps(fields, sort_keys=True, default=str),
             _latest_step(sweep_dir / wd.RUNS / run.name))
    units.setdefault(key, []).append(run)
  return [rs[0] if len(rs) == 1 else Group(tuple(rs)) for rs in units.values()]


def command(spec: str, sweep_dir: pathlib.Path, runs: tuple[Run, ...]) -> list[str]:
  """The child process of a group (see the module docstring)."""
  return ([sys.executable, '-m', 'experiments.sweep', f'--config={spec}',
           f'--workdir={sweep_dir}'] + [f'--train_run={r.name}' for r in runs])


def train_group(spec: str, sweep_dir: str | os.PathLike, names: list[str]) -> None:
  """In the child: trains runs `names` of the sweep `spec` seed-parallel in their folders."""
  from attention_zoo.train import seed_parallel  # pylint: disable=import-outside-toplevel
  runs = {r.name: r for r in expand(spec)}
  unknown = [n for n in names if n not in runs]
  if unknown:
    raise ValueError(f'the sweep {spec} has no runs {unknown}; its runs: {sorted(runs)}')
  seed_parallel.train_seeds([run_config(spec, runs[n]) for n in names],
                            [pathlib.Path(sweep_dir) / wd.RUNS / n for n in names])


def attempt(group: Group, cpus: set[int] | None, *, spec: str, sweep_dir: pathlib.Path,
            root: str | os.PathLike | None, claim_timeout_s: float,
            by_peer: Callable[[Run], str | None], log: Callable[[str], None],
            finished: Callable[[Group, float], None]) -> dict[str, str] | None:
  """Runs `group` under the claims of its runs -> {name: status}, or None while another process
  holds one of them. Runs that another process finished (or saw fail) meanwhile keep the status
  `by_peer` gives and leave the group; the rest train together."""
  status = {r.name: s for r in group.runs if (s := by_peer(r)) is not None}
  with contextlib.ExitStack() as stack:
    held = []
    for run in group.runs:
      if run.name in status:
        continue
      claim = claims.try_claim(sweep_dir / wd.RUNS / run.name, claim_timeout_s)
      if claim is None:
        return None  # the claims taken so far are released on the way out
      stack.enter_context(claim)
      held.append((run, claim))
      if claim.took_over is not None:
        log(f'{run.name}: took over the claim of {claim.took_over.get("host")}:'
            f'{claim.took_over.get("pid")}')
    status.update((r.name, s) for r, _ in held if (s := by_peer(r)) is not None)
    todo = tuple(r for r, _ in held if r.name not in status)
    if not todo:
      return status
    for run in todo:
      (sweep_dir / wd.RUNS / run.name / wd.ERROR).unlink(missing_ok=True)
    lost = lambda: any(c.lost.is_set() for _, c in held)
    start = time.perf_counter()
    cmd = command(spec, sweep_dir, todo) if len(todo) > 1 else processes.command(
        f'{spec.partition(":")[0]}:{todo[0].arg}' if todo[0].arg else spec.partition(':')[0],
        todo[0].overrides, sweep_dir / wd.RUNS / todo[0].name)
    proc = processes.launch(cmd, cpus, root, stop=lost)
    finished(group, time.perf_counter() - start)
    tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-TAIL_LINES:])
    for run in todo:
      run_dir = sweep_dir / wd.RUNS / run.name
      if lost():
        status[run.name] = 'lost'
      elif (run_dir / wd.RESULTS).exists() and (proc.returncode == 0 or len(todo) > 1):
        status[run.name] = 'done'
      else:
        wd.write_text(run_dir / wd.ERROR, tail + '\n')
        status[run.name] = 'failed'
  return status
