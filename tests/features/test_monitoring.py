"""The monitoring files: every query parses as PromQL and names metrics the server
really exports; the PodMonitor selects the pods the operator renders; the adapter
exposes the metric the operator's HPA reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.metrics_core import Metric

from flux_server.metrics import Metrics

from .metric_names import EXPERIMENT_METRICS, SERVER_METRICS

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
METRIC_NAME = re.compile(r"(?<![:\w])fluxserve_[a-z0-9_]+")
SEVERITIES = {"critical", "warning", "info"}


def _exported_series() -> set[str]:
    """Every series name the server's /metrics can carry."""
    metrics = Metrics()
    names: set[str] = set()
    family: Metric
    for family in metrics.registry.collect():
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "gauge": [""],
        }[family.type]
        names |= {family.name + suffix for suffix in suffixes}
    return names


EXPORTED = _exported_series()


def _check_query(expr: str) -> set[str]:
    """Parse ``expr`` (raising on a syntax error) and return the metric names it uses."""
    promql_parser.parse(expr)
    used = set(METRIC_NAME.findall(expr))
    unknown = used - EXPORTED
    assert not unknown, f"{sorted(unknown)} not exported by the server, in: {expr}"
    return used


def _load_yaml(name: str) -> Any:
    return yaml.safe_load((MONITORING / name).read_text("utf-8"))


def test_the_server_exports_the_documented_metrics() -> None:
    assert SERVER_METRICS <= EXPORTED


def test_metric_check_catches_a_typo() -> None:
    with pytest.raises(AssertionError, match="fluxserve_queue_dept"):
        _check_query("sum(fluxserve_queue_dept)")
    with pytest.raises(ValueError):
        _check_query("sum(rate(fluxserve_requests_total[5m])")


def test_prometheus_rules_parse_and_are_complete() -> None:
    doc = _load_yaml("prometheusrule.yaml")
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    recorded: set[str] = set()
    alerts: list[dict[str, Any]] = []
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}
            expr = rule["expr"]
            # Recorded series are queried by their own names.
            plain = expr
            for name in recorded:
                plain = plain.replace(name, "vector(0)")
            _check_query(plain)
            promql_parser.parse(expr)
            if "record" in rule:
                assert re.fullmatch(r"[a-z_]+:fluxserve_[a-z0-9_]+:[a-z0-9_]+", rule["record"])
                recorded.add(rule["record"])
            else:
                alerts.append(rule)
                assert re.fullmatch(r"Fluxserve[A-Z][A-Za-z]+", rule["alert"])
                promql_parser.parse_duration(rule["for"])
                assert rule["labels"]["severity"] in SEVERITIES
                assert {"summary", "description"} <= set(rule["annotations"])
                for text in rule["annotations"].values():
                    assert text.count("{{") == text.count("}}")
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names))
    used = " ".join(a["expr"] for a in alerts)
    for needed in ("fluxserve_queue_depth", "fluxserve_requests_total", "fluxserve_ready"):
        assert needed in used or any(needed in r for r in recorded)


def test_grafana_dashboard_queries_parse() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text("utf-8"))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "pod"} <= variables
    ids: list[int] = []
    used: set[str] = set()
    for panel in dashboard["panels"]:
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$pod", ".*")
            )
            assert "$" not in expr, f"unknown variable in {target['expr']}"
            used |= _check_query(expr)
    assert len(ids) == len(set(ids))
    # Every documented metric is on the dashboard (the server may export more).
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    documented = SERVER_METRICS | EXPERIMENT_METRICS
    missing = {re.sub(r"_(bucket|sum|count)$", "", n) for n in documented} - shown
    assert not missing, f"not on the dashboard: {missing}"


def test_adapter_exposes_queue_depth_per_pod() -> None:
    rules = _load_yaml("prometheus-adapter-values.yaml")["rules"]
    (rule,) = rules["custom"]
    _check_query(rule["seriesQuery"])
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
    assert rule["resources"]["overrides"]["namespace"]["resource"] == "namespace"
    assert rule["name"]["as"] == "fluxserve_queue_depth"
    query = (
        rule["metricsQuery"]
        .replace("<<.GroupBy>>", "namespace, pod")
        .replace("<<.Series>>", "fluxserve_queue_depth")
        .replace("<<.LabelMatchers>>", 'namespace="studio", pod=~"flux-dev-.*"')
    )
    _check_query(query)


def _rendered_objects() -> list[dict[str, Any]]:
    from flux_operator.render import Owner, render_all
    from flux_operator.spec import FluxDeployment

    doc = yaml.safe_load(
        (ROOT / "tests" / "operator" / "examples" / "good" / "full.yaml").read_text("utf-8")
    )
    spec = FluxDeployment.model_validate(doc).spec
    return render_all(Owner(name="flux-dev", namespace="studio", uid="u-1"), spec)


def test_pod_monitor_selects_the_rendered_server_pods() -> None:
    objects = {o["kind"]: o for o in _rendered_objects()}
    template = objects["Deployment"]["spec"]["template"]
    monitor = _load_yaml("podmonitor.yaml")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    labels = template["metadata"]["labels"]
    assert wanted.items() <= labels.items()
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports


def test_hpa_reads_the_metric_the_adapter_exposes() -> None:
    objects = {o["kind"]: o for o in _rendered_objects()}
    metrics = objects["HorizontalPodAutoscaler"]["spec"]["metrics"]
    names = {m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"}
    adapter = _load_yaml("prometheus-adapter-values.yaml")["rules"]["custom"]
    assert names <= {r["name"]["as"] for r in adapter}


def test_kustomization_lists_the_files_that_exist() -> None:
    kustomization = _load_yaml("kustomization.yaml")
    for name in kustomization["resources"]:
        assert (MONITORING / name).is_file()
    for generator in kustomization["configMapGenerator"]:
        for name in generator["files"]:
            assert (MONITORING / name).is_file()


def test_kustomize_builds_the_configmap_from_the_dashboard() -> None:
    import subprocess

    kubectl = ROOT / ".tools" / "bin" / "kubectl"
    if not kubectl.exists():
        pytest.skip(f"kubectl is not installed at {kubectl.relative_to(ROOT)}: run `make tools`")
    built = subprocess.run(
        [str(kubectl), "kustomize", str(MONITORING)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    objects = {doc["kind"]: doc for doc in yaml.safe_load_all(built)}
    assert set(objects) == {"ConfigMap", "PodMonitor", "PrometheusRule"}
    config_map = objects["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["grafana-dashboard.json"])
    assert dashboard["uid"] == "fluxserve-overview"


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def test_gpu_gauges_stay_zero_without_a_gpu() -> None:
    if _cuda_available():
        pytest.skip("this machine has a GPU: see test_gpu_gauges_read_nvml")
    metrics = Metrics()
    metrics.render()
    assert metrics.registry.get_sample_value("fluxserve_gpu_memory_used_bytes") == 0
    assert metrics.registry.get_sample_value("fluxserve_gpu_utilization_ratio") == 0


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device")
def test_gpu_gauges_read_nvml() -> None:
    import pynvml
    import torch

    block = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    metrics = Metrics()
    metrics.render()
    used = metrics.registry.get_sample_value("fluxserve_gpu_memory_used_bytes")
    busy = metrics.registry.get_sample_value("fluxserve_gpu_utilization_ratio")
    # NVML counts the whole device (CUDA context included), so more than torch holds.
    assert used is not None and used >= block.numel()
    assert busy is not None and 0.0 <= busy <= 1.0
    pynvml.nvmlInit()
    total = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total
    assert used <= total
