"""The report's statistics against values computed by hand and, where installed, scipy."""

from __future__ import annotations

import math

import pytest

from flux_client.experiment_stats import compare, enough_data, histogram_quantile

INF = math.inf
BUCKETS = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (INF, 40.0)]


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, BUCKETS, 0.3),  # rank 20 in (0.1, 0.5]: 0.1 + 0.4 * 10/20
        (0.95, BUCKETS, 0.9),  # rank 38 in (0.5, 1]: 0.5 + 0.5 * 8/10
        (0.1, BUCKETS, 0.04),  # the lowest bucket starts at 0: 0.1 * 4/10
        (0.9, [(0.1, 10.0), (INF, 20.0)], 0.1),  # in +Inf: the highest finite bound
        (0.5, [(1.0, 5.0), (0.5, 4.0), (INF, 5.0)], 0.3125),  # unordered input is sorted
        (0.5, [(0.5, 4.0), (1.0, 3.0), (INF, 4.0)], 0.25),  # a decreasing count is raised
        (0.5, [(0.1, 0.0), (INF, 0.0)], None),  # no observations
        (0.5, [(0.1, 3.0)], None),  # no +Inf bucket
        (-0.1, BUCKETS, -INF),
        (1.1, BUCKETS, INF),
    ],
)
def test_histogram_quantile_as_prometheus(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    got = histogram_quantile(q, buckets)
    if expected is None or math.isinf(expected):
        assert got == expected
    else:
        assert got == pytest.approx(expected)


def test_z_test_by_hand() -> None:
    # Control 45/100, arm 60/100. Pooled p = 0.525, SE = sqrt(.525*.475*.02) = 0.0706222,
    # z = 0.15 / SE = 2.12398, p = 2 * (1 - Phi(z)) = 0.03367 (to 5 places).
    # Wald interval: 0.15 ± 1.959964 * sqrt(.6*.4/100 + .45*.55/100) = 0.15 ± 0.136848.
    result = compare(60, 100, 45, 100)
    assert result.difference == pytest.approx(0.15)
    assert result.z == pytest.approx(2.12398, abs=1e-5)
    assert result.p_value == pytest.approx(0.03367, abs=5e-6)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.013152, 0.286848), abs=1e-6)
    assert result.verdict == "higher"
    assert compare(45, 100, 60, 100).verdict == "lower"


def test_verdict_needs_ten_expected_successes_and_failures() -> None:
    # Pooled 3/40 = 0.075: 20 * 0.075 = 1.5 expected successes per arm < 10.
    assert compare(3, 20, 0, 20).verdict == "not_enough_data"
    assert not enough_data(3, 20, 0, 20)
    # Pooled 0.1 with 100 per arm: exactly 10 expected successes: enough.
    assert enough_data(12, 100, 8, 100)
    assert compare(12, 100, 8, 100).verdict == "no_significant_difference"
    assert compare(0, 0, 5, 50).verdict == "not_enough_data"
    assert compare(0, 0, 5, 50).p_value is None
    # Nothing to tell apart: all successes on both sides.
    result = compare(50, 50, 50, 50)
    assert result.p_value is None and result.verdict == "not_enough_data"


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        compare(11, 10, 0, 10)


@pytest.mark.parametrize(
    ("x1", "n1", "x0", "n0"),
    [(60, 100, 45, 100), (30, 150, 50, 300), (333, 1000, 300, 1000), (7.5, 40, 3, 35)],
)
def test_z_test_matches_scipy(x1: float, n1: float, x0: float, n0: float) -> None:
    stats = pytest.importorskip("scipy.stats", reason="scipy (dev extra) checks the z-test")
    result = compare(x1, n1, x0, n0)
    # The pooled two-proportion z-test is the chi-squared test of the 2x2 table without
    # continuity correction: chi2 = z², same two-sided p-value.
    chi2, p, _, _ = stats.chi2_contingency([[x1, n1 - x1], [x0, n0 - x0]], correction=False)
    assert result.z is not None and result.z**2 == pytest.approx(chi2, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    p1, p0 = x1 / n1, x0 / n0
    half = stats.norm.ppf(0.975) * math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    assert result.ci_low == pytest.approx(p1 - p0 - half, rel=1e-9)
    assert result.ci_high == pytest.approx(p1 - p0 + half, rel=1e-9)
