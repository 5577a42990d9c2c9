"""The loop's seed axis: S >= 1 runs of one config that differ only in their seed, as one program.

With S = 1 (a single run) nothing carries a seed axis. With S > 1 every array of the TrainState
gets a leading axis: params [S, ...], optimizer state [S, ...], RNG keys [S], step [S]; batches
are [S, B, ...] and metrics [S]. Seed s computes what its own run computes:
  - init from nnx.Rngs(key(seed)), the keys of build.build_model's nnx.Rngs(seed);
  - its own data order: batching.train_batches(task, train, seed).batch(step);
  - its own dropout: keys fold_in(key(seed), step), as steps.make_train_step draws them.
The train step is the single run's steps.make_train_step, run over the seed axis by SEED_MAPS:
  'map'   jax.lax.map: the seeds one after the other inside one program, each at the single
          run's shapes: one compile and one dispatch per step for the group, the arithmetic of S
          runs. The CPU default, where XLA runs a vmapped step slower than S separate ones
          (`python -m experiments.bench train --seed_maps` measures the three mappings).
  'vmap'  jax.vmap: one batched program; the default on GPU and TPU, where small models leave
          the device idle between kernels.
and PROCESSES, one process per seed, is not a mapping of one program: experiments.main (and a
sweep) start one run per seed.
The programs differ from a single run's, so seeds match their separate runs to float tolerance,
not bitwise (tests/test_train_seeds.py states it).

Limits, checked by `why_not_together`: padded batches only (with bucketing the seeds' batches of
one step have different shapes), no hook that acts per seed (e.g. a start phase, which each seed
would end at its own step); and one process (the loop checks it).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from attention_zoo import build
from attention_zoo.data.base import Task
from attention_zoo.train import batching, hooks, steps

SEED = 'seed'  # the one config key in which the runs of a group differ
PROCESSES = 'processes'


def _mapped(step: Callable[..., Any]) -> Callable[..., Any]:
  """step over the leading seed axis of every argument, one seed after the other (lax.map)."""
  return lambda *args: jax.lax.map(lambda one: step(*one), args)


SEED_MAPS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    'map': _mapped, 'vmap': jax.vmap}
DEFAULT_BY_PLATFORM = {'cpu': 'map'}  # every other platform: 'vmap'
CHOICES = (*SEED_MAPS, PROCESSES)


def default_seed_map(platform: str | None = None) -> str:
  """The seed map of one program on `platform` (default: jax.default_backend())."""
  return DEFAULT_BY_PLATFORM.get(platform or jax.default_backend(), 'vmap')


def apart_by_default(model_name: str, platform: str | None = None) -> bool:
  """Whether a sweep (or experiments.main --seeds) trains the seeds of `model_name` one process
  each (PROCESSES) when no seed map is asked for: a model registered to train its seeds apart
  on `platform` (models.registry.seeds_apart_on: the conv nets on CPU). platform None: that of
  a fresh process (`platform_of_a_fresh_process`), asked only for such a model."""
  from attention_zoo.models import registry  # pylint: disable=import-outside-toplevel
  apart_on = registry.seeds_apart_on(model_name)
  return bool(apart_on) and (platform or platform_of_a_fresh_process()) in apart_on


@functools.cache
def platform_of_a_fresh_process() -> str:
  """jax.default_backend() as a child process sees it. A launcher asks a child rather than
  initialize a backend itself: on a GPU that would hold memory its runs need."""
  out = subprocess.run([sys.executable, '-c', 'import jax; print(jax.default_backend())'],
                       capture_output=True, text=True, check=True)
  return out.stdout.split()[-1]


def check_seed_map(name: str) -> str:
  if name not in CHOICES:
    raise ValueError(f'unknown seed map {name!r}; valid: {list(CHOICES)}')
  return name


def one_program(how: str) -> str:
  """`how`, checked to be a seed map of one program (SEED_MAPS)."""
  if how not in SEED_MAPS:
    raise ValueError(f'seed map {how!r} does not run in one program; valid: {list(SEED_MAPS)}')
  return how


def why_not_together(config: ml_collections.ConfigDict) -> str | None:
  """Why seeds of `config` cannot train as one program (None: they can)."""
  if config.train.get('batching', 'padded') != 'padded':
    return (f"train.batching={config.train.batching!r}: the seeds' batches of one step have "
            "different bucket shapes; only 'padded' batches train as one program")
  blockers = hooks.seed_group_blockers(config)
  return '; '.join(blockers) if blockers else None


class SeedAxis:
  """How the loop's state, batches and steps carry S seeds (none for S = 1)."""

  def __init__(self, seeds: Sequence[int], mesh, how: str | None = None):
    self.seeds = list(seeds)
    self.size = len(self.seeds)
    self.mesh = mesh
    self.how = None if self.size == 1 else one_program(how or default_seed_map())

  def init(self, config: ml_collections.ConfigDict, task: Task, tx
           ) -> tuple[nnx.GraphDef, nnx.GraphDef, steps.TrainState]:
    """-> (train graphdef, eval graphdef, TrainState at step 0, replicated over the mesh)."""
    rep = batching.replicated(self.mesh)
    if self.size == 1:
      g_train, g_eval, state = steps.init_state(build.build_model(config, task), tx,
                                                jax.local_devices()[0])
      return g_train, g_eval, batching.replicate(state, self.mesh)
    graphdefs = {}

    def init(key: jax.Array) -> steps.TrainState:
      model = build.build_model(config, task, nnx.Rngs(key))
      model.eval()
      graphdefs['eval'] = steps.split_model(model)[0]
      model.train()
      graphdefs['train'], params, rngs, other = steps.split_model(model)
      return steps.TrainState(jnp.asarray(0, jnp.int32), params, tx.init(params), rngs, other)

    state = jax.jit(jax.vmap(init), out_shardings=rep)(self.keys())
    return graphdefs['train'], graphdefs['eval'], state

  def keys(self) -> jax.Array:
    """key(seed) of each seed: [S], or one key for S = 1."""
    keys = [jax.random.key(s) for s in self.seeds]
    return batching.replicate(keys[0] if self.size == 1 else jnp.stack(keys), self.mesh)

  def over(self, step: Callable[..., Any]) -> Callable[..., Any]:
    """The single run's `step` over the seed axis."""
    return step if self.size == 1 else SEED_MAPS[self.how](step)

  def to_device(self, host: Sequence[dict[str, np.ndarray]]) -> dict[str, jax.Array]:
    """One host batch per seed -> the step's batch ([S, B, ...] for S > 1), B split over the
    mesh's 'data' axis where it divides."""
    if self.size == 1:
      return batching.to_device(host[0], self.mesh)
    stacked = {k: np.stack([b[k] for b in host]) for k in host[0]}
    size = len(next(iter(stacked.values()))[0])
    spec = P(None, 'data') if size % self.mesh.size == 0 else P()
    return jax.device_put(stacked, NamedSharding(self.mesh, spec))

  def unstack(self, tree: Any) -> list[Any]:
    """A tree with the seed axis -> one tree per seed."""
    return [tree] if self.size == 1 else _unstack(tree)

  def stack(self, trees: Sequence[Any]) -> Any:
    if self.size == 1:
      return batching.replicate(trees[0], self.mesh)
    return jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *trees),
                          batching.replicated(self.mesh))

  def finite(self, params: Any) -> list[bool]:
    """Whether each seed's params are all finite (the NaN guard)."""
    if self.size == 1:
      return [bool(jax.device_get(steps.all_finite(params)))]
    return [bool(f) for f in jax.device_get(_all_finite(params))]

  def seed_rows(self, rows: list[tuple[int, dict]], i: int) -> list[tuple[int, dict]]:
    """Host metric rows (step, {name: value or [S]}) -> those of seed i."""
    if self.size == 1:
      return rows
    return [(s, {k: v[i] for k, v in m.items()}) for s, m in rows]


@jax.jit
def _unstack(tree: Any) -> list[Any]:
  """A tree [S, ...] -> S trees (one dispatch for every leaf of every seed)."""
  size = jax.tree.leaves(tree)[0].shape[0]
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(size)]


_all_finite = jax.jit(jax.vmap(steps.all_finite))  # params [S, ...] -> bool [S]
