"""Running a sweep: the unfinished runs of its plan (plan.py), `parallel` at a time, each group of
runs (groups.py) in one experiments.main child process, under the claims of its runs.

  status = run_sweep('configs/dates_demo.py:size=tiny', 'runs/demo', parallel=2, root=REPO)

How a run is claimed (Runner.attempt): a worker takes the next Group from the Scheduler, skips
the runs another sweep process finished or saw fail (Runner._by_peer), takes the claim of each
remaining run (claims.try_claim: all or none; none -> the group waits and is looked at again),
starts the child, and records each run's status.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import pathlib
import threading
import time
from typing import Callable

from attention_zoo.sweeps import claims, groups, processes
from attention_zoo.sweeps.plan import Run, expand, run_config, select, write_plan
from attention_zoo.sweeps.schedule import Scheduler
from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd
from attention_zoo.train.distributed_settings import (CLUSTER_RANK, Settings,
                                                      process_id_before_start)

TAIL_LINES = 60  # lines of a failed child's output kept in its runs' error.log


def check_finished(spec: str, sweep_dir: pathlib.Path, runs: list[Run]) -> None:
  """ConfigMismatchError naming the run and the keys when a finished run (its results.json
  there) was of another config than the spec gives it now: skipping it would report stale
  results as the new config's."""
  for run in runs:
    run_dir = sweep_dir / wd.RUNS / run.name
    if (run_dir / wd.RESULTS).exists() and (run_dir / wd.CONFIG).exists():
      detail = wd.config_changes(wd.read_json(run_dir / wd.CONFIG),
                                 config_utils.to_dict(run_config(spec, run)))
      if detail:
        raise wd.ConfigMismatchError(
            f'{run_dir} finished with another config than {spec} now gives it ({detail}); '
            'remove that run folder to run it again, or use another sweep folder')


def describe(spec: str, sweep_dir: str | os.PathLike,
             run_index: int | None = None) -> list[str]:
  """'<index> <name> <state>' per run (of `run_index` alone if given), state: finished, failed,
  claimed by host:pid, or to run. Writes nothing."""
  sweep_dir = pathlib.Path(sweep_dir)
  runs = expand(spec)
  lines = []
  for run in select(runs, run_index):
    run_dir = sweep_dir / wd.RUNS / run.name
    found = claims.read(run_dir / claims.CLAIM)
    if (run_dir / wd.RESULTS).exists():
      state = 'finished'
    elif found is not None:
      state = 'claimed by ' + (f'{found[0]["host"]}:{found[0]["pid"]}' if found[0] else '?')
    elif (run_dir / wd.ERROR).exists():
      state = 'failed'
    else:
      state = 'to run'
    lines.append(f'{runs.index(run)} {run.name} {state}')
  return lines


class _Waiting:
  """Runs held by other sweep processes, each looked at again `poll_s` after the last look."""

  def __init__(self, poll_s: float):
    self._runs: collections.deque[tuple[float, Run]] = collections.deque()
    self._poll_s = poll_s
    self._lock = threading.Lock()

  def add(self, run: Run):
    with self._lock:
      self._runs.append((time.monotonic() + self._poll_s, run))

  def next(self) -> Run | None:
    """The run due first (after sleeping until it is due), or None when none waits."""
    with self._lock:
      if not self._runs:
        return None
      due, run = self._runs.popleft()
    time.sleep(max(0.0, due - time.monotonic()))
    return run


def _mtime(path: pathlib.Path) -> int | None:
  try:
    return path.stat().st_mtime_ns
  except FileNotFoundError:
    return None


