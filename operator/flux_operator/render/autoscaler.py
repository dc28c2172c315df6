"""The HorizontalPodAutoscaler, when the spec asks for autoscaling."""

from __future__ import annotations

from typing import Any

from flux_operator.render.naming import Owner, child_metadata
from flux_operator.spec import AutoscalingSpec, FluxDeploymentSpec


def render_hpa(owner: Owner, spec: FluxDeploymentSpec) -> dict[str, Any] | None:
    scaling = spec.autoscaling
    if scaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            # Scale to zero is KEDA's; without KEDA the HPA keeps one pod (status says so).
            "minReplicas": max(1, scaling.min_replicas),
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "fluxserve_queue_depth"},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(scaling.target_queue_depth),
                        },
                    },
                }
            ],
            "behavior": hpa_behavior(scaling),
        },
    }


def hpa_behavior(scaling: AutoscalingSpec) -> dict[str, Any]:
    """Up fast (2 pods a minute), down slowly (a GPU pod takes minutes to come back):
    the HPA's, and KEDA's HPA's (``advanced.horizontalPodAutoscalerConfig``)."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
        },
    }
