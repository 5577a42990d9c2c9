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
- `t_power(effect, n)`, `seeds_for_power(effect)`, `detectable_effect(n)`: the power of that test
  (a one-sample t-test on the differences; against a fixed bar, d_s = a_s - bar) at the
  standardized effect δ = mean(d) / std(d): with T' noncentral t, n - 1 degrees of freedom and
  noncentrality δ√n, power = P(T' > t_c) + P(T' < -t_c), t_c = t(1 - α/2, n - 1) (Cohen 1988,
  ch. 2; the exact form G*Power computes). `power_analysis(differences)` applies them to a
  pilot's per-seed differences: the seeds needed for 80% power at α = 0.05 to detect the observed
  mean difference, and the smallest difference the pilot's seeds detect with 80% power.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats
from scipy.optimize import brentq

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
    'in_gold': (0.0, 1.0),  # shares of steps: argmax_in_gold, chance_in_gold (measure_run)
    'gold_mass': (0.0, 1.0),  # attention mass on the gold span
    'se_selectivity': (0.0, math.inf),  # a variance over a mean of positive numbers
}
LEVEL = 0.95  # the confidence of every interval
ALPHA = 0.05  # the level of every test (two-sided)
POWER = 0.8  # the power a decision asks for (Cohen 1988's convention)
MAX_SEEDS = 100_000  # seeds_for_power gives up beyond this (an effect of about 0.01 sd)


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


def t_power(effect: float, n: int, alpha: float = ALPHA) -> float:
  """The power of the two-sided one-sample t-test (paired: on the differences) with n values at
  standardized effect δ = mean / sd: P(|T'| > t(1 - α/2, n - 1)), T' ~ noncentral t(n - 1, δ√n).
  """
  if n < 2:
    raise ValueError(f't_power: n={n}; a t-test needs at least 2 values')
  df = n - 1
  crit = float(scipy_stats.t.ppf(1 - alpha / 2, df))
  nc = abs(effect) * math.sqrt(n)
  upper = float(scipy_stats.nct.sf(crit, df, nc))
  lower = float(scipy_stats.nct.cdf(-crit, df, nc))  # NaN where it underflows (df 1, large nc)
  if not (math.isfinite(upper) and 0.0 <= upper <= 1.0):
    raise ValueError(f't_power: the noncentral t tail is {upper} at df={df}, nc={nc}')
  return upper + (lower if math.isfinite(lower) else 0.0)


def seeds_for_power(effect: float, power: float = POWER, alpha: float = ALPHA) -> int | None:
  """The smallest n >= 2 at which t_power(effect, n) >= power; None when no n up to MAX_SEEDS
  reaches it (effect 0 included). Power grows with n, so a doubling then a bisection finds it."""
  if t_power(effect, 2, alpha) >= power:
    return 2
  lo, hi = 2, 4  # t_power(lo) < power
  while t_power(effect, hi, alpha) < power:
    if hi >= MAX_SEEDS:
      return None
    lo, hi = hi, min(2 * hi, MAX_SEEDS)
  while hi - lo > 1:  # t_power(lo) < power <= t_power(hi)
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if t_power(effect, mid, alpha) >= power else (mid, hi)
  return hi


def detectable_effect(n: int, power: float = POWER, alpha: float = ALPHA) -> float:
  """The standardized effect δ at which n values reach `power`: t_power(δ, n) = power (δ > 0)."""
  hi = 1.0
  while t_power(hi, n, alpha) < power:
    hi *= 2.0
  return float(brentq(lambda d: t_power(d, n, alpha) - power, 0.0, hi, xtol=1e-10))


def power_analysis(differences: Sequence[float], power: float = POWER,
                   alpha: float = ALPHA) -> dict[str, Any] | None:
  """What a pilot's per-seed differences d_s (paired, or against a fixed bar) say about deciding
  their sign with a two-sided t-test at `alpha`:

    effect = mean(d) / std(d, ddof=1); power_now = t_power(effect, n);
    seeds_needed = seeds_for_power(effect): seeds for `power` at the observed mean difference;
    detectable = detectable_effect(n) · std(d): the smallest |mean difference| n seeds detect
      with `power`, at the pilot's spread.
  The pilot's std from few seeds is itself uncertain; these are estimates, not guarantees.
  -> {'n', 'mean_diff', 'std', 'effect', 'power_now', 'seeds_needed', 'detectable', 'power',
  'alpha'}, or None with fewer than 2 differences. Differences all equal (std 0): a non-zero
  mean is detected by 2 seeds (effect infinite), a zero mean by none.
  """
  d = np.asarray(differences, np.float64)  # [n]
  n = len(d)
  if n < 2:
    return None
  mean, std = float(d.mean()), float(d.std(ddof=1))
  if std == 0:
    effect = math.inf if mean else 0.0
    needed, now = (2, 1.0) if mean else (None, float(alpha))
    detectable = 0.0
  else:
    effect = mean / std
    needed, now = seeds_for_power(effect, power, alpha), t_power(effect, n, alpha)
    detectable = detectable_effect(n, power, alpha) * std
  return {'n': n, 'mean_diff': mean, 'std': std, 'effect': effect, 'power_now': now,
          'seeds_needed': needed, 'detectable': detectable, 'power': power, 'alpha': alpha}
