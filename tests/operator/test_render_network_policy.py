"""spec.networkPolicy: the NetworkPolicy it renders (strictly valid for Kubernetes 1.33,
selecting every server pod, opening only the serving and metrics ports to the peers
named), its absence when absent or switched off, and the plan's care for a policy of the
same name that someone else made."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from flux_operator.reconcile import Children, plan
from flux_operator.render import Owner, render_all, render_network_policy
from flux_operator.spec import FluxDeploymentSpec
from flux_operator.validation import spec_problems

K8S_VERSION = "1.33.0"
OWNER = Owner(name="flux-dev", namespace="studio", uid="6f1c0a52-0000-4000-8000-000000000001")
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def _raw(network_policy: Any = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "release": "v1.4.2",
        "model": {"id": "m", "source": {"pvc": {"claimName": "w"}}},
    }
    if network_policy is not None:
        raw["networkPolicy"] = network_policy
    return raw


def _spec(network_policy: Any = None) -> FluxDeploymentSpec:
    return FluxDeploymentSpec.model_validate(_raw(network_policy))


def _policy(network_policy: Any) -> dict[str, Any]:
    policy = render_network_policy(OWNER, _spec(network_policy))
    assert policy is not None
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    return policy


def _rules(policy: dict[str, Any]) -> dict[tuple[int, ...], list[dict[str, Any]]]:
    """Ports (sorted) -> the peers allowed on them."""
    return {
        tuple(sorted(p["port"] for p in rule["ports"])): rule["from"]
        for rule in policy["spec"]["ingress"]
    }


def _container_ports(objects: list[dict[str, Any]]) -> dict[str, int]:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_defaults_open_serving_to_the_namespace_and_metrics_to_monitoring() -> None:
    policy = _policy({})
    assert policy["metadata"]["name"] == OWNER.name
    assert policy["metadata"]["namespace"] == OWNER.namespace
    assert policy["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress left open: hub downloads
    ports = _container_ports(render_all(OWNER, _spec({})))
    assert _rules(policy) == {
        tuple(sorted((ports["http"], ports["grpc"]))): [{"podSelector": {}}],
        (ports["metrics"],): [MONITORING],
    }


def test_the_policy_selects_every_server_pod_of_the_resource() -> None:
    objects = render_all(OWNER, _spec({}))
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy")
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    # The same labels as the Service's selector: no track label, so a canary's pods
    # (labelled with their track on top) are covered too.
    service = next(o for o in objects if o["kind"] == "Service")
    assert selector == service["spec"]["selector"]


def test_peers_by_name_labels_and_pods() -> None:
    policy = _policy(
        {
            "from": [
                {"namespace": "gateway"},
                {"namespaceSelector": {"team": "web"}, "podSelector": {"app": "frontend"}},
                {"podSelector": {"role": "batch"}},
                {"namespaceSelector": {}},
            ],
            "metricsFrom": [{"namespace": "observability", "podSelector": {}}],
        }
    )
    rules = _rules(policy)
    assert rules[(8080, 50051)] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}},
        {
            "namespaceSelector": {"matchLabels": {"team": "web"}},
            "podSelector": {"matchLabels": {"app": "frontend"}},
        },
        {"podSelector": {"matchLabels": {"role": "batch"}}},
        {"namespaceSelector": {}},  # every namespace, as written
    ]
    assert rules[(9090,)] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
            "podSelector": {},
        }
    ]


def test_an_empty_metrics_from_closes_the_metrics_port() -> None:
    policy = _policy({"metricsFrom": []})
    assert list(_rules(policy)) == [(8080, 50051)]


@pytest.mark.parametrize("network_policy", [None, {"enabled": False, "from": [{"namespace": "x"}]}])
def test_no_policy_when_absent_or_switched_off(network_policy: Any) -> None:
    kinds = [o["kind"] for o in render_all(OWNER, _spec(network_policy))]
    assert "NetworkPolicy" not in kinds
    assert "Service" in kinds and "Deployment" in kinds


@pytest.mark.parametrize(
    ("network_policy", "field", "message"),
    [
        ({"from": [{}]}, "spec.networkPolicy.from[0]", "set namespace, namespaceSelector"),
        (
            {"from": [{"namespace": "a", "namespaceSelector": {"b": "c"}}]},
            "spec.networkPolicy.from[0]",
            "at most one of namespace or namespaceSelector",
        ),
        ({"from": []}, "spec.networkPolicy.from", "at least 1 item"),
        (
            {"metricsFrom": [{"podSelector": {"bad key!": "x"}}]},
            "spec.networkPolicy.metricsFrom[0].podSelector",
            "pattern",
        ),
        ({"from": [{"namespace": "Not_A_Namespace"}]}, "spec.networkPolicy.from[0].namespace", ""),
        ({"form": [{"namespace": "gateway"}]}, "spec.networkPolicy.form", "Extra inputs"),
    ],
)
def test_bad_peers_name_the_field(network_policy: Any, field: str, message: str) -> None:
    problems = spec_problems({"metadata": {"name": "flux-dev"}, "spec": _raw(network_policy)})
    assert any(p.startswith(field) and message in p for p in problems), problems


def _body(raw: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid}
    return {"metadata": meta, "spec": raw, "status": {}}


def test_a_policy_of_someone_else_conflicts_only_when_one_is_wanted() -> None:
    foreign = {"kind": "NetworkPolicy", "metadata": {"name": OWNER.name, "ownerReferences": []}}
    children = Children(network_policy=foreign)
    now = "2026-01-01T00:00:00Z"
    for off in (None, {"enabled": False}):
        assert plan(_body(_raw(off)), children, now).revision is not None
    result = plan(_body(_raw({})), children, now)
    assert result.revision is None
    degraded = next(c for c in result.status.conditions if c.type == "Degraded")
    assert degraded.reason == "ChildConflict"
    assert degraded.message.startswith(f"NetworkPolicy {OWNER.name} ")
