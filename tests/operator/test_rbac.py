"""RULES: a valid ClusterRole that grants what kopf needs and nothing broad.

That RULES grant every call the operator makes, and only those, is checked by running it:
test_rbac_observed.py."""

from __future__ import annotations

import kubernetes_validate

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


def test_rules_cover_what_kopf_needs() -> None:
    assert _allows("apiextensions.k8s.io", "customresourcedefinitions", "watch")
    assert _allows("", "namespaces", "list")
    assert _allows("kopf.dev", "clusterkopfpeerings", "patch")
    assert _allows("kopf.dev", "kopfpeerings", "patch")


def test_rules_grant_nothing_beyond_need() -> None:
    for rule in RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "secrets" not in rule["resources"], "the operator never reads Secrets"
