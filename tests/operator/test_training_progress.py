"""Reading a running trainer's progress from its log tail (reconcile.training, pure)."""

from __future__ import annotations

import json

import pytest

from flux_operator.reconcile.training import progress, progress_from_log, running_pod


def _line(**fields: object) -> str:
    return json.dumps({"level": "info", "logger": "flux_trainer", "message": "step"} | fields)


def test_the_newest_step_line_wins() -> None:
    log = "\n".join(
        [
            _line(event="step", step=10, steps=400, eta_s=900.0),
            _line(event="step", step=11, steps=400, eta_s=3725.4),
            _line(event="checkpoint", step=11),
            "Traceback (most recent call last):",  # not JSON: skipped
            "",
        ]
    )
    assert progress_from_log(log, 400) == {
        "step": 11,
        "total": 400,
        "etaSeconds": 3725,
        "summary": "11/400 (ETA 1h02m)",
    }


@pytest.mark.parametrize(
    "log",
    [
        "",
        "plain text\n",
        _line(event="validation", loss=0.3),
        _line(event="step", step="11", eta_s=3.0),
        _line(event="step", step=-1, eta_s=3.0),
        _line(event="step", step=True, eta_s=3.0),
        json.dumps([1, 2]),
    ],
)
def test_a_tail_without_a_step_line_says_nothing(log: str) -> None:
    assert progress_from_log(log, 400) is None


def test_a_step_past_the_total_or_an_odd_eta_is_bounded() -> None:
    said = progress_from_log(_line(event="step", step=999, eta_s=-5), 400)
    assert said == {"step": 400, "total": 400, "summary": "400/400"}
    said = progress_from_log(_line(event="step", step=3, eta_s=float("inf")), 400)
    assert said == progress(3, 400)


def test_eta_summaries() -> None:
    assert progress(0, 400)["summary"] == "0/400"
    assert progress(1, 400, 59.6)["summary"] == "1/400 (ETA 1m00s)"
    assert progress(1, 400, 0)["summary"] == "1/400 (ETA 0m00s)"
    assert progress(1, 400, 7200)["summary"] == "1/400 (ETA 2h00m)"


def test_the_log_is_the_newest_running_pod_s() -> None:
    def pod(name: str, phase: str, created: str) -> dict[str, object]:
        meta = {"name": name, "creationTimestamp": created}
        return {"metadata": meta, "status": {"phase": phase}}

    pods = [
        pod("a", "Failed", "2026-01-01T00:00:03Z"),
        pod("b", "Running", "2026-01-01T00:00:01Z"),
        pod("c", "Running", "2026-01-01T00:00:02Z"),
        pod("d", "Pending", "2026-01-01T00:00:04Z"),
    ]
    assert running_pod(pods) == "c"
    assert running_pod([pods[0], pods[3]]) is None
