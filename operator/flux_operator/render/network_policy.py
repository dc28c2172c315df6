"""The NetworkPolicy on the server's pods, when ``spec.networkPolicy`` asks for one.

It selects the pods by the labels every track's pods carry (stable and canary alike) and
opens the REST and gRPC ports to ``from``, the metrics port to ``metricsFrom``; with
ingress isolated, every other port and peer is refused. Egress is left open (weights may
come from the hub)."""

from __future__ import annotations

from typing import Any

from flux_operator.render.naming import (
    GRPC_PORT,
    HTTP_PORT,
    INSTANCE_LABEL,
    METRICS_PORT,
    OWNER_LABEL,
    Owner,
    child_metadata,
    selector_labels,
)
from flux_operator.spec import FluxDeploymentSpec, NetworkPeer
from flux_operator.spec.network import NAMESPACE_NAME_LABEL


def render_peer(peer: NetworkPeer) -> dict[str, Any]:
    """One NetworkPolicyPeer: a namespace by name becomes a selector on the label the
    API server puts on every namespace."""
    out: dict[str, Any] = {}
    if peer.namespace is not None:
        out["namespaceSelector"] = {"matchLabels": {NAMESPACE_NAME_LABEL: peer.namespace}}
    elif peer.namespace_selector is not None:
        out["namespaceSelector"] = (
            {"matchLabels": dict(peer.namespace_selector)} if peer.namespace_selector else {}
        )
    if peer.pod_selector is not None:
        out["podSelector"] = {"matchLabels": dict(peer.pod_selector)} if peer.pod_selector else {}
    return out


def _ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _fleet_labels(owner: Owner) -> dict[str, str]:
    return {INSTANCE_LABEL: owner.name, OWNER_LABEL: owner.name}


def render_network_policy(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any] | None:
    """The policy, or None when the spec asks for none (absent or switched off)."""
    policy = spec.network_policy
    if policy is None or not policy.enabled:
        return None
    ingress: list[dict[str, Any]] = [
        {"from": [render_peer(p) for p in policy.from_], "ports": _ports(HTTP_PORT, GRPC_PORT)}
    ]
    if policy.metrics_from:
        ingress.append(
            {"from": [render_peer(p) for p in policy.metrics_from], "ports": _ports(METRICS_PORT)}
        )
    # With a queue, the fronts and the workers alike (both carry the owner's label).
    pods = selector_labels(owner) if spec.queue is None else _fleet_labels(owner)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(owner),
        "spec": {
            "podSelector": {"matchLabels": pods},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
