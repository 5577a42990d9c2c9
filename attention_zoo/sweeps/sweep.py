"""The runs of a sweep and run_sweep, which trains the unfinished ones in child processes.

get_sweep(arg) returns one dict of config overrides per run ({'model.score': 'dot', 'seed': 0}).
The special key 'config_arg' replaces the config arg for that run, so that one sweep can compare
variants that differ in more than a few fields (e.g. a seq2seq RNN beside a Transformer):
{'config_arg': 'family=transformer,score=additive', 'seed': 0}.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import socket
import threading
import time
from typing import Any, Callable

from attention_zoo.sweeps import claims, processes
from attention_zoo.sweeps.schedule import Scheduler
from attention_zoo.train import config_utils
from attention_zoo.train import workdir as wd
from attention_zoo.train.distributed_settings import (CLUSTER_RANK, Settings,
                                                      process_id_before_start)

CONFIG_ARG = 'config_arg'


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: dict[str, Any]
  arg: str | None = None  # the config arg of this run (the sweep's own arg unless overridden)

  @property
  def variant(self) -> str:
    return variant_name(self.arg, self.overrides)


def variant_name(arg: str | None, overrides: dict[str, Any], sweep_arg: str | None = None) -> str:
  """What a run compares, as the report names it: its config arg (unless it is the sweep's own)
  and its overrides other than the seed, e.g. 'family=seq2seq,score=dot' ('default' if none)."""
  parts = [arg] if arg and arg != sweep_arg else []
  parts += [f'{k.split(".")[-1]}={v}' for k, v in overrides.items() if k != 'seed']
  return ','.join(parts) or 'default'


def load_config_module(spec: str):
  """'configs/x.py[:arg]' -> (module, arg). A missing file is a clear error."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file {path!r} (from {spec!r}) does not exist')
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  for fn in ('get_config', 'get_sweep'):
    if not hasattr(module, fn):
      raise ValueError(f'config file {path} has no {fn}(arg)')
  return module, (arg or None)


def run_name(overrides: dict[str, Any]) -> str:
  """{'model.score': 'dot', 'seed': 1} -> 'score=dot,seed=1' (last key part; safe chars)."""
  parts = [f'{key.split(".")[-1]}={value}' for key, value in overrides.items()]
  return re.sub(r'[^A-Za-z0-9_.,=+-]', '_', ','.join(parts)) or 'default'


def _arg_items(arg: str | None) -> dict[str, str]:
  return dict(item.split('=', 1) for item in filter(None, (arg or '').split(',')) if '=' in item)


def expand(spec: str) -> list[Run]:
  """The runs of a sweep; each run's config is built and checked up front (typos fail here)."""
  module, arg = load_config_module(spec)
  runs = []
  for entry in module.get_sweep(arg):
    overrides = {k: v for k, v in entry.items() if k != CONFIG_ARG}
    run_arg = entry.get(CONFIG_ARG, arg)
    config_utils.apply_overrides(module.get_config(run_arg), overrides)  # raises on a typo
    name = run_name({**(_arg_items(run_arg) if CONFIG_ARG in entry else {}), **overrides})
    runs.append(Run(name, overrides, run_arg))
  names = [r.name for r in runs]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f'sweep of {spec} names two runs the same: {dupes}')
  return runs


def run_config(spec: str, run: Run):
  """The locked config of one run (its config arg, then its overrides)."""
  module, _ = load_config_module(spec)
  return config_utils.apply_overrides(module.get_config(run.arg), run.overrides)


