"""The Service in front of the server's pods (REST, gRPC, metrics)."""

from __future__ import annotations

from typing import Any

from flux_operator.render.front import front_selector
from flux_operator.render.naming import SERVER_PORTS, Owner, child_metadata, selector_labels
from flux_operator.spec import FluxDeploymentSpec


def render_service(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any]:
    ports: list[dict[str, Any]] = []
    for name, port in SERVER_PORTS:
        ports.append({"name": name, "port": port, "targetPort": name, "protocol": "TCP"})
        if name == "grpc":
            ports[-1]["appProtocol"] = "grpc"
    selector = selector_labels(owner) if spec.queue is None else front_selector(owner)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner),
        # With a queue the fronts take the requests; the GPU workers take theirs from Redis.
        "spec": {"type": "ClusterIP", "selector": selector, "ports": ports},
    }
