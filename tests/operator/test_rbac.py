"""RULES: a valid ClusterRole, and it grants every call the operator makes."""

from __future__ import annotations

import kubernetes_validate

from flux_operator.kube import KINDS
from flux_operator.rbac import RULES


def _allows(group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in RULES
    )


def test_rules_form_a_valid_cluster_role() -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "fluxserve-operator"},
        "rules": RULES,
    }
    kubernetes_validate.validate(role, "1.33.0", strict=True)


def test_rules_cover_the_children_and_the_resource() -> None:
    for kind, info in KINDS.items():
        verbs = ["create"] if kind == "Event" else ["get", "list", "watch", "patch"]
        if kind not in ("Event", "FluxDeployment"):
            verbs += ["create", "delete"]
        for verb in verbs:
            assert _allows(info.group, info.plural, verb), (kind, verb)
    assert _allows("fluxserve.dev", "fluxdeployments/status", "patch")


def test_rules_cover_what_kopf_needs() -> None:
    assert _allows("apiextensions.k8s.io", "customresourcedefinitions", "watch")
    assert _allows("", "namespaces", "list")
    assert _allows("kopf.dev", "clusterkopfpeerings", "patch")
    assert _allows("kopf.dev", "kopfpeerings", "patch")


def test_rules_grant_nothing_beyond_need() -> None:
    for rule in RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "secrets" not in rule["resources"], "the operator never reads Secrets"
