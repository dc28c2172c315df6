"""What the pods the operator renders share, written once: the security contexts of the Pod
Security Standards' "restricted" profile, and the GPU nodes' selector and toleration with
the image pull secrets. Each returns or adds fresh dicts, so a caller that changes its copy
changes no other object."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flux_operator.spec.serving import GpuSpec

RUN_AS = 10001
"""The unprivileged user and group the images run as."""


def restricted_container() -> dict[str, Any]:
    """A container's ``securityContext``: no escalation, no capabilities, a read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod() -> dict[str, Any]:
    """A pod's ``securityContext``: a non-root user and group owning the volumes."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def place(pod_spec: dict[str, Any], gpu: GpuSpec, pull_secrets: Sequence[str]) -> None:
    """Add to ``pod_spec`` the GPU nodes' selector, the toleration of their taint (when the
    pod asks for GPUs) and the secrets that pull its image."""
    if gpu.node_selector:
        pod_spec["nodeSelector"] = dict(gpu.node_selector)
    if gpu.count > 0:
        pod_spec["tolerations"] = [
            {"key": gpu.taint_key, "operator": "Exists", "effect": "NoSchedule"}
        ]
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
