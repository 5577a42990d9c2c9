"""bAbI QA 1k (Weston et al. 2015), English v1.2: 20 tasks, story + question -> one answer word.

kind 'qa' (memory networks, Sukhbaatar et al. 2015):
  story [M, W] int32: the last M story sentences before the question, row 0 = the MOST RECENT
                      (so a temporal encoding means "sentences ago"); unused rows are all PAD.
  query [W] int32, label [] int32 = id of the answer token in the shared vocabulary.
With flat=True, kind 'classify' (Transformers): inputs [L] = words of the same M sentences in time
order (oldest first), then BOS, then the query words; PAD after.
Words are lowercased with '.' and '?' removed; an answer such as "n,w" or "apple,milk" is one token.
The vocabulary is built from the train file; a test word missing from it is an error, or, with
unknown_words='unk', becomes UNK (the count is logged). Task 8 needs 'unk': one test answer,
"football,apple,milk", never occurs in its train file.
Splits: validation = num_validation train questions drawn with np.random.default_rng(split_seed)
(100 of the 1,000: the 10% Sukhbaatar et al. 2015 hold out, sec. 4.2); train = the rest;
test = the test file.

Joint training (task_id=0, Sukhbaatar et al. 2015, sec. 4.2 and 5): the 20 tasks at once, one
vocabulary from the 20 train files; train, validation and test are the unions of the tasks'
splits (each task's validation drawn as above), in task order; and 20 more splits,
test_task1 .. test_task20, each one task's test questions (views of `test`), so that one run
reports the test error per task (the loop's final evaluation covers every split but train).

Gold alignment (kind 'qa', Task.gold_alignment): the memory slots that hold a question's
supporting facts (`supporting_slots`), where the memory network's hops should land
(Sukhbaatar et al. 2015, fig. 2).
"""

from __future__ import annotations

import functools
import glob
import os
from typing import Any, Mapping, NamedTuple, Sequence

from absl import logging
import numpy as np

from attention_zoo.data import metrics
from attention_zoo.data.base import Alignment, Task
from attention_zoo.specials import BOS
from attention_zoo.data.builder import ArrayBuilder, build, resolve_data_dir
from attention_zoo.data.registry import register_task
from attention_zoo.data.vocab import Vocab


class Question(NamedTuple):
  story: tuple[tuple[str, ...], ...]  # sentences before the question, oldest first
  query: tuple[str, ...]
  answer: str
  supporting: tuple[int, ...]        # line ids of the supporting facts
  story_ids: tuple[int, ...] = ()    # line id of each story sentence (question lines are not in
                                     # the story, so ids and story positions differ)


def _words(text: str) -> tuple[str, ...]:
  return tuple(text.lower().replace('.', ' ').replace('?', ' ').split())


def parse_file(path: str) -> list[Question]:
  """All questions of one bAbI file; a malformed line raises ValueError with file:line."""
  questions, story, ids = [], [], []
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      line = line.rstrip('\n')
      if not line.strip():
        continue
      num, _, text = line.partition(' ')
      if not num.isdigit():
        raise ValueError(f'{path}:{lineno}: expected "<line id> <text>", got {line!r}')
      if int(num) == 1:
        story, ids = [], []
      if '\t' in text:
        parts = text.split('\t')
        if (len(parts) != 3 or not parts[1].strip()
            or not all(s.isdigit() for s in parts[2].split())):
          raise ValueError(f'{path}:{lineno}: a question line needs "question<TAB>answer<TAB>'
                           f'supporting line ids (numbers)", got {line!r}')
        q, a, sup = parts
        questions.append(Question(tuple(story), _words(q), a.strip().lower(),
                                  tuple(int(s) for s in sup.split()), tuple(ids)))
      else:
        story.append(_words(text))
        ids.append(int(num))
  return questions


def task_file(data_dir: str, task_id: int, split: str) -> str:
  found = sorted(glob.glob(os.path.join(data_dir, f'qa{task_id}_*_{split}.txt')))
  if len(found) != 1:
    raise ValueError(f'bAbI: expected one file qa{task_id}_*_{split}.txt in {data_dir}, found '
                     f'{[os.path.basename(p) for p in found]}')
  return found[0]


def load_questions(data_dir: str, task_id: int) -> dict[str, list[Question]]:
  return {s: parse_file(task_file(data_dir, task_id, s)) for s in ('train', 'test')}


def supporting_slots(q: Question, memory_size: int) -> frozenset[int]:
  """The memory slots (story rows of the 'qa' form) holding q's supporting facts.

  The memory holds the last `memory_size` story sentences, the most recent in slot 0: of the n
  sentences kept, the j-th oldest (j = 0, 1, ...) sits in slot n - 1 - j, and a supporting fact
  older than the memory holds is in no slot. Line ids count the question lines too, so a fact is
  found by its line id (q.story_ids), not by its position in the story.
  """
  kept = q.story_ids[-memory_size:] if memory_size > 0 else ()
  return frozenset(len(kept) - 1 - j for j, line in enumerate(kept) if line in q.supporting)


