"""ArgoCD's health of a FluxDeployment during a canary: Progressing while it runs,
Suspended while it waits for a manual promote, Degraded after an abort. The canary
statuses are the ones ``flux_operator.reconcile.canary_decision.decide`` writes, not
hand-written."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from argocd.test_health import HEALTH_KEY, READY, _script, fxd, run_health
from flux_operator.reconcile.canary_decision import Abort, WaitForPromote, decide, judge, start
from flux_operator.spec import CanaryMetric, CanarySpec, CanaryStatus

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPEC = CanarySpec.model_validate(
    {
        "steps": [{"weight": 10, "pause": "10m"}, {"weight": 50}],
        "analysis": {"prometheusUrl": "http://p:9090", "failureLimit": 0},
    }
)
ERRORS = CanaryMetric(name="error-ratio", max=0.05)


def _with_canary(canary: CanaryStatus) -> dict[str, Any]:
    status = {**READY, "phase": "Progressing"}
    status["canary"] = canary.model_dump(by_alias=True, exclude_none=True, mode="json")
    return fxd(status)


def test_a_running_canary_is_progressing_until_its_step_ends() -> None:
    running = start(SPEC, "v2", 4, T0)
    status, message = run_health(_script(HEALTH_KEY), _with_canary(running))
    assert (status, message) == (
        "Progressing",
        "Canary v2 at step 0: 10% of traffic until 2026-01-01T00:10:00Z",
    )


def test_a_canary_waiting_for_promote_is_suspended() -> None:
    advanced = decide(
        SPEC, start(SPEC, "v2", 4, T0), [judge(ERRORS, 0.0, T0)], T0 + timedelta(minutes=10)
    )
    waiting = decide(SPEC, advanced.status, None, T0 + timedelta(minutes=11))
    assert isinstance(waiting, WaitForPromote)
    status, message = run_health(_script(HEALTH_KEY), _with_canary(waiting.status))
    assert status == "Suspended"
    assert message == (
        "Canary v2 at step 1 (50% of traffic) waits for `python -m flux_operator promote flux`"
    )


def test_an_aborted_canary_is_degraded_naming_metric_value_and_bound() -> None:
    aborted = decide(SPEC, start(SPEC, "v3", 5, T0), [judge(ERRORS, 0.4, T0)], T0)
    assert isinstance(aborted, Abort)
    status, message = run_health(_script(HEALTH_KEY), _with_canary(aborted.status))
    assert status == "Degraded"
    assert "error-ratio = 0.4, bound max 0.05" in message


def test_a_promoting_canary_is_progressing() -> None:
    promoting = decide(SPEC, start(SPEC, "v2", 4, T0), None, T0, "promote")
    status, message = run_health(_script(HEALTH_KEY), _with_canary(promoting.status))
    assert (status, message) == ("Progressing", "Promoting canary v2")


def test_a_promoted_canary_leaves_health_to_the_rest_of_the_status() -> None:
    promoted = start(SPEC, "v2", 4, T0).model_copy(update={"phase": "Promoted"})
    body = fxd({**READY, "canary": promoted.model_dump(by_alias=True, exclude_none=True)})
    assert run_health(_script(HEALTH_KEY), body)[0] == "Healthy"


def test_a_stale_canary_status_waits_for_the_operator() -> None:
    aborted = decide(SPEC, start(SPEC, "v3", 5, T0), [judge(ERRORS, 0.4, T0)], T0)
    body = _with_canary(aborted.status)
    body["metadata"]["generation"] = 4  # the spec moved on since the abort
    assert run_health(_script(HEALTH_KEY), body)[0] == "Progressing"


def test_a_canary_waiting_for_its_first_ready_pod_is_progressing() -> None:
    starting = start(SPEC, "v2", 4, T0).model_copy(
        update={"phase": "Starting", "step_ends_at": None}
    )
    status, message = run_health(_script(HEALTH_KEY), _with_canary(starting))
    assert (status, message) == ("Progressing", "Canary v2 at step 0: 10% of traffic")
