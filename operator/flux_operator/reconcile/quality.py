"""The quality gate as one measurement of the canary's analysis, judged from its Job.

Each round of analysis of a canary whose ``analysis.quality`` is set looks at the gate's
Job for this canary and attempt (``render.quality_job``); the reconciler creates it when
it is absent. The Job answers once, and its answer stands for every round until the
canary counts a failed measurement (of any metric): the attempt is the canary's
``failures``, so a failure tolerated by ``failureLimit`` runs the gate again, as a failed
query is asked again. The measurement is:

- **Inconclusive** while the Job runs (the step holds: it never passes on no evidence),
  and when the gate could not judge (exit 2: a bad golden set, a model that does not
  load, a stable release that drew nothing);
- **Failed** when the gate failed the candidate (exit 1, or a Job that failed without a
  verdict: killed at its deadline, say): named ``quality:CHECK`` with that check's value
  and bound, so the abort and the ``RolledBack`` condition say what fell;
- **Passed** when the Job completed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flux_operator.reconcile.training import job_state, message_object, termination_message
from flux_operator.spec import Measurement, rfc3339

METRIC = "quality"


def parse_verdict(message: str | None) -> dict[str, Any] | None:
    """The gate's verdict object (``verdict``, ``message``, ``failed``), or None."""
    return message_object(message, "verdict")


def _failed_check(verdict: dict[str, Any]) -> tuple[str, float | None, float | None, float | None]:
    """The first failed check: its name, value, min and max (None where not given)."""
    failed = verdict.get("failed") or []
    first = failed[0] if failed and isinstance(failed[0], dict) else {}

    def number(key: str) -> float | None:
        value = first.get(key)
        return float(value) if isinstance(value, int | float) else None

    name = str(first.get("name") or "verdict")
    return name, number("value"), number("min"), number("max")


def gate_measurement(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], job_name: str, now: datetime
) -> Measurement:
    """The gate's measurement in this round, from its Job (None: just created) and the
    Job's pods (their termination message)."""
    at = rfc3339(now)
    state = "running" if job is None else job_state(job)
    if state == "running":
        reason = f"the quality gate Job {job_name} is running"
        return Measurement(metric=METRIC, outcome="Inconclusive", reason=reason, time=at)
    raw = termination_message(pods)
    verdict = parse_verdict(raw)
    message = str((verdict or {}).get("message") or (raw or "").strip()[-512:])
    if state == "succeeded":
        reason = message or f"the quality gate Job {job_name} passed"
        return Measurement(
            metric=METRIC, value=1.0, min=1.0, outcome="Passed", reason=reason[:1024], time=at
        )
    if verdict is not None and verdict.get("verdict") == "error":
        return Measurement(
            metric=METRIC, outcome="Inconclusive", reason=message[:1024] or "error", time=at
        )
    if verdict is None:
        why = message or _job_failure(job) or f"the quality gate Job {job_name} failed"
        return Measurement(
            metric=METRIC, value=0.0, min=1.0, outcome="Failed", reason=why[:1024], time=at
        )
    name, value, low, high = _failed_check(verdict)
    return Measurement(
        metric=f"{METRIC}:{name}",
        value=value if value is not None else 0.0,
        min=low if (low is not None or high is not None) else 1.0,
        max=high,
        outcome="Failed",
        reason=message[:1024],
        time=at,
    )


def _job_failure(job: dict[str, Any] | None) -> str:
    for condition in ((job or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
    return ""