TASK_IDS = tuple(range(1, 21))
JOINT = 0  # task_id of joint training over TASK_IDS


def task_ids(task_id: int) -> tuple[int, ...]:
  """The bAbI tasks of option task_id: (task_id,), or all 20 for JOINT."""
  return TASK_IDS if task_id == JOINT else (task_id,)


def per_task_split(task_id: int) -> str:
  """The name of one task's test split in a joint task."""
  return f'test_task{task_id}'


class Rows(Sequence):
  """Rows [start, stop) of a split, read through it (random access, `read_batch`)."""

  def __init__(self, source, start: int, stop: int):
    self.source, self.start, self.stop = source, start, stop

  def __len__(self) -> int:
    return self.stop - self.start

  def __getitem__(self, index: int):
    if not 0 <= index < len(self):
      raise IndexError(f'index {index} out of range for {len(self)} rows')
    return self.source[self.start + index]

  def read_batch(self, indices):
    return self.source.read_batch(np.asarray(indices, np.int64) + self.start)


def split_questions(tasks: Mapping[int, Mapping[str, list[Question]]], num_validation: int,
                    split_seed: int) -> dict[str, list[Question]]:
  """The questions of each split, in the order the dataset stores them (see the module
  docstring): per task, in task order, validation = num_validation train questions drawn with
  split_seed, train = the rest, test = the test file."""
  splits: dict[str, list[Question]] = {'train': [], 'validation': [], 'test': []}
  for qs in tasks.values():
    order = np.random.default_rng(split_seed).permutation(len(qs['train']))
    val = set(order[:num_validation].tolist())
    splits['train'] += [q for i, q in enumerate(qs['train']) if i not in val]
    splits['validation'] += [q for i, q in enumerate(qs['train']) if i in val]
    splits['test'] += qs['test']
  return splits


def _texts(q: Question, memory_size: int):
  return [w for s in q.story[-memory_size:] for w in s] + list(q.query) + [q.answer]


def _flat_tokens(q: Question, memory_size: int) -> list[str]:
  return [w for s in q.story[-memory_size:] for w in s]


class AzBabi(ArrayBuilder):
  """TFDS builder of one bAbI task (options: task_id, memory_size, sentence_len, flat, ...)."""

  @classmethod
  def feature_spec(cls, o):
    if o['flat']:
      return {'inputs': ((o['max_length'],), np.int32), 'label': ((), np.int32)}
    return {'story': ((o['memory_size'], o['sentence_len']), np.int32),
            'query': ((o['sentence_len'],), np.int32), 'label': ((), np.int32)}

  @classmethod
  def generate(cls, o, manual_dir):
    tasks = {t: load_questions(manual_dir, t) for t in task_ids(o['task_id'])}
    vocab = Vocab(sorted({w for qs in tasks.values() for q in qs['train']
                          for w in _texts(q, len(q.story))}), level='word')
    unknown = 0
    for t, qs in tasks.items():
      for i, q in enumerate(qs['test']):
        missing = [w for w in _texts(q, o['memory_size']) if w not in vocab.tokens]
        if missing and o['unknown_words'] == 'error':
          raise ValueError(f'bAbI {task_file(manual_dir, t, "test")}: question {i + 1} uses words '
                           f'not in the train vocabulary: {sorted(set(missing))}; pass '
                           'unknown_words="unk" to map them to <unk>')
        unknown += len(missing)
    if unknown:
      logging.warning('bAbI task %d: %d test tokens not in the train vocabulary -> <unk>',
                      o['task_id'], unknown)
    unk = o['unknown_words'] == 'unk'
    splits = split_questions(tasks, o['num_validation'], o['split_seed'])
    M, W = o['memory_size'], o['sentence_len']

    def row(words, width, what):
      if len(words) > width:
        raise ValueError(f'bAbI task {o["task_id"]}: {what} {" ".join(words)!r} has {len(words)} '
                         f'words > {width}')
      out = np.zeros(width, np.int32)
      out[:len(words)] = vocab.encode(words, allow_unk=unk)
      return out

    def encode(q: Question):
      label = np.int32(vocab.encode([q.answer], allow_unk=unk)[0])
      if o['flat']:
        ids = row(_flat_tokens(q, M), o['max_length'], 'story')
        n = int((ids != 0).sum())
        tail = [BOS] + vocab.encode(q.query, allow_unk=unk)
        if n + len(tail) > o['max_length']:
          raise ValueError(f'bAbI task {o["task_id"]}: story + query has {n + len(tail)} tokens '
                           f'> max_length={o["max_length"]}')
        ids[n:n + len(tail)] = tail
        return {'inputs': ids, 'label': label}
      story = np.zeros((M, W), np.int32)
      for r, sentence in enumerate(reversed(q.story[-M:])):  # row 0 = most recent
        story[r] = row(sentence, W, 'sentence')
      return {'story': story, 'query': row(q.query, W, 'query'), 'label': label}

    meta = {'vocab': vocab.to_json(), 'test_sizes': [len(qs['test']) for qs in tasks.values()]}
    return {name: map(encode, items) for name, items in splits.items()}, meta


