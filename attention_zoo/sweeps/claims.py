"""Claims: several sweep processes on one sweep folder (one host or many) never run a run twice.

A process runs a run only while it holds the run's claim, runs/<name>/claim.json:
  {"host", "pid", "token", "time"}   the owner (a sweep process), and when it claimed the run
The claim is created atomically (os.open with O_CREAT | O_EXCL: of two processes, one succeeds;
atomic on local file systems and on NFS v3 and later). Its modification time is the heartbeat:
the owner touches the file every `timeout_s / 4` (at most every 30 s) while the run goes on.

A claim is stale, and taken over, when its owner is dead:
  - at once when the owner is on this host and its pid no longer exists (a pid reused by another
    process looks alive: the heartbeat rule then applies);
  - when its heartbeat is older than `timeout_s` (an owner on another host, or a hung one).
A takeover happens under runs/<name>/claim.json.takeover (also O_EXCL; held for milliseconds), so
of two processes taking over one stale claim, one wins. An owner whose claim was taken over
(it was too slow to beat) learns it at its next heartbeat and stops its run (`Claim.lost`).
The owner deletes the claim when the run ends (results.json, or error.log when it failed).

Every claim appends one line to runs/<name>/claims.jsonl, the run's history:
  {"host", "pid", "token", "time", "checkpoint_step" (the step the run resumes from, 0: none),
   "took_over": the stale claim it replaced, or null}

Clocks: the heartbeat age is this host's clock minus the file's modification time (set by the
file server on a shared file system), so hosts must keep their clocks roughly in step (NTP);
choose a timeout of minutes, not seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import threading
import time
import uuid
from typing import Any, Iterator

from absl import logging

CLAIM = 'claim.json'
TAKEOVER = '.takeover'  # suffix of the lock a takeover holds
HISTORY = 'claims.jsonl'
DEFAULT_TIMEOUT_S = 300.0  # 5 minutes without a heartbeat: the owner is taken for dead
MAX_BEAT_S = 30.0


def owner() -> dict[str, Any]:
  """This process as a claim's owner (a fresh token per claim)."""
  return {'host': socket.gethostname(), 'pid': os.getpid(), 'token': uuid.uuid4().hex,
          'time': time.time()}


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, another user's
    return True
  return True


def read(path: pathlib.Path) -> tuple[dict[str, Any] | None, float] | None:
  """(claim content or None when unreadable, mtime) of a claim file; None when it is absent."""
  try:
    mtime = path.stat().st_mtime
    text = path.read_text()
  except FileNotFoundError:
    return None
  try:
    content = json.loads(text)
  except json.JSONDecodeError:  # its creator died between creating and writing it
    content = None
  return (content if isinstance(content, dict) else None), mtime


def stale_reason(content: dict[str, Any] | None, mtime: float, timeout_s: float,
                 now: float | None = None) -> str | None:
  """Why a claim's owner is taken for dead, or None when it is taken for alive."""
  now = time.time() if now is None else now
  pid = content.get('pid') if content else None
  if (isinstance(pid, int) and pid > 0 and content.get('host') == socket.gethostname()
      and not _pid_alive(pid)):
    return f'its owner, pid {pid} on this host, is gone'
  if now - mtime > timeout_s:
    return f'no heartbeat for {now - mtime:.0f} s (timeout {timeout_s:g} s)'
  return None


def _create_exclusive(path: pathlib.Path, text: str) -> bool:
  """Creates `path` holding `text`, only if it does not exist -> whether it did."""
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  return True


def _checkpoint_step(run_dir: pathlib.Path) -> int:
  ckpts = run_dir / 'checkpoints'  # = attention_zoo.train.workdir.CHECKPOINTS
  steps = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []
  return max(steps, default=0)


