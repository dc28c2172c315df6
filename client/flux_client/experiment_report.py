"""The experiments report: gather each arm's counts (from one server's ``GET /experiments``
or from Prometheus, summing every replica), judge every arm against the control, render a
table or JSON. ``python -m flux_client experiments`` calls ``gather_*``, ``build_report``
and ``render_table`` / ``render_json``.

``ExperimentsCounts`` (``flux_contract.experiment_counts``) is the body of
``GET /experiments`` (the server builds it from its metrics), so both sources feed the
same report.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping
from typing import Any

import httpx

from flux_client.experiment_stats import compare, histogram_quantile
from flux_contract import metrics
from flux_contract.experiment_counts import ArmCounts, ExperimentCounts, ExperimentsCounts


def gather_server(
    base_url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> ExperimentsCounts:
    """One replica's counts: ``GET {base_url}/experiments``."""
    response = httpx.get(
        f"{base_url.rstrip('/')}/experiments", headers=dict(headers or {}), timeout=timeout
    )
    response.raise_for_status()
    return ExperimentsCounts.model_validate(response.json())


ARM_INFO = metrics.EXPERIMENT_ARM_INFO.name
_QUERIES = {
    "requests": metrics.EXPERIMENT_REQUESTS.total,
    "images": metrics.EXPERIMENT_IMAGES.total,
    "gpu_seconds": metrics.EXPERIMENT_GPU_SECONDS.total,
}
_BUCKETS = metrics.EXPERIMENT_REQUEST_DURATION.bucket
_FEEDBACK = metrics.EXPERIMENT_FEEDBACK.total


def prometheus_queries(window: str | None = None) -> dict[str, str]:
    """The PromQL the report runs: totals summed over replicas, or their increase over
    ``window`` (e.g. ``7d``), which survives replica restarts."""

    def total(metric: str, by: str) -> str:
        series = f"increase({metric}[{window}])" if window else metric
        return f"sum by ({by}) ({series})"

    arm = f"{metrics.EXPERIMENT}, {metrics.ARM}"
    queries = {
        "arms": f"max by ({', '.join(metrics.EXPERIMENT_ARM_INFO.labels)}) ({ARM_INFO})",
        "buckets": total(_BUCKETS, f"{arm}, {metrics.LE}"),
        "events": total(_FEEDBACK, ", ".join(metrics.EXPERIMENT_FEEDBACK.labels)),
    }
    queries.update({key: total(metric, arm) for key, metric in _QUERIES.items()})
    return queries


def counts_from_prometheus(results: Mapping[str, list[dict[str, Any]]]) -> ExperimentsCounts:
    """Counts from the ``data.result`` vectors of ``prometheus_queries()`` (by name)."""
    arms: dict[tuple[str, str], ArmCounts] = {}
    positions: dict[tuple[str, str], int] = {}
    for sample in results.get("arms", []):
        labels = sample["metric"]
        key = (labels["experiment"], labels["arm"])
        weight = labels.get("weight", "")
        arms[key] = ArmCounts(
            name=labels["arm"],
            preset=labels.get("preset"),
            weight=int(weight) if weight.isdigit() else None,
        )
        positions[key] = int(labels.get("position", "0"))

    def arm_of(labels: Mapping[str, str]) -> ArmCounts:
        key = (labels["experiment"], labels["arm"])
        if key not in arms:  # counted, but no replica serves it now: after the known arms
            arms[key] = ArmCounts(name=labels["arm"])
            positions[key] = 1_000 + len(positions)
        return arms[key]

    for field in _QUERIES:
        for sample in results.get(field, []):
            setattr(arm_of(sample["metric"]), field, float(sample["value"][1]))
    for sample in results.get("buckets", []):
        labels = sample["metric"]
        arm_of(labels).duration_buckets[labels["le"]] = float(sample["value"][1])
    for sample in results.get("events", []):
        labels = sample["metric"]
        arm_of(labels).events[labels["event"]] = float(sample["value"][1])
    experiments: dict[str, list[tuple[int, ArmCounts]]] = {}
    for (experiment, _), arm in arms.items():
        experiments.setdefault(experiment, []).append((positions[(experiment, arm.name)], arm))
    return ExperimentsCounts(
        experiments=[
            ExperimentCounts(name=name, arms=[arm for _, arm in sorted(found, key=lambda x: x[0])])
            for name, found in sorted(experiments.items())
        ]
    )


