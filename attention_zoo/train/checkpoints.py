"""orbax checkpoints of a run: params, optimizer state and other model state as separate items.

Layout: <workdir>/checkpoints/<step>/{params, opt_state, other, meta}. `params` and `other` are
enough to rebuild the model for analysis (see `load_params`); `meta` is JSON:
{'step': ..., 'fingerprints': {item: {leaf path: fingerprint}}}.
`average_params` gives the mean parameters of several checkpoints (eval.average_checkpoints).

Integrity. orbax writes a step into a temporary folder (<step>.orbax-checkpoint-tmp) and renames
it when complete, so a run killed mid-save leaves no half-written step; `Checkpoints` removes such
leftovers when it opens the folder. A step damaged later is another matter: a truncated or
missing file fails to read, but a changed byte in a compressed chunk can read back as wrong
numbers with no error. So every save records a fingerprint of each leaf (`fingerprint`), and every
restore checks the items it reads against them (CorruptCheckpointError, naming the step, the folder
and the leaf). `Checkpoints.restore_latest` resumes from the newest step that reads back intact;
the damaged newer steps are moved aside to <step>.corrupt, with a warning naming them and the step
used. When no step reads back, it raises naming the folder (and leaves the files alone) rather
than start over. `load_params` (analysis: read-only) falls back the same way to the newest step
that reads back, naming the damaged ones in a warning but moving nothing; a step asked for by
number that does not read back raises CorruptCheckpointError naming it.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

CORRUPT = '.corrupt'  # suffix of a damaged step moved aside: checkpoints/<step>.corrupt


class CorruptCheckpointError(ValueError):
  """A checkpoint step that does not read back as saved (or no step that does)."""


def _has_leaves(tree: Any) -> bool:
  return bool(jax.tree.leaves(tree))


def _words(x: jax.Array) -> jax.Array:
  """The bits of `x` as uint32 words [N]: an element narrower than 32 bits is one word (zero-
  extended), a 64-bit one two; a PRNG key array gives its key data."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).ravel()
  size = jnp.dtype(x.dtype).itemsize
  if size < 4:
    return jax.lax.bitcast_convert_type(x, jnp.dtype(f'uint{8 * size}')).astype(jnp.uint32).ravel()
  return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()


def fingerprint(x: jax.Array) -> jax.Array:
  """uint32 [] fingerprint of an array's bits: f = sum_i (2i + 1) b_i mod 2^32 over its uint32
  words b_i. Each weight is odd, hence invertible mod 2^32, so a change of any one word always
  changes f (several changes collide with probability about 2^-32), and moving a word changes
  its weight. It catches damage, not tampering (it is no cryptographic hash)."""
  words = _words(jnp.asarray(x))  # [N] uint32
  weights = 2 * jnp.arange(words.size, dtype=jnp.uint32) + 1  # [N], odd
  return jnp.sum(words * weights, dtype=jnp.uint32)  # uint32 arithmetic wraps: mod 2^32


_tree_fingerprints = jax.jit(lambda tree: jax.tree.map(fingerprint, tree))


def fingerprints(tree: Any) -> dict[str, int]:
  """{leaf path (jax.tree_util.keystr): fingerprint} of every leaf of `tree`."""
  prints = jax.device_get(_tree_fingerprints(tree))
  return {jax.tree_util.keystr(path): int(f)
          for path, f in jax.tree_util.tree_flatten_with_path(prints)[0]}


def _check(directory: pathlib.Path, step: int, item: str, tree: Any,
           recorded: dict[str, int]) -> None:
  """CorruptCheckpointError naming the first leaf of `tree` whose fingerprint differs."""
  for path, value in fingerprints(tree).items():
    if recorded.get(path) != value:
      raise CorruptCheckpointError(
          f'checkpoint step {step} ({directory / str(step)}) is corrupt: {item}{path} does not '
          f'read back as saved (fingerprint {value}, saved {recorded.get(path)})')


