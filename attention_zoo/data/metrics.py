"""Task metrics. Per-batch jnp metrics (jit-friendly) and numpy metrics of generated ids.

Token metrics ignore PAD targets. Generated ids are compared up to and including the first EOS:
everything a decoder writes after its EOS is ignored.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np
import sacrebleu

from attention_zoo.specials import EOS, PAD


def token_accuracy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Fraction of non-PAD positions where argmax(logits) == target.

  logits [..., V], targets [...].
  """
  mask = targets != PAD
  hit = (jnp.argmax(logits, -1) == targets) & mask
  return hit.sum() / jnp.maximum(mask.sum(), 1)


def sequence_accuracy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Fraction of rows whose every non-PAD position is right (teacher forcing). [B, T, V], [B, T]."""
  ok = (jnp.argmax(logits, -1) == targets) | (targets == PAD)
  return ok.all(axis=-1).mean()


def classification_accuracy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Fraction of argmax(logits [B, classes]) == labels [B]."""
  return (jnp.argmax(logits, -1) == labels).mean()


def classify_metrics(logits: jnp.ndarray, batch) -> dict[str, jnp.ndarray]:
  """metrics_fn of a task with one label per example: logits [B, classes], batch['label'] [B]."""
  return {'accuracy': classification_accuracy(logits, batch['label'])}


def mean_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Mean of -log softmax(logits)[target] over non-PAD positions, in nats."""
  logp = logits - jnp.max(logits, -1, keepdims=True)
  logp = logp - jnp.log(jnp.exp(logp).sum(-1, keepdims=True))
  nll = -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
  mask = targets != PAD
  return (nll * mask).sum() / jnp.maximum(mask.sum(), 1)


def perplexity(mean_ce: float) -> float:
  """exp(mean cross-entropy in nats)."""
  return math.exp(mean_ce)


def bits_per_char(mean_ce):
  """Mean cross-entropy in bits: nats / ln 2 (a float, or a jnp scalar inside jit)."""
  return mean_ce / math.log(2)


def cut_at_eos(ids: np.ndarray) -> np.ndarray:
  """[B, T] ids with every position after the first EOS set to PAD (the EOS itself is kept)."""
  ids = np.asarray(ids)
  after = np.cumsum(ids == EOS, axis=-1) - (ids == EOS) > 0
  return np.where(after, PAD, ids)


def generation_metrics(predicted: np.ndarray, target_out: np.ndarray) -> dict[str, float]:
  """Exact match and token accuracy of decoded ids [B, T'] vs target_out [B, T] (y + EOS + PAD).

  Both are cut after their first EOS. exact_match: the cut rows are equal. token_accuracy: over
  the non-PAD target positions, the fraction where the prediction has the same id.
  """
  pred, tgt = cut_at_eos(predicted), cut_at_eos(target_out)
  width = max(pred.shape[1], tgt.shape[1])
  pred = np.pad(pred, ((0, 0), (0, width - pred.shape[1])))
  tgt = np.pad(tgt, ((0, 0), (0, width - tgt.shape[1])))
  mask = tgt != PAD
  return {
      'exact_match': float((pred == tgt).all(-1).mean()),
      'token_accuracy': float(((pred == tgt) & mask).sum() / max(mask.sum(), 1)),
  }


def bleu(hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str = '13a') -> float:
  """Corpus BLEU (sacrebleu, one reference per sentence), 0-100."""
  return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score)


def text_scores(hypotheses: Sequence[str], references: Sequence[str]
                ) -> tuple[dict[str, float], dict[str, str]]:
  """Corpus BLEU (Papineni et al. 2002) and chrF (Popovic 2015) of detokenized hypotheses against
  the raw reference lines (one per sentence), as sacrebleu computes them (Post 2018), 0-100.

  Returns ({'bleu', 'chrf'}, {'bleu', 'chrf'} -> the sacrebleu signature, e.g.
  'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0'), so a reported number says how it
  was computed.
  """
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses for {len(references)} references')
  hyps, refs = [str(h) for h in hypotheses], [[str(r) for r in references]]
  scorers = {'bleu': sacrebleu.metrics.BLEU(), 'chrf': sacrebleu.metrics.CHRF()}
  scores = {k: float(m.corpus_score(hyps, refs).score) for k, m in scorers.items()}
  return scores, {k: str(m.get_signature()) for k, m in scorers.items()}
