"""The permissions the operator needs, declared next to the code that uses them.

The helm chart's ClusterRole renders exactly ``RULES`` (a chart test compares them).
Each rule says who needs it: the reconciler (its children and its own resource), the
events it posts, and kopf itself (resource discovery, namespaces, peering).
"""

from __future__ import annotations

from typing import Final

_CHILD_VERBS = ["get", "list", "watch", "create", "patch", "update", "delete"]

RULES: Final[list[dict[str, list[str]]]] = [
    # Its own resource: watched, read; the status written through the subresource.
    {
        "apiGroups": ["fluxserve.dev"],
        "resources": ["fluxdeployments"],
        "verbs": ["get", "list", "watch", "patch", "update"],
    },
    {
        "apiGroups": ["fluxserve.dev"],
        "resources": ["fluxdeployments/status"],
        "verbs": ["get", "patch", "update"],
    },
    # blockOwnerDeletion on children needs update on the owner's finalizers (admission).
    {
        "apiGroups": ["fluxserve.dev"],
        "resources": ["fluxdeployments/finalizers"],
        "verbs": ["update"],
    },
    # The children it keeps.
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _CHILD_VERBS},
    {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": _CHILD_VERBS},
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": _CHILD_VERBS,
    },
    # Events about rollouts and rollbacks (kopf posts core/v1 events).
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # kopf: notice the CRD appearing and changing; list namespaces when cluster-wide.
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    # kopf peering (leader election between replicas of the operator, --peering NAME).
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings", "kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]
