"""The canary's spec: what the CRD refuses (schema and CEL, evaluated as the API server
would), what the models refuse, and what only ``validate_canary`` can say — each naming
the field. The CRD is generated from a FluxDeploymentSpec that carries the new fields the
way ``spec.py`` will: ``RolloutSpec`` gains ``CanaryRolloutFields``, the root ``gateway``
and ``SPEC_CEL_RULES``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crdschema import validate
from pydantic import ConfigDict, Field, ValidationError

from flux_operator import crdgen
from flux_operator.spec import FluxDeploymentSpec, RolloutSpec
from flux_operator.spec.rollout import (
    DEFAULT_METRICS,
    SPEC_CEL_RULES,
    CanaryAnalysis,
    CanaryRolloutFields,
    CanarySpec,
    GatewaySpec,
    parse_duration,
)
from flux_operator.validation import validate_canary

EXAMPLES = Path(__file__).parent / "examples"


class RolloutWithCanary(RolloutSpec, CanaryRolloutFields):
    """``spec.rollout`` with the canary fields."""


_BASE_RULES: list[dict[str, str]] = FluxDeploymentSpec.model_config["json_schema_extra"][  # type: ignore[index,assignment]
    "x-kubernetes-validations"
]
_NEW_RULES = [{"rule": r, "message": m} for r, m in SPEC_CEL_RULES]


class SpecWithCanary(FluxDeploymentSpec):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [*_BASE_RULES, *_NEW_RULES]  # type: ignore[list-item]
        }
    )
    rollout: RolloutWithCanary = Field(
        default_factory=RolloutWithCanary, description="Rollout and rollback."
    )
    gateway: GatewaySpec | None = Field(default=None, description="Gateway API routing.")


ISSUE_EXAMPLE = """
release: v1.5.0
model: {id: black-forest-labs/FLUX.1-dev, source: {hub: {}}}
replicas: 2
rollout:
  strategy: Canary
  canary:
    maxSurge: 1
    steps:
      - {weight: 10, pause: 10m}
      - {weight: 50, pause: 10m}
      - {weight: 50}
    analysis:
      prometheusUrl: http://prometheus-operated.monitoring:9090
      interval: 1m
      failureLimit: 2
      metrics:
        - {name: error-ratio, max: 0.02}
        - {name: p95-latency-seconds, max: 40}
        - name: nsfw-refusals
          query: >-
            sum(rate(fluxserve_safety_rejections_total{release="{{release}}",
            namespace="{{namespace}}"}[5m]))
          max: 0.2
gateway:
  parentRefs: [{name: inference-gw, namespace: infra}]
  hostnames: [flux.example.com]