def gather_prometheus(
    url: str, *, window: str | None = None, timeout: float = 10.0
) -> ExperimentsCounts:
    """Every replica's counts, from Prometheus' HTTP API (``/api/v1/query``)."""
    results: dict[str, list[dict[str, Any]]] = {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client:
        for name, query in prometheus_queries(window).items():
            response = client.get("/api/v1/query", params={"query": query})
            response.raise_for_status()
            body = response.json()
            if body.get("status") != "success":
                raise ValueError(f"prometheus: {body.get('error', 'query failed')}: {query}")
            results[name] = body["data"]["result"]
    return counts_from_prometheus(results)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _arm_report(arm: ArmCounts) -> dict[str, Any]:
    buckets = [(float(le), count) for le, count in arm.duration_buckets.items()]
    return {
        "name": arm.name,
        "preset": arm.preset,
        "weight": arm.weight,
        "requests": arm.requests,
        "images": arm.images,
        "latency_p50_seconds": _finite(histogram_quantile(0.5, buckets)),
        "latency_p95_seconds": _finite(histogram_quantile(0.95, buckets)),
        "gpu_seconds_per_image": arm.gpu_seconds / arm.images if arm.images else None,
        "events": {
            event: {"count": count, "rate": count / arm.requests if arm.requests else None}
            for event, count in sorted(arm.events.items())
        },
    }


def build_report(counts: ExperimentsCounts) -> dict[str, Any]:
    """``{"experiments": [{"name", "arms": [...], "comparisons": [...]}]}``: per arm its
    counts, latency, GPU cost and event rates; per event and non-control arm the z-test
    against the control (the first arm)."""
    experiments = []
    for experiment in counts.experiments:
        control = experiment.arms[0] if experiment.arms else None
        events = sorted({event for arm in experiment.arms for event in arm.events})
        comparisons = []
        for arm in experiment.arms[1:]:
            assert control is not None
            for event in events:
                successes = min(arm.events.get(event, 0.0), arm.requests)
                control_successes = min(control.events.get(event, 0.0), control.requests)
                result = compare(successes, arm.requests, control_successes, control.requests)
                comparisons.append(
                    {
                        "arm": arm.name,
                        "control": control.name,
                        "event": event,
                        "rate": result.rate,
                        "control_rate": result.control_rate,
                        "difference": result.difference,
                        "ci95": [result.ci_low, result.ci_high],
                        "z": result.z,
                        "p_value": result.p_value,
                        "verdict": result.verdict,
                    }
                )
        experiments.append(
            {
                "name": experiment.name,
                "preset": experiment.preset,
                "arms": [_arm_report(arm) for arm in experiment.arms],
                "comparisons": comparisons,
            }
        )
    return {"experiments": experiments}


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:.3e}"


_VERDICTS = {
    "not_enough_data": "not enough data yet",
    "higher": "higher than control",
    "lower": "lower than control",
    "no_significant_difference": "no significant difference",
}


def _width(text: str) -> int:
    """Terminal columns: East Asian wide characters (水墨) take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(_width(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "  ".join(
            cell + " " * (w - _width(cell)) for cell, w in zip(row, widths, strict=True)
        ).rstrip()
        for row in [header, *rows]
    ]


def render_table(report: Mapping[str, Any]) -> str:
    """A plain-text report, one block per experiment."""
    if not report["experiments"]:
        return "no experiments"
    lines: list[str] = []
    for experiment in report["experiments"]:
        lines.append(f"experiment {experiment['name']}")
        events = sorted({e for arm in experiment["arms"] for e in arm["events"]})
        header = ["arm", "preset", "weight", "requests", "p50 s", "p95 s", "GPU s/image"]
        header += [f"{event} rate" for event in events]
        rows = []
        for arm in experiment["arms"]:
            row = [
                arm["name"],
                arm["preset"] or "-",
                "-" if arm["weight"] is None else str(arm["weight"]),
                _num(arm["requests"], 6),
                _num(arm["latency_p50_seconds"]),
                _num(arm["latency_p95_seconds"]),
                _num(arm["gpu_seconds_per_image"]),
            ]
            row += [_num(arm["events"].get(e, {}).get("rate")) for e in events]
            rows.append(row)
        lines += ["  " + line for line in _table(header, rows)]
        if experiment["comparisons"]:
            header = ["arm", "event", "rate", "control", "difference (95% CI)", "p", "verdict"]
            rows = [
                [
                    c["arm"],
                    c["event"],
                    _num(c["rate"]),
                    _num(c["control_rate"]),
                    f"{c['difference']:+.3f} ({c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f})",
                    _num(c["p_value"]),
                    _VERDICTS[c["verdict"]],
                ]
                for c in experiment["comparisons"]
            ]
            lines += ["  " + line for line in _table(header, rows)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def report(
    *,
    server_url: str | None = None,
    prometheus_url: str | None = None,
    window: str | None = None,
    headers: Mapping[str, str] | None = None,
    as_json: bool = False,
    timeout: float = 10.0,
) -> str:
    """What ``python -m flux_client experiments`` prints: from Prometheus when its URL is
    given (every replica), else from the one server at ``server_url``."""
    if prometheus_url:
        counts = gather_prometheus(prometheus_url, window=window, timeout=timeout)
    elif server_url:
        counts = gather_server(server_url, headers=headers, timeout=timeout)
    else:
        raise ValueError("give a server or a Prometheus URL")
    built = build_report(counts)
    return render_json(built) if as_json else render_table(built)
