"""Canary analysis without I/O: the PromQL of a metric, filled in for one FluxDeployment's
canary, and a round's summary for logs and Events. ``flux_operator.prometheus`` asks
Prometheus; ``canary_decision.judge`` judges the number.

The built-in queries read the series of one FluxDeployment's canary pods: the PodMonitor in
``deploy/monitoring`` copies the pod labels onto every series as ``release``
(``app.kubernetes.io/version``), ``track`` (``fluxserve.dev/track``) and ``fluxdeployment``
(``fluxserve.dev/fluxdeployment``); Prometheus adds ``namespace``.
"""

from __future__ import annotations

from collections.abc import Sequence

from flux_operator.render.naming import label_value
from flux_operator.spec import CanaryMetric, Measurement

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
    return label_value(release)


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


def round_summary(measurements: Sequence[Measurement]) -> str:
    """``error-ratio=0.01 (max 0.05) Passed, ...`` for logs and Events."""
    parts = []
    for m in measurements:
        value = "none" if m.value is None else f"{m.value:g}"
        parts.append(f"{m.metric}={value} ({m.bound()}) {m.outcome}")
    return ", ".join(parts)
