"""Metrics against hand-written numpy references."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from attention_zoo.data import metrics
from attention_zoo.data.vocab import Vocab


def _logits_for(ids, vocab_size=6):
  return jnp.asarray(np.eye(vocab_size)[np.asarray(ids)] * 5.0)


def test_token_and_sequence_accuracy_ignore_pad():
  targets = np.array([[3, 4, 2, 0], [3, 5, 2, 0]])
  pred = np.array([[3, 4, 2, 5], [3, 4, 2, 1]])            # pads wrong; row 1 has one error
  logits = _logits_for(pred)
  assert float(metrics.token_accuracy(logits, targets)) == pytest.approx(5 / 6)
  assert float(metrics.sequence_accuracy(logits, targets)) == pytest.approx(0.5)
  assert float(metrics.classification_accuracy(_logits_for([1, 2, 3]), np.array([1, 2, 0]))) == (
      pytest.approx(2 / 3))


def test_cross_entropy_perplexity_bits():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 5))
  targets = np.array([[1, 2, 0], [4, 0, 0]])
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  nll = [-math.log(p[b, t, targets[b, t]]) for b in range(2) for t in range(3) if targets[b, t]]
  ce = float(metrics.mean_cross_entropy(jnp.asarray(logits), jnp.asarray(targets)))
  assert ce == pytest.approx(np.mean(nll), rel=1e-5)
  assert metrics.perplexity(math.log(7.0)) == pytest.approx(7.0)
  assert metrics.bits_per_char(math.log(2.0) * 1.5) == pytest.approx(1.5)


def test_generation_metrics_ignore_everything_after_eos():
  target = np.array([[5, 4, 2, 0, 0], [5, 5, 5, 2, 0]])
  pred = np.array([[5, 4, 2, 3, 3], [5, 4, 5, 3, 3]])       # row 0 right then junk; row 1 no EOS
  m = metrics.generation_metrics(pred, target)
  assert m['exact_match'] == 0.5
  assert m['token_accuracy'] == pytest.approx((3 + 2) / 7)
  short = metrics.generation_metrics(pred[:, :3], target)    # shorter decode is padded
  assert short['exact_match'] == 0.5


def test_bleu_and_vocab_roundtrip():
  assert metrics.bleu(['the cat sat on the mat'], ['the cat sat on the mat']) == pytest.approx(100)
  assert metrics.bleu(['a b c d'], ['w x y z']) == pytest.approx(0.0)
  v = Vocab(['the', 'cat'], level='word')
  assert v.encode('cat the') == [5, 4] and v.decode([1, 4, 5, 2, 4]) == 'the cat'
  with pytest.raises(ValueError, match="'dog' is not in the vocabulary"):
    v.encode('the dog')
  assert v.encode('the dog', allow_unk=True) == [4, 3]
  assert Vocab.from_json(v.to_json()).tokens == v.tokens
