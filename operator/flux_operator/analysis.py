"""Measure a canary on Prometheus: fill in a query, ask the HTTP API (``/api/v1/query``),
and judge the number. The one place the operator talks to Prometheus.

The built-in queries read the series of one FluxDeployment's canary pods: the PodMonitor in
``deploy/monitoring`` copies the pod labels onto every series as ``release``
(``app.kubernetes.io/version``), ``track`` (``fluxserve.dev/track``) and ``fluxdeployment``
(``fluxserve.dev/fluxdeployment``); Prometheus adds ``namespace``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime

import httpx

from flux_operator.canary import judge
from flux_operator.canary_status import Measurement
from flux_operator.spec_rollout import CanaryAnalysis, CanaryMetric

QUERY_TIMEOUT_SECONDS = 10.0

_CANARY = 'namespace="{{namespace}}",fluxdeployment="{{name}}",release="{{release}}",track="canary"'
# 5xx over REST, and the gRPC codes the server maps to a 5xx (flux_server.errors.STATUS):
# a refusal of the caller's request (4xx, INVALID_ARGUMENT, RESOURCE_EXHAUSTED) is not
# the release's fault and does not count.
SERVER_ERROR_CODES = "5..|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|UNIMPLEMENTED|UNKNOWN|DATA_LOSS"

_REQUESTS = "fluxserve_requests_total{" + _CANARY + "}"
_ERRORS = "fluxserve_requests_total{" + _CANARY + ',code=~"' + SERVER_ERROR_CODES + '"}'
_BUCKETS = "fluxserve_request_duration_seconds_bucket{" + _CANARY + "}"

BUILTIN_QUERIES = {
    # `or vector(0)`: a canary that never failed has no 5xx series at all.
    "error-ratio": (
        "(sum(rate(" + _ERRORS + "[{{interval}}])) or vector(0))"
        " / sum(rate(" + _REQUESTS + "[{{interval}}]))"
    ),
    "p95-latency-seconds": (
        "histogram_quantile(0.95, sum by (le) (rate(" + _BUCKETS + "[{{interval}}])))"
    ),
}
"""PromQL of the built-in metrics, over the canary pods of one FluxDeployment and release.
Without requests in the window both have no data (or NaN): the measurement is
inconclusive, never a pass."""


def release_label(release: str) -> str:
    """The release as a label value, as the pods carry it (``app.kubernetes.io/version``):
    at most 63 characters of ``[A-Za-z0-9._-]``, alphanumeric at both ends."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", release)[:63]
    return cleaned.strip("._-") or "unknown"


def _label_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def metric_query(
    metric: CanaryMetric, *, release: str, namespace: str, name: str, interval: str
) -> str:
    """The metric's PromQL with ``{{release}}``, ``{{namespace}}``, ``{{name}}`` and
    ``{{interval}}`` filled in (values escaped for a label matcher)."""
    template = metric.query if metric.query is not None else BUILTIN_QUERIES[metric.name]
    values = {
        "{{release}}": _label_escape(release_label(release)),
        "{{namespace}}": _label_escape(namespace),
        "{{name}}": _label_escape(name),
        "{{interval}}": interval,
    }
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template


class QueryFailed(Exception):
    """Prometheus could not answer (unreachable, an error, an answer that is not one number)."""


def query_value(client: httpx.Client, base_url: str, promql: str) -> float | None:
    """The one number an instant query returns; None when it returns no series."""
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        response = client.get(url, params={"query": promql}, timeout=QUERY_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise QueryFailed(f"Prometheus at {base_url} unreachable: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        raise QueryFailed(
            f"Prometheus at {base_url} answered {response.status_code} without JSON"
        ) from None
    if body.get("status") != "success":
        raise QueryFailed(
            f"Prometheus at {base_url} refused the query: {body.get('errorType', '')} "
            f"{body.get('error', response.status_code)}".strip()
        )
    try:
        data = body["data"]
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return float(result[1])
        if kind != "vector":
            raise QueryFailed(f"the query returns a {kind}, not one number")
        if not result:
            return None
        if len(result) > 1:
            raise QueryFailed(f"the query returns {len(result)} series, not one number")
        return float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise QueryFailed(
            f"Prometheus at {base_url} answered in an unknown shape: {exc!r}"
        ) from None


def measure(
    analysis: CanaryAnalysis,
    *,
    release: str,
    namespace: str,
    name: str,
    now: datetime,
    client: httpx.Client | None = None,
) -> list[Measurement]:
    """One round: every metric of ``analysis`` measured and judged. Never raises for
    Prometheus's sake: what cannot be measured is an Inconclusive measurement."""
    own = client is None
    http = client or httpx.Client()
    try:
        return [
            _measure_one(http, analysis, metric, target=(release, namespace, name), now=now)
            for metric in analysis.effective_metrics()
        ]
    finally:
        if own:
            http.close()


def _measure_one(
    client: httpx.Client,
    analysis: CanaryAnalysis,
    metric: CanaryMetric,
    *,
    target: tuple[str, str, str],
    now: datetime,
) -> Measurement:
    release, namespace, name = target
    promql = metric_query(
        metric, release=release, namespace=namespace, name=name, interval=analysis.interval
    )
    try:
        value = query_value(client, analysis.prometheus_url, promql)
    except QueryFailed as exc:
        return judge(metric, None, now, reason=str(exc))
    if value is None or math.isnan(value):
        return judge(metric, None, now, reason=f"no data for {promql}")
    return judge(metric, value, now)


def round_summary(measurements: Sequence[Measurement]) -> str:
    """``error-ratio=0.01 (max 0.05) Passed, ...`` for logs and Events."""
    parts = []
    for m in measurements:
        value = "none" if m.value is None else f"{m.value:g}"
        parts.append(f"{m.metric}={value} ({m.bound()}) {m.outcome}")
    return ", ".join(parts)
