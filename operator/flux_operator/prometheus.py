"""Measure a canary on Prometheus: fill in a query (``reconcile.analysis``), ask the HTTP
API (``/api/v1/query``), and judge the number (``reconcile.canary_decision.judge``). The one
module that talks to Prometheus, as ``kube`` is the one that talks to the Kubernetes API.
"""

from __future__ import annotations

import math
from datetime import datetime

import httpx

from flux_operator.reconcile.analysis import metric_query
from flux_operator.reconcile.canary_decision import judge
from flux_operator.spec import CanaryAnalysis, CanaryMetric, Measurement

QUERY_TIMEOUT_SECONDS = 10.0


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