class Claim:
  """A held claim file: a heartbeat thread touches it; `lost` is set when another process has
  taken it over; `release()` (or leaving the `with` block) stops the heartbeat and deletes it."""

  def __init__(self, path: pathlib.Path, content: dict[str, Any], timeout_s: float,
               took_over: dict[str, Any] | None = None):
    self.path = path
    self.content = content
    self.took_over = took_over  # the stale claim this one replaced ({}: unreadable), or None
    self.lost = threading.Event()
    self._stop = threading.Event()
    self._beat_s = min(timeout_s / 4, MAX_BEAT_S)
    self._thread = threading.Thread(target=self._beat, daemon=True, name=f'heartbeat {path}')
    self._thread.start()

  def held(self) -> bool:
    """Whether the file is still this claim (read from it)."""
    found = read(self.path)
    return bool(found and found[0] and found[0].get('token') == self.content['token'])

  def _beat(self):
    while not self._stop.wait(self._beat_s):
      if not self.held():
        logging.warning('%s was taken over by another process', self.path)
        self.lost.set()
        return
      try:
        os.utime(self.path)
      except FileNotFoundError:
        pass  # deleted since held(): the next beat sees that it is not ours

  def release(self):
    self._stop.set()
    self._thread.join()
    if not self.lost.is_set() and self.held():
      self.path.unlink(missing_ok=True)

  def __enter__(self) -> Claim:
    return self

  def __exit__(self, *exc):
    self.release()


def acquire(path: str | os.PathLike, timeout_s: float = DEFAULT_TIMEOUT_S) -> Claim | None:
  """Claims the file `path` (its folder must exist) -> the Claim, or None while a live owner
  holds it. A stale claim is taken over (`Claim.took_over`: the content it replaced, {} when
  that was unreadable; None for a fresh claim)."""
  path = pathlib.Path(path)
  content = owner()
  text = json.dumps(content, sort_keys=True) + '\n'
  took_over = None
  for _ in range(3):  # a claim released between our two looks: try again
    if _create_exclusive(path, text):
      break
    found = read(path)
    if found is None:
      continue
    reason = stale_reason(*found, timeout_s)
    if reason is None:
      return None
    took_over = _take_over(path, found, text, timeout_s)
    if took_over is None:
      return None
    logging.warning('took over %s: %s (it was %s)', path, reason, found[0])
    break
  else:
    return None
  return Claim(path, content, timeout_s, took_over)


def _take_over(path: pathlib.Path, found: tuple[dict[str, Any] | None, float], text: str,
               timeout_s: float) -> dict[str, Any] | None:
  """Replaces the stale claim `found` by `text` under the takeover lock -> the replaced claim
  ({} when it was unreadable), or None when another process got there first."""
  lock = path.with_name(path.name + TAKEOVER)
  if not _create_exclusive(lock, text):
    try:  # a taker that died inside its few milliseconds under the lock
      if time.time() - lock.stat().st_mtime > timeout_s:
        lock.unlink(missing_ok=True)
    except FileNotFoundError:
      pass
    return None
  try:
    now = read(path)
    if now is None or now[0] != found[0] or stale_reason(*now, timeout_s) is None:
      return None  # released, or taken over / refreshed since we looked
    tmp = path.with_name(f'{path.name}.{socket.gethostname()}.{os.getpid()}.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)
    return found[0] or {}
  finally:
    lock.unlink(missing_ok=True)


def try_claim(run_dir: str | os.PathLike, timeout_s: float = DEFAULT_TIMEOUT_S) -> Claim | None:
  """Claims the run of `run_dir` (created) -> the Claim, or None while a live owner holds it;
  appends the claim to the run's history.

  The caller checks again, once it holds the claim, that the run is not finished (a peer may
  have finished it and released the claim in between).
  """
  run_dir = pathlib.Path(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  claim = acquire(run_dir / CLAIM, timeout_s)
  if claim is not None:
    with open(run_dir / HISTORY, 'a') as f:
      f.write(json.dumps({**claim.content, 'checkpoint_step': _checkpoint_step(run_dir),
                          'took_over': claim.took_over}, sort_keys=True) + '\n')
  return claim


@contextlib.contextmanager
def lock(path: str | os.PathLike, timeout_s: float = DEFAULT_TIMEOUT_S,
         poll_s: float = 0.5) -> Iterator[Claim]:
  """Holds the claim file `path` for the `with` block, waiting while a live owner holds it
  (e.g. one sweep process at a time writes the report)."""
  while (claim := acquire(path, timeout_s)) is None:
    time.sleep(poll_s)
  with claim:
    yield claim


def history(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
  """The claims of a run, oldest first (runs/<name>/claims.jsonl)."""
  path = pathlib.Path(run_dir) / HISTORY
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