def write_plan(spec: str, sweep_dir: str | os.PathLike, *, strict: bool = False) -> list[Run]:
  """Writes sweep.json (the sweep's runs, which its report reads) and makes runs/ -> the runs.

  Several sweep processes may start together: sweep.json is rewritten only when it changes, each
  through its own temporary file. strict: raise ValueError when sweep.json lists other runs (an
  array task of a cluster job must run the run its index had at submission).
  """
  sweep_dir = pathlib.Path(sweep_dir)
  runs = expand(spec)
  (sweep_dir / wd.RUNS).mkdir(parents=True, exist_ok=True)
  plan = {'config': spec, 'arg': spec.partition(':')[2] or None,
          'runs': [dataclasses.asdict(r) for r in runs]}
  path = sweep_dir / wd.SWEEP
  old = wd.read_json(path) if path.exists() else None
  if old == plan:
    return runs
  if strict and old is not None and old['runs'] != plan['runs']:
    raise ValueError(f'{path} lists other runs than {spec} gives now (was the config edited '
                     'after the sweep was planned?); run it from an unchanged config or '
                     'another --workdir')
  tmp = path.with_name(f'{path.name}.{socket.gethostname()}.{os.getpid()}.tmp')
  tmp.write_text(json.dumps(plan, indent=2, sort_keys=True) + '\n')
  tmp.replace(path)
  return runs


def select(runs: list[Run], run_index: int | None) -> list[Run]:
  """All runs (None), or run `run_index` of the listing (a cluster array task's index)."""
  if run_index is None:
    return list(runs)
  if not 0 <= run_index < len(runs):
    raise ValueError(f'run_index {run_index} is out of range: the sweep has {len(runs)} runs '
                     f'(0..{len(runs) - 1})')
  return [runs[run_index]]


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