def _data_sizes(data_dir: str, task_id: int, memory_size: int) -> tuple[int, int]:
  """(longest sentence or query in words, longest flat story + BOS + query) over both files."""
  qs = [q for t in task_ids(task_id) for v in load_questions(data_dir, t).values() for q in v]
  width = max(max((len(s) for q in qs for s in q.story[-memory_size:]), default=0),
              max(len(q.query) for q in qs))
  flat = max(len(_flat_tokens(q, memory_size)) + 1 + len(q.query) for q in qs)
  return width, flat


@register_task('babi')
def babi(task_id: int = 1, memory_size: int = 50, sentence_len: int | None = None,
         flat: bool = False, max_length: int | None = None, num_validation: int = 100,
         split_seed: int = 0, unknown_words: str = 'error', data_dir: str | None = None,
         tfds_dir: str | None = None) -> Task:
  """bAbI 1k task `task_id` (1-20), or the 20 at once (task_id=0: joint training, with the
  per-task test splits test_task1..20). sentence_len / max_length None: the longest in the data.
  """
  if task_id != JOINT and task_id not in TASK_IDS:
    raise ValueError(f'task babi: task_id must be in 1..20, or 0 for all 20 (joint training), '
                     f'got {task_id}')
  if unknown_words not in ('error', 'unk'):
    raise ValueError(f"task babi: unknown_words must be 'error' or 'unk', got {unknown_words!r}")
  data_dir = resolve_data_dir(data_dir, 'babi/en', 'babi')
  if sentence_len is None or (flat and max_length is None):
    width, flat_len = _data_sizes(data_dir, task_id, memory_size)
    sentence_len = sentence_len or width
    max_length = max_length or flat_len
  options: dict[str, Any] = dict(task_id=task_id, memory_size=memory_size,
                                 sentence_len=sentence_len, flat=flat,
                                 max_length=max_length if flat else None,
                                 num_validation=num_validation, split_seed=split_seed,
                                 unknown_words=unknown_words)
  splits, meta = build(AzBabi, options, tfds_dir=tfds_dir, manual_dir=data_dir)
  vocab = Vocab.from_json(meta['vocab'])
  test_views = {}  # per-task test split -> its first row in `test`
  if task_id == JOINT:
    ends = np.cumsum(meta['test_sizes']).tolist()
    for t, start, stop in zip(TASK_IDS, [0] + ends[:-1], ends):
      splits[per_task_split(t)] = Rows(splits['test'], start, stop)
      test_views[per_task_split(t)] = start
  dims = {'vocab_size': len(vocab), 'num_classes': len(vocab)}
  if flat:
    return Task(name='babi', kind='classify', splits=splits, model_dims=dims, vocab=vocab,
                metrics_fn=metrics.classify_metrics)
  dims.update(memory_size=memory_size, sentence_len=sentence_len)
  questions = functools.cache(lambda: split_questions(
      {t: load_questions(data_dir, t) for t in task_ids(task_id)}, num_validation, split_seed))
  return Task(name='babi', kind='qa', splits=splits, model_dims=dims, vocab=vocab,
              metrics_fn=metrics.classify_metrics,
              gold_alignment_fn=functools.partial(_gold_alignment, questions, memory_size,
                                                  test_views))


def _gold_alignment(questions, memory_size: int, test_views: Mapping[str, int], split: str,
                    indices: Sequence[int]) -> list[Alignment]:
  """Task.gold_alignment of the 'qa' form: one step (the question) per example, whose possible
  links are the slots of its supporting facts (`supporting_slots`; no sure links: with two or
  three supporting facts no one slot is the answer's source). The questions are parsed again
  from the raw files (`questions()`, split_questions: the stored order); a per-task test split
  of joint training reads its rows of `test`."""
  if split in test_views:
    split, indices = 'test', [test_views[split] + int(i) for i in indices]
  rows = questions()[split]
  return [Alignment(sure=(frozenset(),), possible=(supporting_slots(rows[int(i)], memory_size),))
          for i in indices]
