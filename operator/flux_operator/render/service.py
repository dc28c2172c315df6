"""The Service in front of the server's pods (REST, gRPC, metrics)."""

from __future__ import annotations

from typing import Any

from flux_operator.render.naming import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    Owner,
    common_labels,
    object_metadata,
    selector_labels,
)
from flux_operator.spec import FluxDeploymentSpec


def render_service(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(owner, owner.name, common_labels(owner)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }
