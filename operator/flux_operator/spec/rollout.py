"""Canary releases and the Gateway API route: ``spec.rollout.strategy``,
``spec.rollout.canary`` and ``spec.gateway`` (``status.canary`` is in ``canary_status``).

The CRD is generated from these models like the rest of the spec: descriptions become
``kubectl explain``, bounds and CEL rules are enforced by the API server. What a schema
cannot say (weights that rise, a PromQL query that parses, settings that only make sense
together with other parts of the spec) is checked by
``flux_operator.validation.validate_canary``, whose problems name the field and become a
``Degraded`` condition.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from flux_operator.spec.base import Duration, _cel, _Model, parse_duration
from flux_operator.spec.quality import QualityGate

BUILTIN_METRICS = ("error-ratio", "p95-latency-seconds")
"""Metric names with a query written by fluxserve (see ``flux_operator.reconcile.analysis``)."""

METRIC_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MIN_INTERVAL_SECONDS = 10


class CanaryStep(_Model):
    """One step: the canary's share of traffic, then how long to hold it."""

    weight: int = Field(
        ge=0, le=100, description="Percent of traffic the canary takes (0-100); steps rise."
    )
    pause: Duration | None = Field(
        default=None,
        description="How long to hold this step while analysis runs (30s, 10m, 1h). "
        "Omitted: wait for `python -m flux_operator promote NAME`.",
    )


class CanaryMetric(_Model):
    """A number Prometheus returns for the canary, and the bounds it must stay within."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("has(self.max) || has(self.min)", "a metric needs max or min"),
            (
                "has(self.query) || self.name in " + str(list(BUILTIN_METRICS)),
                "a metric other than " + " or ".join(BUILTIN_METRICS) + " needs a query",
            ),
            ("!has(self.max) || !has(self.min) || self.min <= self.max", "min must be <= max"),
        )
    )

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=METRIC_NAME,
        description="Metric name; error-ratio (5xx share of requests) and p95-latency-seconds "
        "are built in and need no query.",
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PromQL returning one number; {{release}}, {{namespace}}, {{name}} and "
        "{{interval}} are filled in.",
    )
    max: float | None = Field(
        default=None, ge=-1e15, le=1e15, description="A value above this fails."
    )
    min: float | None = Field(
        default=None, ge=-1e15, le=1e15, description="A value below this fails."
    )

    @model_validator(mode="after")
    def _bounded(self) -> CanaryMetric:
        if self.max is None and self.min is None:
            raise ValueError("a metric needs max or min")
        if self.query is None and self.name not in BUILTIN_METRICS:
            raise ValueError(f"a metric other than {' or '.join(BUILTIN_METRICS)} needs a query")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError("min must be <= max")
        return self


DEFAULT_METRICS = (
    CanaryMetric(name="error-ratio", max=0.05),
    CanaryMetric(name="p95-latency-seconds", max=60.0),
)
"""What analysis measures when ``metrics`` is omitted."""


class CanaryAnalysis(_Model):
    """Prometheus queries run every interval while a step holds."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.metrics.all(a, self.metrics.exists_one(b, b.name == a.name))",
                "metric names must be unique",
            ),
            (
                f"duration(self.interval) >= duration('{MIN_INTERVAL_SECONDS}s')",
                f"interval must be at least {MIN_INTERVAL_SECONDS}s",
            ),
        )
    )

    prometheus_url: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^https?://[^\s]+$",
        description="Base URL of the Prometheus HTTP API, e.g. "
        "http://prometheus-operated.monitoring:9090.",
    )
    interval: Duration = Field(
        default="1m",
        description="How often to measure; also the rate window of the built-in queries "
        "(keep it at least 4 scrape intervals).",
    )
    failure_limit: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Failed measurements tolerated; one more aborts the canary.",
    )
    metrics: list[CanaryMetric] = Field(
        default_factory=list,
        max_length=16,
        description="Metrics to judge; empty: error-ratio (max 0.05) and p95-latency-seconds "
        "(max 60).",
    )
    quality: QualityGate | None = Field(
        default=None,
        description="Image-quality gate run beside the queries: the canary and stable "
        "release answer the same golden prompts, and a lower score aborts like an error.",
    )

    @model_validator(mode="after")
    def _checks(self) -> CanaryAnalysis:
        names = [m.name for m in self.metrics]
        if len(names) != len(set(names)):
            raise ValueError("metric names must be unique")
        if parse_duration(self.interval) < MIN_INTERVAL_SECONDS:
            raise ValueError(f"interval must be at least {MIN_INTERVAL_SECONDS}s")
        return self

    def effective_metrics(self) -> tuple[CanaryMetric, ...]:
        return tuple(self.metrics) or DEFAULT_METRICS


