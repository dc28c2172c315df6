"""The canary's pure decisions: every rule of ``decide`` and every case of ``split_pods``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flux_operator.reconcile.canary_decision import (
    Abort,
    Advance,
    Hold,
    Inconclusive,
    Promote,
    WaitForPromote,
    analysis_due,
    decide,
    judge,
    manual_request,
    next_check_seconds,
    start,
)
from flux_operator.reconcile.canary_pods import PodSplit, split_pods
from flux_operator.render import ABORT_ANNOTATION, PROMOTE_ANNOTATION
from flux_operator.spec import CanaryMetric, CanarySpec, CanaryStatus, Measurement, rfc3339

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
ERRORS = CanaryMetric(name="error-ratio", max=0.02)
LATENCY = CanaryMetric(name="p95-latency-seconds", max=40)
THROUGHPUT = CanaryMetric(name="throughput", query="sum(rate(x[1m]))", min=1)


def _spec(**changes: object) -> CanarySpec:
    raw: dict[str, object] = {
        "maxSurge": 1,
        "steps": [
            {"weight": 10, "pause": "10m"},
            {"weight": 50, "pause": "10m"},
            {"weight": 50},
        ],
        "analysis": {
            "prometheusUrl": "http://prometheus:9090",
            "interval": "1m",
            "failureLimit": 2,
            "metrics": [
                {"name": "error-ratio", "max": 0.02},
                {"name": "p95-latency-seconds", "max": 40},
            ],
        },
    }
    raw.update(changes)
    return CanarySpec.model_validate(raw)


def _passing(now: datetime) -> list[Measurement]:
    return [judge(ERRORS, 0.0, now), judge(LATENCY, 12.5, now)]


def _failing(now: datetime, value: float = 0.31) -> list[Measurement]:
    return [judge(ERRORS, value, now), judge(LATENCY, 12.5, now)]


def _no_data(now: datetime) -> list[Measurement]:
    return [judge(ERRORS, None, now, "no data for the query"), judge(LATENCY, 3.0, now)]


# --- judge --------------------------------------------------------------------------------


def test_judge_against_max_min_and_missing_values() -> None:
    assert judge(ERRORS, 0.02, T0).outcome == "Passed"  # the bound itself passes
    failed = judge(ERRORS, 0.021, T0)
    assert (failed.outcome, failed.value, failed.bound()) == ("Failed", 0.021, "max 0.02")
    assert judge(THROUGHPUT, 0.5, T0).outcome == "Failed"
    assert judge(THROUGHPUT, 0.5, T0).bound() == "min 1"
    assert judge(THROUGHPUT, 1.0, T0).outcome == "Passed"
    both = CanaryMetric(name="x", query="up", min=0.1, max=0.9)
    assert judge(both, 0.95, T0).bound() == "0.1..0.9"
    for missing in (None, float("nan")):
        m = judge(ERRORS, missing, T0, "Prometheus unreachable")
        assert (m.outcome, m.value, m.reason) == ("Inconclusive", None, "Prometheus unreachable")
    assert judge(ERRORS, 0.5, T0).time == "2026-01-01T12:00:00Z"


# --- the way through every step -----------------------------------------------------------


def test_start_at_the_first_step() -> None:
    status = start(_spec(), "v2", 7, T0)
    assert (status.release, status.revision, status.step, status.weight) == ("v2", 7, 0, 10)
    assert status.phase == "Progressing"
    assert status.step_started_at == "2026-01-01T12:00:00Z"
    assert status.step_ends_at == "2026-01-01T12:10:00Z"


def test_promote_through_every_step_with_passing_analysis() -> None:
    spec = _spec(
        steps=[
            {"weight": 10, "pause": "10m"},
            {"weight": 50, "pause": "5m"},
            {"weight": 80, "pause": "5m"},
        ]
    )
    status = start(spec, "v2", 2, T0)
    now = T0
    seen: list[tuple[str, int]] = []
    for _ in range(100):
        now += MINUTE
        measurements = _passing(now) if analysis_due(spec, status, now) else None
        decision = decide(spec, status, measurements, now)
        status = decision.status
        if isinstance(decision, Promote):
            seen.append(("promote", 100))
            break
        if isinstance(decision, Advance):
            seen.append(("advance", decision.weight))
        else:
            assert isinstance(decision, Hold), decision
    assert seen == [("advance", 50), ("advance", 80), ("promote", 100)]
    assert now == T0 + 20 * MINUTE
    assert status.phase == "Promoting" and status.weight == 100 and status.failures == 0
    # After the decision to promote nothing else is decided.
    assert isinstance(decide(spec, status, None, now + MINUTE), Hold)


def test_a_step_does_not_end_without_a_passing_measurement_made_in_it() -> None:
    spec = _spec()
    status = start(spec, "v2", 2, T0)
    # The pause is over but analysis never ran: hold.
    decision = decide(spec, status, None, T0 + 11 * MINUTE)
    assert isinstance(decision, Hold) and "waits for a passing measurement" in decision.reason
    # A passing round measured before the step began does not count for it.
    old = status.model_copy(
        update={"measurements": _passing(T0 - MINUTE), "last_analysis_at": rfc3339(T0 - MINUTE)}
    )
    assert isinstance(decide(spec, old, None, T0 + 11 * MINUTE), Hold)
    # One made now does.
    decision = decide(spec, status, _passing(T0 + 11 * MINUTE), T0 + 11 * MINUTE)
    assert isinstance(decision, Advance) and (decision.step, decision.weight) == (1, 50)
    assert decision.status.step_started_at == "2026-01-01T12:11:00Z"
    assert decision.status.step_ends_at == "2026-01-01T12:21:00Z"


def test_hold_until_the_pause_ends() -> None:
    spec = _spec()
    status = start(spec, "v2", 2, T0)
    decision = decide(spec, status, _passing(T0 + MINUTE), T0 + MINUTE)
    assert isinstance(decision, Hold)
    assert decision.until == T0 + 10 * MINUTE
    assert decision.status.last_analysis_at == "2026-01-01T12:01:00Z"
    assert [m.metric for m in decision.status.measurements] == [
        "error-ratio",
        "p95-latency-seconds",
    ]


def test_a_step_without_pause_waits_for_promote_and_promote_acts() -> None:
    spec = _spec()
    status = start(spec, "v2", 2, T0).model_copy(
        update={"step": 2, "weight": 50, "step_ends_at": None}
    )
    decision = decide(spec, status, _passing(T0), T0 + 90 * MINUTE)
    assert isinstance(decision, WaitForPromote) and decision.step == 2
    assert decision.status.phase == "Paused"
    paused = decision.status
    request = manual_request({PROMOTE_ANNOTATION: "v2"}, paused)
    assert request == "promote"
    promoted = decide(spec, paused, None, T0 + 91 * MINUTE, request)
    assert isinstance(promoted, Promote) and promoted.manual
    assert promoted.status.phase == "Promoting"
    # Acted on once: the ended canary ignores the annotation still there.
    assert manual_request({PROMOTE_ANNOTATION: "v2"}, promoted.status) is None


def test_a_first_step_without_pause_starts_paused() -> None:
    spec = _spec(steps=[{"weight": 20}, {"weight": 100, "pause": "1m"}])
    status = start(spec, "v2", 2, T0)
    assert status.phase == "Paused" and status.step_ends_at is None


def test_advancing_to_a_step_without_pause_pauses() -> None:
    spec = _spec(steps=[{"weight": 10, "pause": "1m"}, {"weight": 50}])
    status = start(spec, "v2", 2, T0)
    decision = decide(spec, status, _passing(T0 + MINUTE), T0 + MINUTE)
    assert isinstance(decision, Advance) and decision.status.phase == "Paused"
    assert decision.status.step_ends_at is None


def test_pauses_only_canary_advances_on_time() -> None:
    spec = _spec(analysis=None)
    status = start(spec, "v2", 2, T0)
    assert not analysis_due(spec, status, T0)
    assert isinstance(decide(spec, status, None, T0 + 9 * MINUTE), Hold)
    decision = decide(spec, status, None, T0 + 10 * MINUTE)
    assert isinstance(decision, Advance) and decision.weight == 50


# --- abort ----------------------------------------------------------------------------------


def test_abort_after_more_failures_than_the_limit_naming_metric_value_and_bound() -> None:
    spec = _spec()  # failureLimit 2
    status = start(spec, "v3", 3, T0)
    for i in (1, 2):
        decision = decide(spec, status, _failing(T0 + i * MINUTE), T0 + i * MINUTE)
        assert isinstance(decision, Hold), decision
        assert decision.status.failures == i
        assert f"error-ratio = 0.31, bound max 0.02 ({i} of 2 failures tolerated)" in (
            decision.reason
        )
        status = decision.status
    decision = decide(spec, status, _failing(T0 + 3 * MINUTE), T0 + 3 * MINUTE)
    assert isinstance(decision, Abort)
    assert (decision.metric, decision.value, decision.bound) == ("error-ratio", 0.31, "max 0.02")
    assert decision.message == (
        "canary v3 aborted: error-ratio = 0.31, bound max 0.02 "
        "(3 failed measurements, failureLimit 2)"
    )
    assert decision.status.phase == "Aborted" and decision.status.weight == 0
    assert decision.status.failures == 3
    # An aborted canary stays aborted.
    assert isinstance(decide(spec, decision.status, _passing(T0), T0 + 4 * MINUTE), Hold)


def test_failure_limit_zero_aborts_on_the_first_failure() -> None:
    spec = _spec(
        analysis={
            "prometheusUrl": "http://p:9090",
            "failureLimit": 0,
            "metrics": [{"name": "throughput", "query": "sum(rate(x[1m]))", "min": 1}],
        }
    )
    status = start(spec, "v3", 3, T0)
    decision = decide(spec, status, [judge(THROUGHPUT, 0.25, T0)], T0)
    assert isinstance(decision, Abort)
    assert (decision.metric, decision.value, decision.bound) == ("throughput", 0.25, "min 1")


def test_failures_count_over_the_whole_canary_and_a_failed_round_blocks_the_step_end() -> None:
    spec = _spec()
    status = start(spec, "v3", 3, T0)
    status = decide(spec, status, _failing(T0 + MINUTE), T0 + MINUTE).status
    # The pause is over but the newest round failed: hold, even within the limit.
    decision = decide(spec, status, _failing(T0 + 11 * MINUTE), T0 + 11 * MINUTE)
    assert isinstance(decision, Hold) and decision.status.failures == 2
    decision = decide(spec, decision.status, _passing(T0 + 12 * MINUTE), T0 + 12 * MINUTE)
    assert isinstance(decision, Advance) and decision.status.failures == 2
    # The count carries into the next step: one more failure aborts.
    decision = decide(spec, decision.status, _failing(T0 + 13 * MINUTE), T0 + 13 * MINUTE)
    assert isinstance(decision, Abort)


def test_a_failure_during_a_wait_for_promote_still_aborts() -> None:
    spec = _spec(
        steps=[{"weight": 50}], analysis={"prometheusUrl": "http://p:9090", "failureLimit": 0}
    )
    status = start(spec, "v3", 3, T0)
    decision = decide(spec, status, [judge(ERRORS, 0.5, T0)], T0)
    assert isinstance(decision, Abort)


def test_manual_abort_wins_and_names_no_metric() -> None:
    spec = _spec()
    status = start(spec, "v3", 3, T0)
    annotations = {ABORT_ANNOTATION: "v3", PROMOTE_ANNOTATION: "v3"}
    request = manual_request(annotations, status)
    assert request == "abort"
    decision = decide(spec, status, _passing(T0), T0, request)
    assert isinstance(decision, Abort) and decision.metric is None
    assert decision.message == "canary v3 aborted by request"
    assert manual_request(annotations, decision.status) is None


def test_annotations_for_another_release_do_nothing() -> None:
    status = start(_spec(), "v3", 3, T0)
    assert manual_request({PROMOTE_ANNOTATION: "v2", ABORT_ANNOTATION: "v1"}, status) is None
    assert manual_request({}, status) is None


def test_manual_promote_skips_the_steps_left() -> None:
    spec = _spec()
    status = start(spec, "v2", 2, T0)
    decision = decide(spec, status, None, T0 + MINUTE, "promote")
    assert isinstance(decision, Promote) and decision.manual
    assert decision.status.weight == 100


# --- inconclusive -------------------------------------------------------------------------


def test_no_data_holds_as_inconclusive_with_the_reason_even_after_the_pause() -> None:
    spec = _spec()
    status = start(spec, "v2", 2, T0)
    for minutes in (1, 11, 30):
        now = T0 + minutes * MINUTE
        decision = decide(spec, status, _no_data(now), now)
        assert isinstance(decision, Inconclusive), decision
        assert decision.reason == "error-ratio: no data for the query"
        assert decision.status.message == decision.reason
        assert decision.status.failures == 0 and decision.status.step == 0
        status = decision.status


def test_a_failed_metric_counts_even_when_another_is_inconclusive() -> None:
    spec = _spec()
    status = start(spec, "v3", 3, T0)
    round_ = [judge(ERRORS, 0.5, T0), judge(LATENCY, None, T0, "unreachable")]
    decision = decide(spec, status, round_, T0)
    assert isinstance(decision, Hold) and decision.status.failures == 1


# --- timing -------------------------------------------------------------------------------


def test_analysis_due_every_interval_and_the_next_check() -> None:
    spec = _spec()
    status = start(spec, "v2", 2, T0)
    assert analysis_due(spec, status, T0)
    assert next_check_seconds(spec, status, T0) == 0
    measured = decide(spec, status, _passing(T0), T0).status
    assert not analysis_due(spec, measured, T0 + timedelta(seconds=59))
    assert analysis_due(spec, measured, T0 + MINUTE)
    assert next_check_seconds(spec, measured, T0 + timedelta(seconds=20)) == 40
    pauses_only = _spec(analysis=None)
    status = start(pauses_only, "v2", 2, T0)
    assert next_check_seconds(pauses_only, status, T0 + MINUTE) == 9 * 60
    # A step that ended but holds for a passing round is looked at at the next round.
    assert next_check_seconds(spec, measured, T0 + 11 * MINUTE) == 0
    held = measured.model_copy(update={"last_analysis_at": rfc3339(T0 + 10 * MINUTE)})
    assert next_check_seconds(spec, held, T0 + 10 * MINUTE + timedelta(seconds=30)) == 30
    waiting = _spec(analysis=None, steps=[{"weight": 10}, {"weight": 20, "pause": "1m"}])
    assert next_check_seconds(waiting, start(waiting, "v2", 2, T0), T0) is None


def test_status_round_trips_through_json() -> None:
    spec = _spec()
    status = decide(spec, start(spec, "v2", 2, T0), _failing(T0), T0).status
    dumped = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert {"release", "step", "weight", "measurements", "stepEndsAt", "failures"} <= set(dumped)
    assert dumped["measurements"][0] == {
        "metric": "error-ratio",
        "value": 0.31,
        "max": 0.02,
        "outcome": "Failed",
        "reason": "0.31 > max",
        "time": "2026-01-01T12:00:00Z",
    }
    assert CanaryStatus.model_validate(dumped) == status


# --- pods ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weight", "surge", "expected"),
    [
        (4, 0, 1, PodSplit(4, 0)),
        (0, 50, 1, PodSplit(0, 0)),
        (4, 10, 1, PodSplit(4, 1)),  # one extra pod
        (4, 50, 1, PodSplit(3, 2)),  # two canary pods, one extra: the stable side gives one
        (4, 50, 2, PodSplit(4, 2)),
        (4, 100, 1, PodSplit(1, 4)),
        (1, 10, 1, PodSplit(1, 1)),
        (10, 25, 3, PodSplit(10, 3)),
        (10, 25, 2, PodSplit(9, 3)),
        (4, 10, 0, PodSplit(3, 1)),  # maxSurge 0: carved out
        (4, 50, 0, PodSplit(2, 2)),
        (4, 90, 0, PodSplit(1, 3)),  # one stable pod stays below 100
        (4, 100, 0, PodSplit(0, 4)),
        (2, 10, 0, PodSplit(1, 1)),
    ],
)
def test_split_pods(total: int, weight: int, surge: int, expected: PodSplit) -> None:
    assert split_pods(total, weight, surge) == expected


@pytest.mark.parametrize("surge", [0, 1, 2, 5])
def test_split_pods_invariants_over_every_case(surge: int) -> None:
    for total in range(0, 21):
        for weight in range(0, 101):
            split = split_pods(total, weight, surge)
            extra = split.stable + split.canary - total
            assert 0 <= extra <= surge, (total, weight, surge, split)
            if surge == 0:
                assert extra == 0
            if total > 0 and weight > 0 and (surge > 0 or total >= 2):
                assert split.canary >= 1
            if total >= 2 and weight < 100:
                assert split.stable >= 1
            if weight == 0:
                assert split == PodSplit(total, 0)


def test_canary_share_of_a_shared_service_is_coarse_at_small_counts() -> None:
    assert split_pods(2, 10, 1).canary_share == 33  # asked 10 %, pods give a third
    assert split_pods(20, 10, 2).canary_share == 9
    assert PodSplit(0, 0).canary_share == 0