def run_sweep(spec: str, sweep_dir: str | os.PathLike, *, parallel: int = 1, pin: bool = True,
              root: str | os.PathLike | None = None, run_index: int | None = None,
              claim_timeout_s: float = claims.DEFAULT_TIMEOUT_S, poll_s: float = 2.0,
              seed_parallel: bool = False, multihost: Settings | None = None,
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
  seed_parallel: runs that differ only in their seed train as one program, in one process
    (attention_zoo.sweeps.seed_groups); False: one process per run.
  multihost: run `run_index` as one process of a multi-process run (jax.distributed): every
    process of the run starts this sweep with the same run_index, and each passes --multihost and
    these settings on to its experiments.main. Process 0 alone claims the run; the others follow
    it without a claim (what `srun` starts in a SLURM array task, see launchers.Slurm).
  """
  sweep_dir = pathlib.Path(sweep_dir)
  run_flags: list[str] = []
  leader = True  # claims its runs (False: a process > 0 of a multi-process run)
  if multihost is not None:
    if run_index is None or parallel != 1 or seed_parallel:
      raise ValueError('a multi-process sweep (--multihost, --coordinator_address, '
                       '--num_processes, --process_id) runs one run: give --run_index, with '
                       f'--parallel=1 (not {parallel}) and --noseed_parallel')
    process_id = process_id_before_start(multihost)
    if process_id is None:
      raise ValueError('a multi-process sweep needs this process\'s id before it starts the run '
                       '(process 0 claims it): give --process_id, $JAX_PROCESS_ID, or run under '
                       f'a cluster that sets one of {", ".join("$" + v for v in CLUSTER_RANK)}')
    run_flags, leader = ['--multihost', *multihost.flags()], process_id == 0
  runs = select(write_plan(spec, sweep_dir, strict=run_index is not None), run_index)
  check_finished(spec, sweep_dir, runs)

  def run_dir(run: Run) -> pathlib.Path:
    return sweep_dir / wd.RUNS / run.name

  def mtime(path: pathlib.Path) -> int | None:
    try:
      return path.stat().st_mtime_ns
    except FileNotFoundError:
      return None

  # Build each distinct dataset once, here, so that parallel runs never write one cache together.
  from attention_zoo import data  # pylint: disable=import-outside-toplevel
  todo = [r for r in runs if not (run_dir(r) / wd.RESULTS).exists()]
  tasks = {json.dumps(run_config(spec, r).task.to_dict(), sort_keys=True) for r in todo}
  for task in sorted(tasks):
    data.get_task(json.loads(task))
  old_errors = {r.name: mtime(run_dir(r) / wd.ERROR) for r in todo}  # failed before we started

  path = spec.partition(':')[0]

  def by_peer(run: Run) -> str | None:
    """'elsewhere' / 'failed' when another process finished / failed `run` since we started."""
    if (run_dir(run) / wd.RESULTS).exists():
      return 'elsewhere'
    error = mtime(run_dir(run) / wd.ERROR)
    return 'failed' if error is not None and error != old_errors[run.name] else None

  def one(run: Run, cpus: set[int] | None, claim: claims.Claim | None) -> str:
    """Runs `run` (under `claim`; None: a follower of a multi-process run) -> its status."""
    if leader:
      (run_dir(run) / wd.ERROR).unlink(missing_ok=True)
    config = f'{path}:{run.arg}' if run.arg else path
    proc = processes.launch(processes.command(config, run.overrides, run_dir(run), run_flags),
                            cpus, root, stop=None if claim is None else claim.lost.is_set)
    if claim is not None and claim.lost.is_set():
      return 'lost'
    if proc.returncode != 0:
      tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-60:])
      if not leader:  # process 0 writes error.log; a follower's own output goes to its log
        log(f'{run.name} failed in this process:\n{tail}')
        return 'failed'
      wd.write_text(run_dir(run) / wd.ERROR, tail + '\n')
      old_errors[run.name] = mtime(run_dir(run) / wd.ERROR)  # ours: not a peer's
      return 'failed'
    return 'done'

  status = {r.name: 'skipped' for r in runs if r not in todo}
  for name in status:
    log(f'[{len(status)}/{len(runs)}] {name}: skipped')
  from attention_zoo.sweeps import seed_groups  # pylint: disable=import-outside-toplevel
  scheduler = Scheduler(seed_groups.plan(spec, todo, sweep_dir) if seed_parallel else todo)
  waiting = _Waiting(poll_s)
  held: set[str] = set()  # the runs we said another process holds
  lock = threading.Lock()

  def attempt(run: Run, cpus: set[int] | None) -> str | None:
    """The run's status, or None while another process holds it."""
    if (result := by_peer(run)) is not None:
      return result
    if not leader:  # process 0 of the run claims it; this one joins it
      return one(run, cpus, None)
    claim = claims.try_claim(run_dir(run), claim_timeout_s)
    if claim is None:
      return None
    with claim:
      if (result := by_peer(run)) is not None:  # finished between our look and our claim
        return result
      if claim.took_over is not None:
        owner = claim.took_over
        log(f'{run.name}: took over the claim of {owner.get("host")}:{owner.get("pid")}')
      start = time.perf_counter()
      result = one(run, cpus, claim)
      scheduler.finished(run, time.perf_counter() - start)
      return result

  def worker(cpus: set[int] | None):
    while (run := scheduler.next() or waiting.next()) is not None:
      if isinstance(run, seed_groups.Group):  # its runs in one process, under all their claims
        results = seed_groups.attempt(
            run, cpus, spec=spec, sweep_dir=sweep_dir, root=root, claim_timeout_s=claim_timeout_s,
            by_peer=by_peer, log=log, finished=scheduler.finished)
        if results is None:
          waiting.add(run)
        for name, result in (results or {}).items():
          record(name, result)
        continue
      result = attempt(run, cpus)
      if result is None:
        if run.name not in held:
          held.add(run.name)
          found = claims.read(run_dir(run) / claims.CLAIM)
          who = f'{found[0].get("host")}:{found[0].get("pid")}' if found and found[0] else '?'
          log(f'{run.name}: held by {who}; waiting for it to finish or to go stale')
        waiting.add(run)
        continue
      record(run.name, result)

  def record(name: str, result: str):
    with lock:
      status[name] = result
      extra = {'failed': f' (see {sweep_dir / wd.RUNS / name / wd.ERROR})',
               'elsewhere': ' (by another sweep process)'}.get(result, '')
      log(f'[{len(status)}/{len(runs)}] {name}: {result}{extra}')

  lanes = (processes.cpu_lanes(parallel) if pin else None) or [None] * max(1, parallel)
  with concurrent.futures.ThreadPoolExecutor(len(lanes)) as pool:
    for future in [pool.submit(worker, cpus) for cpus in lanes]:
      future.result()  # re-raises what stopped a worker
  return {r.name: status[r.name] for r in runs}
