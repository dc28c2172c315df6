"""The canary's decisions, as pure functions: no clock, no I/O.

Given the canary spec, ``status.canary``, the measurements of this reconciliation (if
analysis ran) and *now*, :func:`decide` returns one decision with the status to write.
``canary_pods`` says how many pods each side runs. The reconciler does the rest: it
measures (``flux_operator.prometheus``), applies what the decision implies, writes the
status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from flux_operator.render import ABORT_ANNOTATION, PROMOTE_ANNOTATION
from flux_operator.spec import (
    CanaryMetric,
    CanarySpec,
    CanaryStatus,
    Measurement,
    MeasurementOutcome,
    parse_duration,
    parse_time,
    rfc3339,
)

ManualRequest = Literal["promote", "abort"]


# --- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decided:
    status: CanaryStatus
    """``status.canary`` after the decision."""


@dataclass(frozen=True)
class Hold(_Decided):
    """Keep the step in force; look again at ``until`` (or at the next analysis)."""

    reason: str
    until: datetime | None = None


@dataclass(frozen=True)
class Inconclusive(Hold):
    """A hold because a measurement could not be made (Prometheus unreachable, no data):
    neither promote nor abort; the reason belongs in a condition."""


@dataclass(frozen=True)
class WaitForPromote(_Decided):
    """The step has no pause: hold until ``promote`` (analysis still runs and may abort)."""

    step: int
    """The step that waits."""


@dataclass(frozen=True)
class Advance(_Decided):
    """Go to the next step."""

    step: int
    """The step now in force."""
    weight: int
    """The canary's share of the traffic from now on, percent."""


@dataclass(frozen=True)
class Promote(_Decided):
    """The stable Deployment takes the canary's revision; then the canary is removed."""

    manual: bool


@dataclass(frozen=True)
class Abort(_Decided):
    """Canary to zero, all traffic to stable, the revision recorded as failed. ``metric``,
    ``value`` and ``bound`` are set when a measurement caused it (None for a manual abort)."""

    message: str
    metric: str | None = None
    value: float | None = None
    bound: str | None = None


Decision = Hold | Inconclusive | WaitForPromote | Advance | Promote | Abort


def _step_ends(canary: CanarySpec, step: int, started: datetime) -> datetime | None:
    pause = canary.steps[step].pause
    return None if pause is None else started + timedelta(seconds=parse_duration(pause))


def start(canary: CanarySpec, release: str, revision: int | None, now: datetime) -> CanaryStatus:
    """``status.canary`` of a canary that begins now, at its first step."""
    ends = _step_ends(canary, 0, now)
    return CanaryStatus(
        release=release,
        revision=revision,
        phase="Progressing" if ends is not None else "Paused",
        step=0,
        weight=canary.steps[0].weight,
        step_started_at=rfc3339(now),
        step_ends_at=rfc3339(ends) if ends is not None else None,
    )


def manual_request(annotations: Mapping[str, str], status: CanaryStatus) -> ManualRequest | None:
    """What the promote/abort annotations ask of this canary. They name the release, so an
    annotation left from an earlier canary does nothing to the next one; and a canary that
    ended ignores them, so each acts once. Abort wins over promote."""
    if status.phase in ("Promoted", "Aborted", "Promoting"):
        return None
    if annotations.get(ABORT_ANNOTATION) == status.release:
        return "abort"
    if annotations.get(PROMOTE_ANNOTATION) == status.release:
        return "promote"
    return None


def judge(
    metric: CanaryMetric, value: float | None, now: datetime, reason: str = ""
) -> Measurement:
    """One measurement: Failed when ``value`` is past a bound, Inconclusive without a value
    (NaN included: a ratio over no requests), else Passed."""

    if value is not None and math.isnan(value):
        value = None

    def measured(outcome: MeasurementOutcome, why: str | None) -> Measurement:
        return Measurement(
            metric=metric.name,
            value=value,
            min=metric.min,
            max=metric.max,
            outcome=outcome,
            reason=why,
            time=rfc3339(now),
        )

    if value is None:
        return measured("Inconclusive", reason or "no data for the query")
    if metric.max is not None and value > metric.max:
        return measured("Failed", f"{value:g} > max")
    if metric.min is not None and value < metric.min:
        return measured("Failed", f"{value:g} < min")
    return measured("Passed", None)


def analysis_due(canary: CanarySpec, status: CanaryStatus, now: datetime) -> bool:
    """Whether to measure in this reconciliation: every ``interval`` while a step holds."""
    if canary.analysis is None or status.phase not in ("Progressing", "Paused"):
        return False
    if status.last_analysis_at is None:
        return True
    elapsed = (now - parse_time(status.last_analysis_at)).total_seconds()
    return elapsed >= parse_duration(canary.analysis.interval)


def next_check_seconds(canary: CanarySpec, status: CanaryStatus, now: datetime) -> float | None:
    """Seconds until something is due (the next analysis or the step's end), for the
    reconciler's requeue; None when only a person can move the canary on."""
    moments: list[datetime] = []
    if canary.analysis is not None and status.phase in ("Progressing", "Paused"):
        last = status.last_analysis_at
        interval = timedelta(seconds=parse_duration(canary.analysis.interval))
        moments.append(now if last is None else parse_time(last) + interval)
    if status.phase == "Progressing" and status.step_ends_at is not None:
        ends = parse_time(status.step_ends_at)
        # A step that ended and still holds waits for a passing round, not for the clock.
        if ends > now or not moments:
            moments.append(ends)
    if not moments:
        return None
    return max(0.0, (min(moments) - now).total_seconds())


