"""The permissions the operator needs, declared next to the code that uses them.

The helm chart's ClusterRole renders exactly ``RULES`` (a chart test compares them), and
``tests/operator/test_rbac_observed.py`` runs the operator through every path that
writes and checks that RULES grant each call it made and nothing it did not make. Each
rule says who needs it: the reconciler (its children and its own resource), the events
it posts, and kopf itself (resource discovery, namespaces, peering).
"""

from __future__ import annotations

from typing import Final

RULES: Final[list[dict[str, list[str]]]] = [
    # Its own resource: listed and watched (the watch cache; the periodic pass lists it);
    # only the status is written (the spec is the user's: ArgoCD would see drift).
    {
        "apiGroups": ["fluxserve.dev"],
        "resources": ["fluxdeployments"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": ["fluxserve.dev"], "resources": ["fluxdeployments/status"], "verbs": ["patch"]},
    # blockOwnerDeletion on children needs update on the owner's finalizers (admission).
    {
        "apiGroups": ["fluxserve.dev"],
        "resources": ["fluxdeployments/finalizers"],
        "verbs": ["update"],
    },
    # The children: listed and watched, never read one by one (the reconciler reads the
    # watch cache); created and server-side applied. The canary's Deployment is deleted
    # when a canary ends, the HPA when autoscaling is turned off. ConfigMaps are
    # immutable: created once, pruned.
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch", "create", "patch"]},
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["list", "watch", "create", "delete"],
    },
    {
        "apiGroups": ["autoscaling"],
        "resources": ["horizontalpodautoscalers"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    # spec.networkPolicy: server-side applied; deleted when switched off.
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    # The Gateway API route of spec.gateway (canary weights); deleted when a canary
    # resource's gateway is removed.
    {
        "apiGroups": ["gateway.networking.k8s.io"],
        "resources": ["httproutes"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    # spec.autoscaling to zero: KEDA's ScaledObject per release track, deleted when the
    # HPA comes back; whether KEDA is installed is read from its CRD (the CRD rule below).
    {
        "apiGroups": ["keda.sh"],
        "resources": ["scaledobjects"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    # spec.modelCache: the PVC the weights are downloaded onto (by a Job, below), created
    # once under the hash of the model and revision (never patched; removed with its owner).
    {
        "apiGroups": [""],
        "resources": ["persistentvolumeclaims"],
        "verbs": ["list", "watch", "create"],
    },
    # FluxLoRATraining: watched and read, its status written. Its Job is created and
    # watched; the Job's Pods are listed to read the trainer's termination message, and
    # the running one's log for its progress (the trainer itself gets no API access). A
    # TrainJob instead where spec.engine is kubeflow.
    # The canary's quality gate (analysis.quality) is a Job too: read, created, and its
    # Pods listed for the gate's verdict.
    {
        "apiGroups": ["fluxserve.dev"],
        "resources": ["fluxloratrainings"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["fluxserve.dev"],
        "resources": ["fluxloratrainings/status"],
        "verbs": ["patch"],
    },
    {
        "apiGroups": ["fluxserve.dev"],
        "resources": ["fluxloratrainings/finalizers"],
        "verbs": ["update"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    # The running trainer's progress: the tail of its Pod's log.
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["get", "create"]},
    # Promotion (promotion: canary, by the user's request in the training resource): the
    # adapter is added to the target FluxDeployment's spec.loras, the one write of a
    # user's spec. The target (and a fluxDeploymentRef) is read first.
    {"apiGroups": ["fluxserve.dev"], "resources": ["fluxdeployments"], "verbs": ["get", "patch"]},
    # Events about rollouts and rollbacks (kopf posts core/v1 events).
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # kopf: follows CRDs appearing and changing; lists and watches namespaces when it
    # serves named ones (--namespace).
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    # kopf peering (leader election between replicas of the operator, --peering NAME):
    # cluster-wide when all namespaces are served, else one per namespace. kopf watches
    # and patches it; the periodic resync reads it to act only while leading.
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings", "kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]
