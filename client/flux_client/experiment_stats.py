"""The statistics of the experiments report: pure functions, standard library only (the
SDK stays light; ``statistics.NormalDist`` is the normal distribution).

- ``histogram_quantile``: a quantile from cumulative histogram buckets, as Prometheus'
  ``histogram_quantile`` computes it (linear interpolation inside the bucket).
- ``compare``: a two-sided two-proportion z-test of an arm's event rate against the
  control's (pooled standard error for the test, unpooled Wald interval for the
  difference), and a verdict.

The verdict rule: the normal approximation behind the z-test holds when each arm has at
least ``MIN_EXPECTED`` (10) expected successes and 10 expected failures under the pooled
rate (n·p ≥ 10 and n·(1-p) ≥ 10, the textbook success-failure condition). Until then the
verdict is ``not_enough_data``. Otherwise a p-value under ``ALPHA`` (0.05) gives
``higher`` or ``lower`` (the arm's rate against the control's), and anything else
``no_significant_difference``. Each comparison is tested on its own (no correction for
testing several arms and events at once: read many small p-values with that in mind).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

ALPHA = 0.05
CONFIDENCE = 0.95
MIN_EXPECTED = 10.0
_NORMAL = NormalDist()


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram given as (upper bound, cumulative count) pairs,
    the last bound +Inf; None when there are no observations (Prometheus gives NaN).
    Follows Prometheus' ``bucketQuantile``: the lowest bucket starts at 0, a quantile in
    the +Inf bucket is the highest finite bound, and counts that decrease (a scrape
    racing an update) are raised to stay monotonic."""
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    fixed: list[tuple[float, float]] = []
    highest = 0.0
    for bound, count in ordered:
        highest = max(highest, count)
        fixed.append((bound, highest))
    observations = fixed[-1][1]
    if observations <= 0:
        return None
    rank = q * observations
    b = next(i for i, (_, count) in enumerate(fixed) if count >= rank)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, below = (0.0, 0.0) if b == 0 else fixed[b - 1]
    end, count = fixed[b]
    in_bucket = count - below
    if in_bucket <= 0:
        return end
    return start + (end - start) * ((rank - below) / in_bucket)


@dataclass(frozen=True)
class Comparison:
    """An arm's event rate against the control's."""

    rate: float
    control_rate: float
    difference: float
    """rate - control_rate."""
    ci_low: float
    ci_high: float
    """The 95% (Wald) interval of the difference."""
    z: float | None
    p_value: float | None
    """Two-sided; None when neither arm has a success or a failure to compare."""
    verdict: str
    """``not_enough_data``, ``higher``, ``lower`` or ``no_significant_difference``."""


def _rate(successes: float, trials: float) -> float:
    return successes / trials if trials > 0 else 0.0


def enough_data(
    successes: float, trials: float, control_successes: float, control_trials: float
) -> bool:
    """The success-failure condition of the normal approximation, under the pooled rate."""
    total = trials + control_trials
    if trials <= 0 or control_trials <= 0:
        return False
    pooled = (successes + control_successes) / total
    return all(
        n * pooled >= MIN_EXPECTED and n * (1 - pooled) >= MIN_EXPECTED
        for n in (trials, control_trials)
    )


def compare(
    successes: float, trials: float, control_successes: float, control_trials: float
) -> Comparison:
    """Two-sided two-proportion z-test of ``successes/trials`` against the control's.
    Successes may be fractional (feedback values between 0 and 1)."""
    if (
        successes > trials
        or control_successes > control_trials
        or min(successes, control_successes) < 0
    ):
        raise ValueError("successes must be between 0 and the number of trials")
    p1, p0 = _rate(successes, trials), _rate(control_successes, control_trials)
    difference = p1 - p0
    z_crit = _NORMAL.inv_cdf(1 - (1 - CONFIDENCE) / 2)
    spread = 0.0
    if trials > 0 and control_trials > 0:
        spread = math.sqrt(p1 * (1 - p1) / trials + p0 * (1 - p0) / control_trials)
    z: float | None = None
    p_value: float | None = None
    if trials > 0 and control_trials > 0:
        pooled = (successes + control_successes) / (trials + control_trials)
        se = math.sqrt(pooled * (1 - pooled) * (1 / trials + 1 / control_trials))
        if se > 0:
            z = difference / se
            p_value = min(1.0, 2 * _NORMAL.cdf(-abs(z)))
    if not enough_data(successes, trials, control_successes, control_trials):
        verdict = "not_enough_data"
    elif p_value is not None and p_value < ALPHA:
        verdict = "higher" if difference > 0 else "lower"
    else:
        verdict = "no_significant_difference"
    return Comparison(
        rate=p1,
        control_rate=p0,
        difference=difference,
        ci_low=difference - z_crit * spread,
        ci_high=difference + z_crit * spread,
        z=z,
        p_value=p_value,
        verdict=verdict,
    )
