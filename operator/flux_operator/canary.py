"""The canary's decisions, as pure functions: no clock, no I/O.

Given the canary spec, ``status.canary``, the measurements of this reconciliation (if
analysis ran) and *now*, :func:`decide` returns one decision with the status to write.
:func:`split_pods` says how many pods each side runs. The reconciler does the rest: it
measures (``flux_operator.analysis``), applies what the decision implies, writes the status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from flux_operator.canary_status import CanaryStatus, Measurement, MeasurementOutcome
from flux_operator.spec_rollout import CanaryMetric, CanarySpec, parse_duration

PROMOTE_ANNOTATION = "fluxserve.dev/canary-promote"
"""Set to the canary's release (``python -m flux_operator promote NAME``): promote now."""
ABORT_ANNOTATION = "fluxserve.dev/canary-abort"
"""Set to the canary's release (``python -m flux_operator abort NAME``): abort now."""

ManualRequest = Literal["promote", "abort"]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """Keep the step in force; look again at ``until`` (or at the next analysis)."""

    status: CanaryStatus
    reason: str
    until: datetime | None = None


@dataclass(frozen=True)
class Inconclusive:
    """A measurement could not be made (Prometheus unreachable, no data): neither promote
    nor abort; the reason belongs in a condition."""

    status: CanaryStatus
    reason: str


@dataclass(frozen=True)
class WaitForPromote:
    """The step has no pause: hold until ``promote`` (analysis still runs and may abort)."""

    status: CanaryStatus
    step: int


@dataclass(frozen=True)
class Advance:
    """Go to step ``step``: the canary takes ``weight`` percent of the traffic."""

    status: CanaryStatus
    step: int
    weight: int


@dataclass(frozen=True)
class Promote:
    """The stable Deployment takes the canary's revision; then the canary is removed."""

    status: CanaryStatus
    manual: bool


@dataclass(frozen=True)
class Abort:
    """Canary to zero, all traffic to stable, the revision recorded as failed. ``metric``,
    ``value`` and ``bound`` are set when a measurement caused it (None for a manual abort)."""

    status: CanaryStatus
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

    failed_within_limit = ""
    if measurements is not None:
        status = status.model_copy(
            update={"measurements": list(measurements), "last_analysis_at": rfc3339(now)}
        )
        failed = [m for m in measurements if m.outcome == "Failed"]
        inconclusive = [m for m in measurements if m.outcome == "Inconclusive"]
        if failed:
            failures = status.failures + 1
            status = status.model_copy(update={"failures": failures})
            limit = canary.analysis.failure_limit if canary.analysis is not None else 0
            first = failed[0]
            detail = f"{first.metric} = {first.value:g}, bound {first.bound()}"
            if failures > limit:
                message = (
                    f"canary {status.release} aborted: {detail} "
                    f"({failures} failed measurements, failureLimit {limit})"
                )
                return Abort(
                    _ended(status, "Aborted", 0, message),
                    message,
                    metric=first.metric,
                    value=first.value,
                    bound=first.bound(),
                )
            failed_within_limit = f"{detail} ({failures} of {limit} failures tolerated)"
        elif inconclusive:
            reason = "; ".join(f"{m.metric}: {m.reason}" for m in inconclusive)
            return Inconclusive(status.model_copy(update={"message": reason}), reason)

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


# --- pods ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodSplit:
    stable: int
    canary: int

    @property
    def canary_share(self) -> int:
        """Percent of the shared Service's endpoints that are canary pods: the traffic the
        canary gets without a Gateway (kube-proxy balances per connection, not per weight)."""
        total = self.stable + self.canary
        return 0 if total == 0 else round(100 * self.canary / total)


def split_pods(total: int, weight: int, max_surge: int) -> PodSplit:
    """Pods per side while the canary holds ``weight`` percent.

    ``total`` is the pods the service runs outside a canary: ``spec.replicas``, or with
    autoscaling the HPA's ``status.desiredReplicas`` (the total it asks for, computed from
    the load on both sides, since the shared selector covers both tracks).

    - The canary gets ``ceil(total * weight / 100)`` pods, at least 1 when ``weight > 0``.
    - ``max_surge >= 1``: up to ``max_surge`` of those are extra; the stable side gives up
      the rest, so ``stable + canary <= total + max_surge`` at every step.
    - ``max_surge == 0``: the stable side gives up exactly the canary's pods
      (``stable + canary == total``) but always keeps one while ``weight < 100``, so the
      canary may get fewer pods than its weight says (``total >= 2`` is required).
    - ``weight == 0`` or ``total == 0``: no canary pods.

    With autoscaling the HPA alone writes the stable Deployment's replicas, so ``stable``
    does not apply: ``flux_operator.reconcile.canary_pods.pod_counts`` says how the
    HPA's count is shared (the canary's pods capped at ``max_surge``, or, at 0, taken from
    the stable side by lowering the HPA's bounds).
    """
    if total <= 0 or weight <= 0:
        return PodSplit(stable=max(total, 0), canary=0)
    canary = max(1, math.ceil(total * min(weight, 100) / 100))
    if max_surge >= 1:
        extra = min(max_surge, canary)
        return PodSplit(stable=total - canary + extra, canary=canary)
    if weight < 100:
        canary = min(canary, total - 1)
    return PodSplit(stable=total - canary, canary=canary)
