"""Turning autoscaling on hands spec.replicas to the HPA without a drop to one pod.

Under server-side apply, an apply that leaves out a field its manager owned removes the
field (the Deployment then defaults to 1 replica). ``replicas_handover`` says when a
second field manager must first apply the current value, as Kubernetes documents for
handing a field over. The emulator keeps no managedFields: the decision is tested here
on Deployments as the API server returns them, the effect in test_operator_cluster.py.
"""

from __future__ import annotations

from typing import Any

from flux_operator.reconcile.children import replicas_handover


def _deployment(*entries: dict[str, Any], replicas: int | None = 3) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "x"}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "flux-dev", "namespace": "studio", "managedFields": list(entries)},
        "spec": spec,
    }


def _entry(manager: str, operation: str, replicas: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"f:template": {}}
    if replicas:
        spec["f:replicas"] = {}
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": spec},
    }


def test_owned_replicas_are_handed_over_at_their_current_value() -> None:
    deployment = _deployment(_entry("fluxserve-operator", "Apply"))
    handover = replicas_handover(deployment, autoscaling=True)
    assert handover == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "flux-dev", "namespace": "studio"},
        "spec": {"replicas": 3},
    }


def test_nothing_to_hand_over() -> None:
    ours = _entry("fluxserve-operator", "Apply")
    cases = [
        replicas_handover(_deployment(ours), autoscaling=False),  # replicas stay ours
        replicas_handover(None, autoscaling=True),  # to be created
        # Already the HPA's (its scale updates), or only ours by the creating POST (an
        # Update: an apply never removes those), or not ours to begin with.
        replicas_handover(_deployment(_entry("kube-controller-manager", "Update")), True),
        replicas_handover(_deployment(_entry("fluxserve-operator", "Update")), True),
        replicas_handover(_deployment(_entry("fluxserve-operator", "Apply", False)), True),
        replicas_handover(_deployment(ours, replicas=None), True),
    ]
    assert cases == [None] * len(cases)
