"""Canary releases and the Gateway API route as pydantic models: ``spec.rollout.strategy``,
``spec.rollout.canary`` and ``spec.gateway`` (``status.canary`` is in ``canary_status``).

The CRD is generated from these models like the rest of the spec: descriptions become
``kubectl explain``, bounds and CEL rules are enforced by the API server. What a schema
cannot say (weights that rise, a PromQL query that parses, settings that only make sense
together with other parts of the spec) is checked by :func:`validate_canary`, whose problems
name the field and become a ``Degraded`` condition.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Protocol

import promql_parser
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
"""A Go/CEL duration without fractions (``30s``, ``10m``, ``1h30m``): the form CEL's
``duration()`` and PromQL's range selectors both read."""

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")

BUILTIN_METRICS = ("error-ratio", "p95-latency-seconds")
"""Metric names with a query written by fluxserve (see ``flux_operator.analysis``)."""

METRIC_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
MIN_INTERVAL_SECONDS = 10


def parse_duration(text: str) -> float:
    """Seconds in a duration matching :data:`DURATION_PATTERN` (``ValueError`` otherwise)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 10m or 1h30m")
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class _Model(BaseModel):
    # The same conventions as flux_operator.spec: camelCase on the wire, unknown keys refused.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]


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
    max: float | None = Field(default=None, description="A value above this fails.")
    min: float | None = Field(default=None, description="A value below this fails.")

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


# --- what a schema cannot say -------------------------------------------------------------


class _AutoscalingLike(Protocol):
    min_replicas: int


class SpecWithCanary(Protocol):
    """The parts of ``FluxDeploymentSpec`` the canary checks read."""

    @property
    def replicas(self) -> int: ...
    @property
    def autoscaling(self) -> _AutoscalingLike | None: ...
    @property
    def rollout(self) -> CanaryRolloutFields: ...


def _query_problem(query: str) -> str | None:
    filled = query
    for placeholder, sample in (
        ("{{release}}", "v1"),
        ("{{namespace}}", "ns"),
        ("{{name}}", "name"),
        ("{{interval}}", "1m"),
    ):
        filled = filled.replace(placeholder, sample)
    try:
        promql_parser.parse(filled)
    except Exception as exc:  # the parser raises ValueError or its own error types
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def validate_canary(spec: SpecWithCanary) -> list[str]:
    """Problems (``field: message``) of a spec the CRD accepted but no canary can run.

    Empty for ``strategy: RollingUpdate``. Each names the field, as ``spec_problems`` does.
    """
    rollout = spec.rollout
    canary = rollout.canary
    if rollout.strategy != "Canary" or canary is None:
        return []
    problems: list[str] = []
    previous = 0
    for i, step in enumerate(canary.steps):
        if step.weight < previous:
            problems.append(
                f"spec.rollout.canary.steps[{i}].weight: {step.weight} is below the previous "
                f"step's {previous}; weights must rise"
            )
        previous = max(previous, step.weight)
    if canary.analysis is not None:
        for i, metric in enumerate(canary.analysis.metrics):
            if metric.query is not None:
                problem = _query_problem(metric.query)
                if problem is not None:
                    problems.append(
                        f"spec.rollout.canary.analysis.metrics[{i}].query: not PromQL: {problem}"
                    )
    if spec.autoscaling is None and spec.replicas == 0:
        problems.append("spec.replicas: strategy Canary needs replicas > 0 (or autoscaling)")
    elif canary.max_surge == 0:
        pods = spec.replicas if spec.autoscaling is None else spec.autoscaling.min_replicas
        field = "spec.replicas" if spec.autoscaling is None else "spec.autoscaling.minReplicas"
        if pods < 2:
            problems.append(
                f"spec.rollout.canary.maxSurge: 0 carves the canary out of the current pods, "
                f"which needs {field} >= 2 (one stable pod stays); got {pods}"
            )
    return problems
