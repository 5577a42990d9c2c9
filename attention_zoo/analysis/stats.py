"""Statistics over seeds: intervals that respect a metric's range, and paired tests.

A variant is run with a few seeds (n = 3 typically); its final metric per seed is one value.

- `bounds(metric)`: the range of a metric, looked up by the end of its name: [0, 1] for
  accuracies and error rates, [0, 100] for BLEU and chrF, [0, ∞) for a loss or bits per char
  (cross-entropies), [1, ∞) for a perplexity (exp of one).
- `summarize(values, bounds)`: mean, std (ddof=1) and a 95% interval for the mean. The interval is
  Student's t, mean ± t(0.975, n-1) · std / √n, clipped to the metric's bounds when it has some
  (the rule: an end beyond a bound is moved onto it; a loss's lower end never goes below 0).
  Clipping only removes values the mean cannot take, so it keeps the t interval's coverage; a
  percentile bootstrap over 3 seeds has 10 distinct resample means and its interval lies inside
  [min, max] of the values, far narrower than the t interval and covering the mean less often.
- `paired_test(a, b)`: the two-sided paired t-test (Student 1908) on the seeds both variants ran:
  d_s = a_s - b_s, t = mean(d) / (std(d, ddof=1) / √n), p = 2 · P(T_{n-1} > |t|).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

# The end of a metric's name ('_'-separated words) -> the metric's range (math.inf: unbounded
# above). Other metrics (a rate such as steps_per_s) have no range here.
BOUNDS: dict[str, tuple[float, float]] = {
    'accuracy': (0.0, 1.0),  # accuracy, token_accuracy, seq_accuracy, gen_token_accuracy
    'exact_match': (0.0, 1.0),  # exact_match, gen_exact_match
    'error': (0.0, 1.0),  # error rates
    'error_rate': (0.0, 1.0),
    'bleu': (0.0, 100.0),  # sacrebleu's scale: bleu, gen_bleu
    'chrf': (0.0, 100.0),  # chrf, gen_chrf
    'loss': (0.0, math.inf),  # a cross-entropy (label-smoothed too): loss, smoothed_loss
    'bits_per_char': (0.0, math.inf),  # a cross-entropy in bits
    'bpc': (0.0, math.inf),
    'perplexity': (1.0, math.inf),  # exp of a cross-entropy
}
LEVEL = 0.95  # the confidence of every interval


def bounds(metric: str) -> tuple[float, float] | None:
  """The range of `metric` from the end of its name (BOUNDS), or None when it is unbounded."""
  words = metric.lower().split('_')
  for i in range(len(words)):  # the longest matching end first
    if (suffix := '_'.join(words[i:])) in BOUNDS:
      return BOUNDS[suffix]
  return None


def interval_label(bounds_: tuple[float, float] | None) -> str:
  """What summarize's interval is, e.g. 't, clipped to [0, 1]' or 't, clipped to [0, ∞)'."""
  if bounds_ is None:
    return 't'
  lo, hi = bounds_
  return f't, clipped to [{lo:g}, ' + ('∞)' if math.isinf(hi) else f'{hi:g}]')


def summarize(values: Sequence[float], bounds: tuple[float, float] | None = None, *,
              seed: int = 0) -> dict[str, Any]:
  """-> {'n', 'mean', 'std', 'ci95': [lo, hi], 'interval': label, 'values'}.

  std has ddof=1; ci95 is mean ± t(0.975, n-1) · std / √n, clipped to `bounds` when given. One
  value has std and interval NaN. `seed` is unused: the t interval draws nothing (it is kept so
  that a resampling interval could take its place without changing callers).
  """
  del seed
  x = np.asarray(values, np.float64)  # [n]
  n = len(x)
  if n == 0:
    raise ValueError('summarize: no values')
  mean = float(x.mean())
  if n > 1:
    std = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + LEVEL / 2, n - 1) * std / math.sqrt(n))
    lo, hi = mean - half, mean + half
    if bounds is not None:
      lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
  else:
    std = lo = hi = float('nan')
  return {'n': n, 'mean': mean, 'std': std, 'ci95': [lo, hi],
          'interval': interval_label(bounds), 'values': [float(v) for v in x]}


def paired_test(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
  """Two-sided paired t-test of a against b on their shared seeds (scipy.stats.ttest_rel).

  -> {'seeds': sorted shared seeds, 'n', 'mean_diff': mean(a_s - b_s), 'p_value', 'test'}.
  p is NaN with fewer than 2 shared seeds; 1.0 when every difference is 0 (identical results);
  0.0 when every difference is the same non-zero number (t is infinite).
  """
  seeds = sorted(set(a) & set(b))
  d = np.array([a[s] - b[s] for s in seeds], np.float64)  # [n] differences per seed
  n = len(seeds)
  mean_diff = float(d.mean()) if n else float('nan')
  if n < 2:
    p = float('nan')
  elif np.all(d == 0):
    p = 1.0
  elif np.all(d == d[0]):
    p = 0.0
  else:
    p = float(scipy_stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
  return {'seeds': seeds, 'n': n, 'mean_diff': mean_diff, 'p_value': p, 'test': 'paired t'}
