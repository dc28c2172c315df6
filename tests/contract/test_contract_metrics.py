"""flux_contract.metrics names every metric the server registers, as the server registers
it, and every ``fluxserve_*`` name the monitoring files query."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from flux_contract import metrics
from flux_contract.reasons import REASONS
from flux_server.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
METRIC_NAME = re.compile(r"(?<![:\w])fluxserve_[a-z0-9_]+")
# Grouping and matching labels in PromQL: `by (a, b)`, `on (a)`, `{a="x", b=~"y"}`.
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
BY_NAME = {metric.name: metric for metric in metrics.ALL}
PROMETHEUS_LABELS = {"job", "instance", "__name__"}
"""Labels Prometheus itself puts on every target's series."""
LABELS = {metrics.LE, *metrics.POD_LABELS, *PROMETHEUS_LABELS} | {
    label for metric in metrics.ALL for label in metric.labels
}


def _unknown(query: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names ``query`` uses that the contract lacks."""
    names = set(METRIC_NAME.findall(query)) - metrics.series_names()
    labels = {name.strip() for group in GROUPING.findall(query) for name in group.split(",")}
    labels |= set(MATCHER.findall(query))
    return names, labels - {""} - LABELS


def _registered(registry: CollectorRegistry) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """name → (kind, help, label names) of every metric in the server's registry."""
    labels: dict[str, tuple[str, ...]] = {}
    for collector in list(registry._collector_to_names):
        if hasattr(collector, "_labelnames"):
            labels[collector._name] = tuple(collector._labelnames)
    found = {}
    for family in registry.collect():
        sampled = {key for sample in family.samples for key in sample.labels} - {metrics.LE}
        names = labels.get(family.name, tuple(sorted(sampled)))
        found[family.name] = (family.type, family.documentation, names)
    return found


def test_every_metric_the_server_registers_is_in_the_contract() -> None:
    registered = _registered(Metrics().registry)
    assert registered, "the server registered no metric"
    missing = sorted(set(registered) - set(BY_NAME))
    assert not missing, f"registered by the server, absent from flux_contract.metrics: {missing}"
    for name, (kind, help_text, labels) in registered.items():
        metric = BY_NAME[name]
        assert (metric.kind, metric.labels) == (kind, labels), name
        assert metric.help == help_text, name
    unregistered = sorted(set(BY_NAME) - set(registered))
    assert not unregistered, f"in flux_contract.metrics, not registered: {unregistered}"


def test_series_names_follow_the_kind() -> None:
    assert metrics.REQUESTS.total == "fluxserve_requests_total"
    assert metrics.REQUEST_DURATION.bucket == "fluxserve_request_duration_seconds_bucket"
    assert metrics.QUEUE_DEPTH.series == ("fluxserve_queue_depth",)
    with pytest.raises(ValueError, match="gauge, not a counter"):
        _ = metrics.READY.total
    with pytest.raises(ValueError, match="counter, not a histogram"):
        _ = metrics.REQUESTS.bucket
    assert all(metric.name.startswith(metrics.PREFIX) for metric in metrics.ALL)
    assert {m.name for m in metrics.ALL if m.name.startswith(metrics.EXPERIMENT_PREFIX)} == {
        m.name for m in metrics.EXPERIMENT_METRICS
    }


def test_server_error_codes_cover_every_reason_with_a_5xx() -> None:
    pattern = re.compile(f"^(?:{metrics.SERVER_ERROR_CODES})$")
    for wire in REASONS.values():
        server_fault = wire.http >= 500
        assert bool(pattern.match(str(wire.http))) == server_fault, wire
        if server_fault:
            assert pattern.match(wire.grpc), wire
    assert not pattern.match("INVALID_ARGUMENT") and not pattern.match("429")


def _promql_in_deploy() -> list[tuple[str, str]]:
    """(file, query) of every PromQL expression in the alert rules, the dashboard and the
    adapter's rules."""
    queries: list[tuple[str, str]] = []
    monitoring = ROOT / "deploy" / "monitoring"
    rules = yaml.safe_load((monitoring / "prometheusrule.yaml").read_text("utf-8"))
    for group in rules["spec"]["groups"]:
        queries += [("prometheusrule.yaml", rule["expr"]) for rule in group["rules"]]
    dashboard = json.loads((monitoring / "grafana-dashboard.json").read_text("utf-8"))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query", "definition") and isinstance(value, str):
                    queries.append(("grafana-dashboard.json", value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    adapter = yaml.safe_load((monitoring / "prometheus-adapter-values.yaml").read_text("utf-8"))
    for rule in adapter["rules"]["custom"]:
        queries.append(("prometheus-adapter-values.yaml", rule["seriesQuery"]))
    return queries


def test_queries_in_deploy_name_contract_series_and_labels() -> None:
    queries = _promql_in_deploy()
    assert len(queries) > 20
    for where, query in queries:
        names, labels = _unknown(query)
        assert not names, f"{where}: {sorted(names)} is no series of flux_contract.metrics"
        assert not labels, f"{where}: unknown labels {sorted(labels)} in {query}"


def test_every_metric_name_in_deploy_and_charts_is_a_contract_series() -> None:
    series = metrics.series_names()
    files = [
        path
        for top in ("deploy", "charts")
        for path in sorted((ROOT / top).rglob("*"))
        if path.is_file() and path.suffix in (".yaml", ".yml", ".json", ".tpl", ".txt")
    ]
    assert files
    for path in files:
        unknown = set(METRIC_NAME.findall(path.read_text("utf-8"))) - series
        assert not unknown, f"{path.relative_to(ROOT)}: {sorted(unknown)}"


def test_the_check_catches_a_typo() -> None:
    assert _unknown('sum by (pod) (fluxserve_queue_depth{track="canary"})') == (set(), set())
    assert _unknown("sum(fluxserve_queue_dept)") == ({"fluxserve_queue_dept"}, set())
    assert _unknown("sum by (arms) (fluxserve_ready)") == (set(), {"arms"})
    assert _unknown('fluxserve_ready{tarck="canary"}') == (set(), {"tarck"})