def _restore(manager: ocp.CheckpointManager, step: int, **trees) -> tuple[Any, ...]:
  """The items `trees` names of checkpoint `step`, restored onto those trees (abstract or
  concrete, keeping their types and shardings) and checked against the fingerprints saved with
  them (a checkpoint saved without fingerprints is not checked); a tree without leaves comes back
  as given."""
  items = {k: ocp.args.StandardRestore(t) for k, t in trees.items() if _has_leaves(t)}
  out = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **items))
  recorded = (out['meta'] or {}).get('fingerprints')
  if recorded is not None:
    for k in items:
      _check(pathlib.Path(manager.directory), step, k, out[k], recorded.get(k, {}))
  return tuple(out[k] if k in items else t for k, t in trees.items())


def _newest_intact(manager: ocp.CheckpointManager, directory: pathlib.Path, **trees
                   ) -> tuple[int | None, tuple[Any, ...], list[tuple[int, Exception]]]:
  """-> (step, its `trees` restored, [(step, error)] of the newer steps that failed) for the
  newest step that reads back intact (`_restore`); (None, (), every step's error) when none does.
  Each failure is logged as a warning naming the step and its folder. Reads only."""
  failed: list[tuple[int, Exception]] = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return step, _restore(manager, step, **trees), failed
    except Exception as e:  # pylint: disable=broad-except  # orbax / tensorstore: many kinds
      logging.warning('checkpoint step %d (%s) does not read back: %s: %s', step,
                      directory / str(step), type(e).__name__, str(e)[:500])
      failed.append((step, e))
  return None, (), failed


def _none_intact(directory: pathlib.Path, failed: list[tuple[int, Exception]],
                 advice: str) -> CorruptCheckpointError:
  detail = '; '.join(f'step {s} ({directory / str(s)}): {type(e).__name__}: {str(e)[:300]}'
                     for s, e in failed)
  return CorruptCheckpointError(f'no checkpoint in {directory} reads back ({detail}). {advice}')


