"""Vocab: the one way from token ids to text (samples, BLEU) and to per-token labels (plot axes)."""

import types

import numpy as np
import pytest

from attention_zoo.analysis import maps
from attention_zoo.data.base import Task
from attention_zoo.data.pairs import encode_pair
from attention_zoo.data.vocab import BYTE_TOKENS, Vocab, tokenize
from attention_zoo.specials import BOS, EOS, PAD, UNK
from attention_zoo.train import evaluation


@pytest.mark.parametrize('level,text', [('char', 'ab ba'), ('word', 'the cat sat'),
                                        ('byte', 'olá, 世界\n')])
def test_every_level_round_trips(level, text):
  v = Vocab.utf8() if level == 'byte' else Vocab.from_texts([text], level=level)
  ids = v.encode(text)
  assert v.decode([BOS] + ids + [EOS, 5, PAD]) == text       # BOS skipped, nothing after EOS
  assert v.decode(np.array(ids + [PAD, PAD], np.int32)) == text
  assert Vocab.from_json(v.to_json()).tokens == v.tokens


def test_byte_vocab_reads_bytes_and_builds_from_texts():
  b = Vocab.utf8()
  assert len(b) == 4 + 256 and b.encode('a') == [4 + ord('a')]
  assert b.encode('é'.encode('utf-8')) == b.encode('é') == [4 + 0xc3, 4 + 0xa9]
  assert b.decode(b.encode('é')[:1]) == '\ufffd'                 # a cut UTF-8 sequence
  assert b.decode([UNK] + b.encode('hi')) == 'hi'                # UNK has no byte
  small = Vocab.from_texts(['olá', 'ola'], level='byte')          # a subset of the bytes
  assert small.decode(small.encode('lá')) == 'lá' and len(small) == 4 + 5  # o l a c3 a1
  with pytest.raises(ValueError, match='BYTE_TOKENS'):
    Vocab(['ab'], level='byte')
  with pytest.raises(ValueError, match="unknown tokenization 'bytes'"):
    tokenize('x', 'bytes')


def test_labels_one_string_per_token():
  b = Vocab.utf8()
  assert b.labels(b.encode('a b\n') + [PAD]) == ['a', ' ', 'b', '<0x0a>']
  assert len(set(BYTE_TOKENS)) == 256
  w = Vocab(['the', 'cat'], level='word')
  ids = [BOS, 4, 3, 5, EOS, 4, PAD]
  assert w.labels(ids) == ['<bos>', 'the', '<unk>', 'cat', '<eos>', 'the']
  assert w.labels(ids, stop_at_eos=True) == ['<bos>', 'the', '<unk>', 'cat', '<eos>']
  assert w.decode(ids) == 'the <unk> cat'


def test_task_takes_vocab_objects():
  v = Vocab('ab')
  task = Task(name='t', kind='seq2seq', splits={}, model_dims={}, vocab=v)
  assert task.source_vocab is v                                    # default: the target's
  with pytest.raises(TypeError, match='vocab must be a Vocab'):
    Task(name='t', kind='lm', splits={}, model_dims={}, vocab=['<pad>', 'a'])
  with pytest.raises(ValueError, match='needs a vocab'):
    Task(name='t', kind='seq2seq', splits={}, model_dims={})


def _byte_task():
  """A byte-level translation task in memory (pt -> en), as ted_hrlr_translate encodes it."""
  b = Vocab.utf8()
  pairs = [('olá mundo', 'hello world'), ('até já', 'see you')]
  rows = [encode_pair(tokenize(s, 'byte'), tokenize(t, 'byte'), b, b, max_source_len=12,
                      max_target_len=16) for s, t in pairs]
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  task = Task(name='bytes', kind='seq2seq', splits={'validation': rows}, model_dims={}, vocab=b,
              max_target_len=16)
  return task, batch, pairs


def test_byte_translation_samples_and_plot_axes_are_text():
  task, batch, pairs = _byte_task()
  ev = evaluation.Evaluator(task, lambda *a: None, None, None, types.SimpleNamespace(num_samples=2))
  samples = ev._samples(batch['target_out'], batch)  # pylint: disable=protected-access
  assert samples == [{'source': s, 'target': t, 'prediction': t} for s, t in pairs]
  labels = maps.axis_labels(task, batch, 0)
  assert labels[12] == ('source', list('ol') + ['<0xc3>', '<0xa1>'] + list(' mundo'))
  assert labels[16] == ('target', list('hello world') + ['<eos>'])


def test_evaluation_and_plots_use_vocab_decode_and_labels(monkeypatch):
  task, batch, _ = _byte_task()
  monkeypatch.setattr(Vocab, 'decode', lambda self, ids, **kw: 'via Vocab.decode')
  monkeypatch.setattr(Vocab, 'labels', lambda self, ids, **kw: ['via Vocab.labels'])
  ev = evaluation.Evaluator(task, lambda *a: None, None, None, types.SimpleNamespace(num_samples=1))
  assert ev._samples(batch['target_out'], batch) == [  # pylint: disable=protected-access
      dict.fromkeys(('source', 'target', 'prediction'), 'via Vocab.decode')]
  assert maps.axis_labels(task, batch, 0) == {12: ('source', ['via Vocab.labels']),
                                              16: ('target', ['via Vocab.labels'])}