class CanarySpec(_Model):
    """How a new release is tried on a share of the traffic before it replaces the old."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "has(self.analysis) || self.steps.exists(s, has(s.pause))",
                "a canary needs analysis or at least one step with a pause",
            ),
        )
    )

    max_surge: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Extra pods the canary may add; 0 = carve the canary out of the current "
        "pods (the stable side gives up pods; needs at least 2).",
    )
    steps: list[CanaryStep] = Field(
        min_length=1,
        max_length=32,
        description="Steps in order, weights rising; after the last the canary is promoted.",
    )
    analysis: CanaryAnalysis | None = Field(
        default=None, description="Judge the canary on Prometheus; omitted: pauses only."
    )

    @model_validator(mode="after")
    def _analysis_or_pause(self) -> CanarySpec:
        if self.analysis is None and all(s.pause is None for s in self.steps):
            raise ValueError("a canary needs analysis or at least one step with a pause")
        return self


RolloutStrategy = Literal["RollingUpdate", "Canary"]


class CanaryRolloutFields(_Model):
    """The fields ``spec.rollout`` gains (``class RolloutSpec(CanaryRolloutFields)``)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("self.strategy != 'Canary' || has(self.canary)", "strategy Canary needs canary"),
        )
    )

    strategy: RolloutStrategy = Field(
        default="RollingUpdate",
        description="RollingUpdate replaces every pod with the new release; Canary tries it "
        "on a share of the traffic first (rollout.canary).",
    )
    canary: CanarySpec | None = Field(
        default=None, description="Steps and analysis of strategy Canary."
    )

    @model_validator(mode="after")
    def _canary_given(self) -> CanaryRolloutFields:
        if self.strategy == "Canary" and self.canary is None:
            raise ValueError("strategy Canary needs canary")
        return self


class ParentRef(_Model):
    """A Gateway the route attaches to (Gateway API ParentReference)."""

    name: str = Field(min_length=1, max_length=253, description="Gateway name.")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Gateway namespace; omitted: the FluxDeployment's.",
    )
    section_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Listener name on the Gateway.",
    )


class GatewaySpec(_Model):
    """Route HTTP traffic through the Gateway API: an HTTPRoute named like the
    FluxDeployment whose backends carry the canary's weights."""

    parent_refs: list[ParentRef] = Field(
        min_length=1, max_length=32, description="Gateways the HTTPRoute attaches to."
    )
    hostnames: list[Annotated[str, StringConstraints(max_length=253, pattern=HOSTNAME)]] = Field(
        default_factory=list, max_length=16, description="Host names the route matches."
    )


SPEC_CEL_RULES: tuple[tuple[str, str], ...] = (
    (
        "!has(self.rollout) || !has(self.rollout.strategy) || self.rollout.strategy != "
        "'Canary' || has(self.autoscaling) || self.replicas > 0",
        "strategy Canary needs replicas > 0 (or autoscaling)",
    ),
)
"""CEL rules for the root of ``FluxDeploymentSpec`` (they read ``replicas``)."""