"""


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    patch = pytest.MonkeyPatch()
    patch.setattr(crdgen, "FluxDeploymentSpec", SpecWithCanary)
    try:
        return crdgen.build_crd()
    finally:
        patch.undo()


def _resource(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "fluxserve.dev/v1alpha1",
        "kind": "FluxDeployment",
        "metadata": {"name": "flux-dev"},
        "spec": spec,
    }


def _example() -> dict[str, Any]:
    return yaml.safe_load(ISSUE_EXAMPLE)


def _edit(path: str, value: Any) -> dict[str, Any]:
    """The example with one field set (``a.b[0].c``), or removed when value is ...``."""
    spec = _example()
    node: Any = spec
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return spec


def test_the_issue_example_is_accepted_everywhere(crd: dict[str, Any]) -> None:
    spec = SpecWithCanary.model_validate(_example())
    assert validate(crd, _resource(_example())) == []
    assert validate_canary(spec) == []
    canary = spec.rollout.canary
    assert canary is not None and canary.analysis is not None
    assert [s.weight for s in canary.steps] == [10, 50, 50]
    assert spec.gateway is not None and spec.gateway.hostnames == ["flux.example.com"]


def test_the_default_is_rolling_update_and_the_crd_stays_structural(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, "1.33.0", strict=True)
    assert SpecWithCanary.model_validate(_edit("rollout", {})).rollout.strategy == "RollingUpdate"
    rollout = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["rollout"]
    assert rollout["properties"]["strategy"]["enum"] == ["RollingUpdate", "Canary"]
    assert rollout["properties"]["strategy"]["default"] == "RollingUpdate"


def test_the_crd_stays_structural_and_its_loops_bounded(crd: dict[str, Any]) -> None:
    # The same checks test_crd makes of the committed CRD, on the CRD with the new fields.
    from test_crd import _ITERATION, _bounded, _no_unstructural, _rules

    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    _no_unstructural(schema["properties"]["spec"], "spec")
    loops = 0
    for node, path, rule in _rules(schema["properties"]["spec"]["properties"]["rollout"], ""):
        for field in _ITERATION.findall(rule):
            target = node["properties"][field]
            assert "maxItems" in target, f"unbounded {path}.{field} ({rule})"
            for name, sub in target["items"].get("properties", {}).items():
                assert _bounded(sub), f"{path}.{field}: {name} has no maxLength"
            loops += 1
    assert loops == 3  # unique metric names (two loops), a step with a pause


def _descriptions_missing(node: Any, path: str) -> list[str]:
    missing: list[str] = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{path}.{name}")
            missing += _descriptions_missing(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            missing += _descriptions_missing(node["items"], f"{path}[]")
    return missing


def test_every_new_field_is_documented_for_kubectl_explain(crd: dict[str, Any]) -> None:
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert _descriptions_missing(spec["properties"]["rollout"], "rollout") == []
    assert _descriptions_missing(spec["properties"]["gateway"], "gateway") == []


# Refused by the CRD (schema or CEL) and by the models, for the reason given.
REFUSED = [
    ("rollout.canary.steps[0].weight", 101, "greater than the maximum of 100"),
    ("rollout.canary.steps[0].weight", -1, "less than the minimum of 0"),
    ("rollout.canary.steps[0].pause", "10 minutes", "does not match"),
    ("rollout.canary.steps[0].pause", "1.5h", "does not match"),
    ("rollout.canary.analysis.metrics[0].max", ..., "a metric needs max or min"),
    ("rollout.canary.analysis.metrics[2].query", ..., "needs a query"),
    ("rollout.canary.analysis.interval", "5s", "interval must be at least 10s"),
    ("rollout.canary.analysis.prometheusUrl", "prometheus:9090", "does not match"),
    ("rollout.canary.steps", [], "should be non-empty"),
    ("rollout.canary.analysis", ..., "analysis or at least one step with a pause"),
    ("rollout.canary", ..., "strategy Canary needs canary"),
    ("rollout.strategy", "BlueGreen", "is not one of"),
    ("replicas", 0, "strategy Canary needs replicas > 0"),
    ("gateway.parentRefs", [], "should be non-empty"),
    ("gateway.hostnames", ["Flux_Example"], "does not match"),
]


@pytest.mark.parametrize(("path", "value", "reason"), REFUSED, ids=lambda v: str(v)[:40])
def test_the_crd_refuses(crd: dict[str, Any], path: str, value: Any, reason: str) -> None:
    spec = _edit(path, value)
    if path == "rollout.canary.analysis":
        # Without analysis, and with no pause anywhere.
        for step in spec["rollout"]["canary"]["steps"]:
            step.pop("pause", None)
    errors = validate(crd, _resource(spec))
    assert errors, f"the CRD accepted {path}={value!r}"
    messages = " ".join(message for _, message in errors)
    assert reason in messages, errors
    # The operator's models refuse it too: pydantic, or validate_canary for the root rule.
    try:
        model = SpecWithCanary.model_validate(spec)
    except ValidationError:
        return
    assert validate_canary(model), f"the models accepted {path}={value!r}"


def test_replicas_zero_is_fine_with_autoscaling(crd: dict[str, Any]) -> None:
    spec = _edit("replicas", 0)
    spec["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3}
    assert validate(crd, _resource(spec)) == []
    assert validate_canary(SpecWithCanary.model_validate(spec)) == []


def _problems(spec: dict[str, Any]) -> list[str]:
    return validate_canary(SpecWithCanary.model_validate(spec))


def test_falling_weights_name_the_step() -> None:
    spec = _example()
    spec["rollout"]["canary"]["steps"] = [{"weight": 50, "pause": "1m"}, {"weight": 20}]
    assert _problems(spec) == [
        "spec.rollout.canary.steps[1].weight: 20 is below the previous step's 50; weights must rise"
    ]


def test_a_query_that_is_not_promql_names_the_metric() -> None:
    spec = _edit("rollout.canary.analysis.metrics[2].query", "sum(rate(x{release=}[5m])")
    (problem,) = _problems(spec)
    assert problem.startswith("spec.rollout.canary.analysis.metrics[2].query: not PromQL: ")


def test_placeholders_are_not_mistaken_for_bad_promql() -> None:
    query = 'sum(rate(fluxserve_requests_total{fluxdeployment="{{name}}"}[{{interval}}]))'
    assert _problems(_edit("rollout.canary.analysis.metrics[2].query", query)) == []


def test_replicas_zero_is_named_by_validate_canary_too() -> None:
    spec = SpecWithCanary.model_validate(_example()).model_copy(update={"replicas": 0})
    assert validate_canary(spec) == [
        "spec.replicas: strategy Canary needs replicas > 0 (or autoscaling)"
    ]


def test_max_surge_zero_needs_a_stable_pod_to_stay() -> None:
    spec = _edit("rollout.canary.maxSurge", 0)
    spec["replicas"] = 1
    assert _problems(spec) == [
        "spec.rollout.canary.maxSurge: 0 carves the canary out of the current pods, which "
        "needs spec.replicas >= 2 (one stable pod stays); got 1"
    ]
    spec["autoscaling"] = {"minReplicas": 1, "maxReplicas": 4}
    assert "spec.autoscaling.minReplicas >= 2" in _problems(spec)[0]
    spec["autoscaling"]["minReplicas"] = 2
    assert _problems(spec) == []


def test_rolling_update_ignores_the_canary_checks() -> None:
    spec = _edit("rollout.strategy", "RollingUpdate")
    spec["replicas"] = 0
    spec["rollout"]["canary"]["steps"] = [{"weight": 50, "pause": "1m"}, {"weight": 20}]
    assert _problems(spec) == []


def test_durations_and_defaults() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("10 minutes")
    analysis = CanaryAnalysis(prometheus_url="http://p:9090")
    assert analysis.interval == "1m" and analysis.failure_limit == 2
    assert analysis.effective_metrics() == DEFAULT_METRICS
    with pytest.raises(ValidationError, match="metric names must be unique"):
        CanaryAnalysis(
            prometheus_url="http://p:9090",
            metrics=[{"name": "error-ratio", "max": 1}, {"name": "error-ratio", "max": 2}],  # type: ignore[list-item]
        )


def test_bad_examples_stay_bad_with_the_new_fields(crd: dict[str, Any]) -> None:
    # The new fields do not loosen any existing rule.
    for path in sorted((EXAMPLES / "bad").glob("*.yaml")):
        resource = yaml.safe_load(path.read_text())
        if path.stem == "name-too-long":
            continue  # a metadata rule, checked at the root by test_crd
        assert validate(crd, copy.deepcopy(resource)), path.name


def test_canary_spec_round_trips_by_alias() -> None:
    canary = CanarySpec.model_validate(_example()["rollout"]["canary"])
    again = CanarySpec.model_validate(canary.model_dump(by_alias=True, exclude_none=True))
    assert again == canary
