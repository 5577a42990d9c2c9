"""The Task contract: what the one training loop needs to know about a task.

A task bundles its dataset splits, its vocabulary, how a batch feeds a model, the loss and the
metrics. The loop never looks at a task's name; it only uses the fields below.

Batch conventions (numpy dicts from grain; PAD = 0, BOS = 1, EOS = 2 in every token vocabulary,
see attention_zoo.specials):
  kind 'seq2seq':  source [B, S] int32, target_in [B, T] int32 (BOS + y),
                   target_out [B, T] int32 (y + EOS)
                   model(source, target_in) -> logits [B, T, V_tgt]
                   model.generate(source, max_len=T, beam_size=k) -> tokens [B, T] (no BOS)
  kind 'classify': inputs [B, ...] (image float32 [B, height, width, C] or tokens
                   int32 [B, L]), label [B]
                   model(inputs) -> logits [B, num_classes]
  kind 'qa':       story [B, M, W] int32, query [B, W] int32, label [B]   (bAbI, memory network)
                   model(story, query) -> logits [B, num_answers]
  kind 'lm':       inputs [B, L] int32, targets [B, L] int32 (inputs shifted by one)
                   model(inputs) -> logits [B, L, V]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from attention_zoo.data.vocab import Vocab


class Alignment(NamedTuple):
  """Where one example's output steps should attend (its gold alignment), in the positions the
  model reads: source positions as stored (after any reversal), or memory slots of a 'qa' task.

  Per output step q (target_out position q of a seq2seq task; a 'qa' task has one step, the
  question, which every hop of a memory network is measured against):
    possible[q]: the positions the output of step q comes from (its gold span; empty: a step
      without gold, e.g. a separator or EOS). Och & Ney (2003)'s P links.
    sure[q]: the subset of possible[q] linked to the output one-to-one (Och & Ney's S links,
      S ⊆ P); empty where no single position is the source (e.g. a month name -> its number).
  """

  sure: tuple[frozenset[int], ...]      # [Q]
  possible: tuple[frozenset[int], ...]  # [Q]


# The batch keys that are fed to the model, in call order, per task kind.
INPUT_KEYS: dict[str, tuple[str, ...]] = {
    'seq2seq': ('source', 'target_in'),
    'classify': ('inputs',),
    'qa': ('story', 'query'),
    'lm': ('inputs',),
}
# The batch key that holds what the logits are scored against, per task kind.
TARGET_KEY: dict[str, str] = {
    'seq2seq': 'target_out', 'classify': 'label', 'qa': 'label', 'lm': 'targets'}


@dataclasses.dataclass
class Task:
  """A task: random-access splits plus everything the loop needs to train and score on them.

  Attributes:
    name: registry name (config.task.name).
    kind: one of INPUT_KEYS ('seq2seq', 'classify', 'qa', 'lm').
    splits: split name ('train', 'validation', 'test') -> random-access source
      (len() and __getitem__ -> dict of numpy arrays, e.g. a tfds data source or a grain source).
    model_dims: sizes a model needs from the data, merged into config.model by the loop
      (e.g. {'src_vocab_size': 40, 'tgt_vocab_size': 13} or {'num_classes': 10, 'in_channels': 1}).
    vocab: the Vocab of the token ids (seq2seq targets, lm, qa, token classify); None for images.
      `vocab.decode(ids)` is their text, `vocab.labels(ids)` one string per token.
    source_vocab: the Vocab of a seq2seq source (default: `vocab`).
    max_target_len: decode length for generation tasks.
    metrics_fn: (logits, batch) -> dict of scalar metrics on one batch (jit-friendly, jnp).
    generation_metrics_fn: (predicted ids [B, T], batch) -> dict of metrics (numpy; seq2seq only).
    metadata: facts about the built data to report with results, JSON-serializable (e.g. the
      <unk> counts per split, the sacrebleu signatures of gen_bleu / gen_chrf).
    gold_alignment_fn: (split, indices) -> [Alignment per example], for tasks that know where
      each output should attend (see `gold_alignment`); None for the others.
  """

  name: str
  kind: str
  splits: Mapping[str, Sequence[Mapping[str, np.ndarray]]]
  model_dims: dict[str, Any]
  vocab: Vocab | None = None
  source_vocab: Vocab | None = None
  max_target_len: int | None = None
  metrics_fn: Callable[..., dict[str, Any]] | None = None
  generation_metrics_fn: Callable[..., dict[str, Any]] | None = None
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
  gold_alignment_fn: Callable[[str, Sequence[int]], list[Alignment]] | None = None

  def __post_init__(self):
    if self.kind not in INPUT_KEYS:
      raise ValueError(f'task {self.name!r}: unknown kind {self.kind!r}; '
                       f'known: {sorted(INPUT_KEYS)}')
    if self.kind == 'seq2seq' and self.vocab is None:
      raise ValueError(f'task {self.name!r}: a seq2seq task needs a vocab to decode its samples')
    if self.source_vocab is None:
      self.source_vocab = self.vocab
    for name in ('vocab', 'source_vocab'):
      value = getattr(self, name)
      if value is not None and not isinstance(value, Vocab):
        raise TypeError(f'task {self.name!r}: {name} must be a Vocab '
                        f'(attention_zoo.data.vocab), not {type(value).__name__}')

  @property
  def input_keys(self) -> tuple[str, ...]:
    return INPUT_KEYS[self.kind]

  @property
  def target_key(self) -> str:
    return TARGET_KEY[self.kind]

  def model_inputs(self, batch: Mapping[str, Any]) -> tuple[Any, ...]:
    """The positional arguments of model(...) for this task's kind."""
    return tuple(batch[k] for k in self.input_keys)

  def gold_alignment(self, split: str, indices: Sequence[int]) -> list[Alignment] | None:
    """The gold alignment of examples `indices` of `split`, one Alignment each (in that order),
    or None: the task knows no gold alignment (only dates, addition and bAbI's memory form do).
    """
    if self.gold_alignment_fn is None:
      return None
    if split not in self.splits:
      raise ValueError(f'task {self.name!r} has no split {split!r}; splits: {sorted(self.splits)}')
    return self.gold_alignment_fn(split, indices)

  def batches(self, split: str, batch_size: int, *, seed: int, shuffle: bool = True,
              num_epochs: int | None = None, drop_remainder: bool = True) -> Iterator[dict]:
    """Batches of `split` through grain (deterministic from `seed`; num_epochs=None repeats)."""
    from attention_zoo.data import pipeline  # local import: grain is only needed when iterating
    if split not in self.splits:
      raise ValueError(f'task {self.name!r} has no split {split!r}; splits: {sorted(self.splits)}')
    return pipeline.batches(self.splits[split], batch_size, seed=seed, shuffle=shuffle,
                            num_epochs=num_epochs, drop_remainder=drop_remainder)