class Runner:
  """Trains the unfinished runs of one sweep (see run_sweep for the arguments)."""

  def __init__(self, spec: str, sweep_dir: str | os.PathLike, *, parallel: int = 1,
               pin: bool = True, root: str | os.PathLike | None = None,
               run_index: int | None = None,
               claim_timeout_s: float = claims.DEFAULT_TIMEOUT_S, poll_s: float = 2.0,
               seed_map: str | None = None, multihost: Settings | None = None,
               log: Callable[[str], None] = print):
    self.spec, self.sweep_dir = spec, pathlib.Path(sweep_dir)
    self.parallel, self.pin, self.root, self.log = parallel, pin, root, log
    self.claim_timeout_s, self.seed_map = claim_timeout_s, seed_map
    self.run_flags: list[str] = []
    self.leader = True  # claims its runs (False: a process > 0 of a multi-process run)
    if multihost is not None:
      self.run_flags, self.leader = self._multihost(multihost, run_index)
    self.runs = select(write_plan(spec, self.sweep_dir, strict=run_index is not None), run_index)
    check_finished(spec, self.sweep_dir, self.runs)
    self.todo = [r for r in self.runs if not (self.run_dir(r) / wd.RESULTS).exists()]
    # failed before we started: a later error.log is a peer's
    self.old_errors = {r.name: _mtime(self.run_dir(r) / wd.ERROR) for r in self.todo}
    self.status = {r.name: 'skipped' for r in self.runs if r not in self.todo}
    self.scheduler = Scheduler(groups.group_runs(spec, self.todo, self.sweep_dir, seed_map))
    self.waiting = _Waiting(poll_s)
    self.held: set[str] = set()  # the runs we said another process holds
    self.lock = threading.Lock()

  def _multihost(self, settings: Settings, run_index: int | None) -> tuple[list[str], bool]:
    if run_index is None or self.parallel != 1:
      raise ValueError('a multi-process sweep (--multihost, --coordinator_address, '
                       '--num_processes, --process_id) runs one run: give --run_index, with '
                       f'--parallel=1 (not {self.parallel})')
    process_id = process_id_before_start(settings)
    if process_id is None:
      raise ValueError('a multi-process sweep needs this process\'s id before it starts the run '
                       '(process 0 claims it): give --process_id, $JAX_PROCESS_ID, or run under '
                       f'a cluster that sets one of {", ".join("$" + v for v in CLUSTER_RANK)}')
    return ['--multihost', *settings.flags()], process_id == 0

  def run_dir(self, run: Run) -> pathlib.Path:
    return self.sweep_dir / wd.RUNS / run.name

  def run(self) -> dict[str, str]:
    """Trains every unfinished run -> {name: status} (see run_sweep)."""
    self._build_datasets()
    for name in self.status:
      self.log(f'[{len(self.status)}/{len(self.runs)}] {name}: skipped')
    lanes = (processes.cpu_lanes(self.parallel) if self.pin else None) or (
        [None] * max(1, self.parallel))
    with concurrent.futures.ThreadPoolExecutor(len(lanes)) as pool:
      for future in [pool.submit(self._worker, cpus) for cpus in lanes]:
        future.result()  # re-raises what stopped a worker
    return {r.name: self.status[r.name] for r in self.runs}

  def _build_datasets(self) -> None:
    """Builds each distinct dataset once, here, so that parallel runs never write one cache
    together."""
    from attention_zoo import data  # pylint: disable=import-outside-toplevel  # loads JAX
    tasks = {json.dumps(run_config(self.spec, r).task.to_dict(), sort_keys=True)
             for r in self.todo}
    for task in sorted(tasks):
      data.get_task(json.loads(task))

  def _worker(self, cpus: set[int] | None) -> None:
    while (group := self.scheduler.next() or self.waiting.next()) is not None:
      status = self.attempt(group, cpus)
      if status is None:
        self.waiting.add(group)
        continue
      for name, result in status.items():
        self._record(name, result)

  def _by_peer(self, run: Run) -> str | None:
    """'elsewhere' / 'failed' when another process finished / failed `run` since we started."""
    if (self.run_dir(run) / wd.RESULTS).exists():
      return 'elsewhere'
    error = _mtime(self.run_dir(run) / wd.ERROR)
    return 'failed' if error is not None and error != self.old_errors[run.name] else None

  def _claim_all(self, stack: contextlib.ExitStack, runs: list[Run]
                 ) -> list[claims.Claim] | None:
    """The claims of `runs`, entered on `stack`; None (those taken released by the stack) when
    another process holds one of them."""
    held = []
    for run in runs:
      claim = claims.try_claim(self.run_dir(run), self.claim_timeout_s)
      if claim is None:
        self._say_held(run)
        return None
      stack.enter_context(claim)
      held.append(claim)
      if claim.took_over is not None:
        owner = claim.took_over
        self.log(f'{run.name}: took over the claim of {owner.get("host")}:{owner.get("pid")}')
    return held

  def _say_held(self, run: Run) -> None:
    if run.name not in self.held:
      self.held.add(run.name)
      found = claims.read(self.run_dir(run) / claims.CLAIM)
      who = f'{found[0].get("host")}:{found[0].get("pid")}' if found and found[0] else '?'
      self.log(f'{run.name}: held by {who}; waiting for it to finish or to go stale')

  def attempt(self, group: groups.Group, cpus: set[int] | None) -> dict[str, str] | None:
    """Trains the runs of `group` that no other process finished -> {name: status}, or None
    while another process holds one of them."""
    status = {r.name: s for r in group.runs if (s := self._by_peer(r)) is not None}
    with contextlib.ExitStack() as stack:
      todo = [r for r in group.runs if r.name not in status]
      held: list[claims.Claim] = []
      if self.leader and todo:  # process 0 of a run claims it; the others join it
        held = self._claim_all(stack, todo)
        if held is None:
          return None
        status.update((r.name, s) for r in todo if (s := self._by_peer(r)) is not None)
        todo = [r for r in todo if r.name not in status]
      if todo:
        status.update(self._train(group, todo, cpus, held))
    return status

  def _train(self, group: groups.Group, todo: list[Run], cpus: set[int] | None,
             held: list[claims.Claim]) -> dict[str, str]:
    """Runs the child that trains `todo` -> each run's status."""
    if self.leader:
      for run in todo:
        (self.run_dir(run) / wd.ERROR).unlink(missing_ok=True)
    lost = lambda: any(c.lost.is_set() for c in held)
    start = time.perf_counter()
    proc = processes.launch(
        groups.command(self.spec, self.sweep_dir, todo, self.seed_map, self.run_flags),
        cpus, self.root, stop=lost if held else None)
    self.scheduler.finished(group, time.perf_counter() - start)
    tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-TAIL_LINES:])
    status = {}
    for run in todo:
      if lost():
        status[run.name] = 'lost'
      elif proc.returncode == 0 or (len(todo) > 1 and (self.run_dir(run) / wd.RESULTS).exists()):
        status[run.name] = 'done'
      elif not self.leader:  # process 0 writes error.log; a follower's output goes to its log
        self.log(f'{run.name} failed in this process:\n{tail}')
        status[run.name] = 'failed'
      else:
        wd.write_text(self.run_dir(run) / wd.ERROR, tail + '\n')
        self.old_errors[run.name] = _mtime(self.run_dir(run) / wd.ERROR)  # ours: not a peer's
        status[run.name] = 'failed'
    return status

  def _record(self, name: str, result: str) -> None:
    with self.lock:
      self.status[name] = result
      extra = {'failed': f' (see {self.sweep_dir / wd.RUNS / name / wd.ERROR})',
               'elsewhere': ' (by another sweep process)'}.get(result, '')
      self.log(f'[{len(self.status)}/{len(self.runs)}] {name}: {result}{extra}')


