"""The operator's own NetworkPolicy, rendered by the real helm binary: on by default with
ingress closed but for the health port, off when switched off, egress restricted only
when asked (API server, DNS, extra rules), and bad values refused by the schema."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from .conftest import CHART, KUBE_VERSION, Helm


def _policies(helm: Helm, *sets: str, values: str | None = None) -> list[dict[str, Any]]:
    files = [CHART / "ci" / values] if values else []
    docs = helm.template(files, sets)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for policy in policies:
        kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    return policies


def _operator_pod(helm: Helm, *sets: str) -> dict[str, Any]:
    (deploy,) = [d for d in helm.template(sets=sets) if d["kind"] == "Deployment"]
    return deploy


def test_default_policy_closes_ingress_but_the_health_port(helm: Helm) -> None:
    (policy,) = _policies(helm)
    deploy = _operator_pod(helm)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector == deploy["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert policy["metadata"]["namespace"] == "fluxserve-system"
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress open by default
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    health = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": health, "protocol": "TCP"}]}]
    assert "egress" not in policy["spec"]


def test_the_health_port_follows_the_value(helm: Helm) -> None:
    (policy,) = _policies(helm, "healthPort=9100")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 9100, "protocol": "TCP"}]


def test_switched_off_renders_none(helm: Helm) -> None:
    assert _policies(helm, "networkPolicy.enabled=false") == []
    assert _policies(helm, "networkPolicy.enabled=false", "networkPolicy.egress.enabled=true") == []


def test_restricted_egress_reaches_the_api_server_dns_and_the_extra_rules(helm: Helm) -> None:
    (policy,) = _policies(helm, values="netpol-egress-values.yaml")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    api, dns, prometheus = policy["spec"]["egress"]
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}, {"ipBlock": {"cidr": "fd00::/64"}}]
    assert api["ports"] == [{"port": 6443, "protocol": "TCP"}]
    assert "to" not in dns
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert prometheus["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert prometheus["to"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}
    }


def test_default_egress_rule_allows_the_usual_api_server_ports_anywhere(helm: Helm) -> None:
    (policy,) = _policies(helm, "networkPolicy.egress.enabled=true")
    api, _dns = policy["spec"]["egress"]
    assert api["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    assert sorted(p["port"] for p in api["ports"]) == [443, 6443]


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["networkPolicy.enabled=yes"], "/networkPolicy/enabled"),
        (["networkPolicy.egres.enabled=true"], "egres"),
        (["networkPolicy.egress.apiServerPorts[0]=0"], "/networkPolicy/egress/apiServerPorts/0"),
        (
            ["networkPolicy.egress.apiServerCidrs[0]=10.0.0.1"],
            "/networkPolicy/egress/apiServerCidrs/0",
        ),
        (["networkPolicy.egress.extraRules[0]=x"], "/networkPolicy/egress/extraRules/0"),
    ],
)
def test_schema_rejects_bad_network_policy_values(
    helm: Helm, sets: list[str], expected: str
) -> None:
    args = ["template", "x", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = helm.run(*args)
    assert proc.returncode != 0, f"helm accepted {sets}"
    assert "schema" in proc.stderr
    assert expected in proc.stderr, proc.stderr


def test_cluster_roles_cover_the_servers_network_policy(helm: Helm) -> None:
    """What the operator needs to keep and remove a FluxDeployment's NetworkPolicy is in
    the chart's ClusterRoles: read (list and watch), create, apply, delete."""
    from flux_operator.render import Owner, render_all
    from flux_operator.spec import FluxDeploymentSpec

    spec = FluxDeploymentSpec.model_validate(
        {"release": "v1", "model": {"id": "m", "source": {"hub": {}}}, "networkPolicy": {}}
    )
    children = render_all(Owner(name="flux-dev", namespace="inference", uid="u-1"), spec)
    (policy,) = [c for c in children if c["kind"] == "NetworkPolicy"]
    group = policy["apiVersion"].rpartition("/")[0]
    roles = [d for d in helm.template() if d["kind"] == "ClusterRole"]
    granted = {
        (g, r, v)
        for role in roles
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    for verb in ("list", "watch", "create", "patch", "delete"):
        assert (group, "networkpolicies", verb) in granted, verb