class Checkpoints:
  """Saves and restores (params, opt_state, other) of a TrainState; keeps the last `keep`."""

  def __init__(self, directory: str | pathlib.Path, keep: int):
    self.directory = pathlib.Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=max(keep, 1), create=True, cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, params, opt_state, other) -> None:
    trees = dict(params=params, opt_state=opt_state, other=other)
    trees = {k: t for k, t in trees.items() if k != 'other' or _has_leaves(t)}
    meta = {'step': int(step), 'fingerprints': {k: fingerprints(t) for k, t in trees.items()}}
    items = {k: ocp.args.StandardSave(t) for k, t in trees.items()}
    self.manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **items))

  def restore(self, step: int, params, opt_state, other) -> tuple[Any, Any, Any]:
    """Restores onto abstract (or concrete) trees, keeping their types and shardings;
    CorruptCheckpointError (or orbax's error) when the step does not read back as saved."""
    return _restore(self.manager, step, params=params, opt_state=opt_state, other=other)

  def restore_latest(self, params, opt_state, other) -> tuple[int, Any, Any, Any] | None:
    """-> (step, params, opt_state, other) of the newest step that reads back intact (None when
    there are no steps). Newer steps that fail are moved aside to <step>.corrupt, with a
    warning naming each and the step used instead. CorruptCheckpointError, naming the folder
    and every step's error, when none reads back (nothing is moved then: a run never restarts
    from scratch on its own)."""
    step, trees, failed = _newest_intact(self.manager, self.directory, params=params,
                                         opt_state=opt_state, other=other)
    if step is None:
      if failed:
        raise _none_intact(self.directory, failed, 'Restore a good copy of the folder, or start '
                           'over with fresh=True (--fresh).')
      return None
    if failed:
      self._set_aside([s for s, _ in failed])
      logging.warning('resuming from checkpoint step %d (%s), the newest intact one, instead '
                      'of step(s) %s, which do not read back (moved to %s)', step,
                      self.directory / str(step), [s for s, _ in failed],
                      [str(self.directory / f'{s}{CORRUPT}') for s, _ in failed])
    return (step, *trees)

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged steps to <step>.corrupt (orbax then no longer lists them), so that the
    run can save those steps again and a later average never reads them."""
    if jax.process_index() == 0:
      for step in steps:
        target = self.directory / f'{step}{CORRUPT}'
        n = 1
        while target.exists():
          n += 1
          target = self.directory / f'{step}{CORRUPT}{n}'
        (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('attention_zoo checkpoints set aside')
    self.manager.reload()

  def close(self) -> None:
    self.manager.close()


def load_params(checkpoint_dir: str | pathlib.Path, params, other=None, *,
                step: int | None = None) -> tuple[Any, Any]:
  """-> (params, other) of checkpoint `step` of a run's checkpoints/, never the optimizer state;
  restored onto the trees `params` and `other` (abstract or concrete, e.g.
  nnx.state(nnx.eval_shape(lambda: build_model(config, task)), nnx.Param)). `other` (the model's
  other state, e.g. BatchNorm statistics) is returned as given when it is None or has no leaves.

  step None: the newest step that reads back intact, with a warning naming the newer ones that do
  not (left where they are: this only reads); CorruptCheckpointError naming every step when none
  does. A `step` given that does not read back: CorruptCheckpointError naming it.
  """
  checkpoint_dir = pathlib.Path(checkpoint_dir).absolute()
  with ocp.CheckpointManager(checkpoint_dir) as manager:
    available = sorted(manager.all_steps())
    if step is None and available:
      got, trees, failed = _newest_intact(manager, checkpoint_dir, params=params, other=other)
      if got is None:
        raise _none_intact(checkpoint_dir, failed, 'Nothing was changed; restore a good copy '
                           'of the folder.')
      if failed:
        logging.warning('loaded checkpoint step %d (%s), the newest that reads back; step(s) %s '
                        'do not (left in place)', got, checkpoint_dir / str(got),
                        [s for s, _ in failed])
      return trees
    if step is None or step not in available:
      raise FileNotFoundError(f'no checkpoint for step {step} in {checkpoint_dir}; '
                              f'steps: {available}')
    try:
      return _restore(manager, step, params=params, other=other)
    except CorruptCheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # orbax / tensorstore: many kinds
      raise CorruptCheckpointError(f'checkpoint step {step} ({checkpoint_dir / str(step)}) does '
                                   f'not read back: {type(e).__name__}: {str(e)[:500]}') from e


def saved_steps(checkpoint_dir: str | pathlib.Path) -> list[int]:
  """The steps of the checkpoints in a run's checkpoints/, ascending."""
  with ocp.CheckpointManager(pathlib.Path(checkpoint_dir).absolute()) as manager:
    return sorted(manager.all_steps())


def average_params(checkpoint_dir: str | pathlib.Path, params, steps: list[int]) -> Any:
  """The mean of the params of checkpoints `steps`: theta = (1/N) sum_i theta_i, leaf by leaf.

  Checkpoint averaging of the final model (Vaswani et al. 2017, sec. 6.1: the last 5 checkpoints,
  written every 10 minutes, for the base models). Restored onto `params` (abstract or concrete);
  the sum runs in float32 (then cast back); a leaf that is not floating point is taken from the
  last step. Only params are averaged: the caller keeps the other model state (e.g. BatchNorm
  statistics) of the last step.
  """
  if not steps:
    raise ValueError(f'average_params: no checkpoint steps given for {checkpoint_dir}')
  trees = [load_params(checkpoint_dir, params, step=s)[0] for s in steps]

  def mean(*leaves):
    if not jnp.issubdtype(leaves[-1].dtype, jnp.floating):
      return leaves[-1]
    total = sum(leaf.astype(jnp.float32) for leaf in leaves)
    return (total / len(leaves)).astype(leaves[-1].dtype)

  return jax.tree.map(mean, *trees)