def run_sweep(spec: str, sweep_dir: str | os.PathLike, *, parallel: int = 1, pin: bool = True,
              root: str | os.PathLike | None = None, run_index: int | None = None,
              claim_timeout_s: float = claims.DEFAULT_TIMEOUT_S, poll_s: float = 2.0,
              seed_map: str | None = None, multihost: Settings | None = None,
              log: Callable[[str], None] = print) -> dict[str, str]:
  """Runs every unfinished run of the sweep (or run `run_index` alone), `parallel` at a time
  -> {name: status}.

  status: 'done', 'skipped' (results.json was there), 'failed', 'elsewhere' (another sweep
  process on this folder finished it meanwhile) or 'lost' (its claim was taken over: this process
  had stopped its heartbeat for longer than claim_timeout_s; the taker runs it).

  Several sweep processes may work on one folder (one host or many): each runs a run only under
  its claim (attention_zoo.sweeps.claims), waits for the runs that others hold (looking every
  `poll_s`), and takes over a claim whose owner died: at once for a process of this host that is
  gone, after `claim_timeout_s` without a heartbeat otherwise. The taker resumes the run from its
  checkpoint. A run that another process saw fail is not run again by this one.

  A failed run is reported (its output tail in runs/<name>/error.log) and does not stop the others.
  pin: give each of the `parallel` workers its own CPUs (see processes.cpu_lanes).
  root: the folder that holds experiments/ and configs/ (the runs are `python -m
    experiments.main`); None: the current directory.
  seed_map: how the runs that differ only in their seed train (attention_zoo.train.seeds):
    'map' or 'vmap' as one program in one process, 'processes' one process per run; None: one
    program, mapped as the child's platform prefers.
  multihost: run `run_index` as one process of a multi-process run (jax.distributed): every
    process of the run starts this sweep with the same run_index, and each passes --multihost and
    these settings on to its experiments.main. Process 0 alone claims the run; the others follow
    it without a claim (what `srun` starts in a SLURM array task, see launchers.Slurm).
  """
  return Runner(spec, sweep_dir, parallel=parallel, pin=pin, root=root, run_index=run_index,
                claim_timeout_s=claim_timeout_s, poll_s=poll_s, seed_map=seed_map,
                multihost=multihost, log=log).run()