def _latest_round_passed(status: CanaryStatus) -> bool:
    if status.last_analysis_at is None or not status.measurements:
        return False
    if parse_time(status.last_analysis_at) < parse_time(status.step_started_at):
        return False
    return all(m.outcome == "Passed" for m in status.measurements)


def decide(
    canary: CanarySpec,
    status: CanaryStatus,
    measurements: Sequence[Measurement] | None,
    now: datetime,
    request: ManualRequest | None = None,
) -> Decision:
    """The one thing to do now, and ``status.canary`` after it.

    ``measurements`` is the round analysis made in this reconciliation (None: none was due).
    The rules, in order:

    1. A canary that ended (Promoting, Promoted, Aborted) holds: nothing is left to decide.
    2. ``request`` (from :func:`manual_request`): abort, or promote skipping the steps left.
    3. A round with a Failed measurement adds one to ``failures``; more than
       ``failureLimit`` (counted over the whole canary) aborts, naming the first failed
       metric, its value and its bound.
    4. A round with an Inconclusive measurement (and none Failed) holds as Inconclusive.
    5. A step without a pause waits for promote.
    6. Before the step's pause ends: hold until then.
    7. After it, with analysis: the newest round, made since the step began, must have
       passed every metric, else hold (a step is never passed on no evidence).
    8. Then advance to the next step, or promote after the last.
    """
    if status.phase in ("Promoting", "Promoted", "Aborted"):
        return Hold(status, reason=f"the canary is {status.phase.lower()}")
    if request == "abort":
        message = f"canary {status.release} aborted by request"
        return Abort(_ended(status, "Aborted", 0, message), message)
    if request == "promote":
        message = f"canary {status.release} promoted by request at step {status.step}"
        return Promote(_ended(status, "Promoting", 100, message), manual=True)
    if measurements is None:
        return _step_decision(canary, status, now, "")
    judged = _judge_round(canary, status, measurements, now)
    if not isinstance(judged, tuple):
        return judged
    status, failed_within_limit = judged
    return _step_decision(canary, status, now, failed_within_limit)


def _judge_round(
    canary: CanarySpec, status: CanaryStatus, measurements: Sequence[Measurement], now: datetime
) -> Abort | Inconclusive | tuple[CanaryStatus, str]:
    """Rules 3 and 4: the round recorded in the status, and an abort or an inconclusive
    hold; else the status and, when a failure is still tolerated, what failed."""
    status = status.model_copy(
        update={"measurements": list(measurements), "last_analysis_at": rfc3339(now)}
    )
    failed = [m for m in measurements if m.outcome == "Failed"]
    if not failed:
        inconclusive = [m for m in measurements if m.outcome == "Inconclusive"]
        if not inconclusive:
            return status, ""
        reason = "; ".join(f"{m.metric}: {m.reason}" for m in inconclusive)
        return Inconclusive(status.model_copy(update={"message": reason}), reason)
    failures = status.failures + 1
    status = status.model_copy(update={"failures": failures})
    limit = canary.analysis.failure_limit if canary.analysis is not None else 0
    first = failed[0]
    detail = f"{first.metric} = {first.value:g}, bound {first.bound()}"
    if failures <= limit:
        return status, f"{detail} ({failures} of {limit} failures tolerated)"
    message = (
        f"canary {status.release} aborted: {detail} "
        f"({failures} failed measurements, failureLimit {limit})"
    )
    ended = _ended(status, "Aborted", 0, message)
    return Abort(ended, message, metric=first.metric, value=first.value, bound=first.bound())


def _step_decision(
    canary: CanarySpec, status: CanaryStatus, now: datetime, failed_within_limit: str
) -> Decision:
    """Rules 5 to 8: wait for promote, hold the step, advance or promote."""
    step = canary.steps[status.step]
    if step.pause is None:
        message = failed_within_limit or f"step {status.step} waits for promote"
        held = status.model_copy(update={"phase": "Paused", "message": message})
        return WaitForPromote(held, status.step)
    ends = parse_time(status.step_ends_at) if status.step_ends_at else now
    if now < ends:
        reason = failed_within_limit or f"step {status.step} holds until {rfc3339(ends)}"
        return Hold(status.model_copy(update={"message": reason}), reason, until=ends)
    if canary.analysis is not None and not _latest_round_passed(status):
        reason = failed_within_limit or (
            f"step {status.step} waits for a passing measurement before it ends"
        )
        return Hold(status.model_copy(update={"message": reason}), reason)

    following = status.step + 1
    if following >= len(canary.steps):
        message = f"canary {status.release} passed every step"
        return Promote(_ended(status, "Promoting", 100, message), manual=False)
    next_ends = _step_ends(canary, following, now)
    weight = canary.steps[following].weight
    advanced = status.model_copy(
        update={
            "step": following,
            "weight": weight,
            "phase": "Progressing" if next_ends is not None else "Paused",
            "step_started_at": rfc3339(now),
            "step_ends_at": rfc3339(next_ends) if next_ends is not None else None,
            "message": f"step {following}: weight {weight}",
        }
    )
    return Advance(advanced, following, weight)


def _ended(status: CanaryStatus, phase: str, weight: int, message: str) -> CanaryStatus:
    return status.model_copy(
        update={"phase": phase, "weight": weight, "step_ends_at": None, "message": message}
    )
