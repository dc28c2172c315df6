"""Who may reach the server's pods: ``spec.networkPolicy``, rendered as a NetworkPolicy.

Opt-in: without ``networkPolicy`` no policy is made. On by default it would, on the first
reconciliation after an operator upgrade, cut every caller outside the resource's
namespace (a gateway in its own namespace, a Prometheus not named ``monitoring``, the
metrics adapter the HPA reads through) on clusters whose network plugin enforces
NetworkPolicies, and a scaled-down HPA or an empty dashboard is how one would find out.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from flux_operator.spec.base import DnsLabel, _cel, _Model

LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
"""A label key: an optional DNS-subdomain prefix and ``/``, then a name of 1-63 characters."""
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (1.21+): selects a namespace by its name."""
MONITORING_NAMESPACE = "monitoring"
MAX_PEERS = 32
MAX_LABELS = 16

LabelKey = Annotated[str, StringConstraints(max_length=317, pattern=LABEL_KEY)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]


def _labels_rule(field: str) -> tuple[str, str]:
    return (
        f"!has(self.{field}) || self.{field}.all(k, k.matches('{LABEL_KEY}'))",
        f"{field} keys must be label keys (optional 'prefix/' and a name of 1-63 characters)",
    )


class NetworkPeer(_Model):
    """Pods allowed in: by namespace (its name, or labels) and/or by pod labels. A peer
    with only podSelector means pods in the FluxDeployment's own namespace; both fields
    together mean pods with those labels in those namespaces; an empty namespaceSelector
    means every namespace."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "has(self.__namespace__) || has(self.namespaceSelector) || has(self.podSelector)",
                "set namespace, namespaceSelector or podSelector",
            ),
            (
                "!(has(self.__namespace__) && has(self.namespaceSelector))",
                "set at most one of namespace or namespaceSelector",
            ),
            _labels_rule("namespaceSelector"),
            _labels_rule("podSelector"),
        )
    )

    namespace: DnsLabel | None = Field(
        default=None,
        description=f"A namespace by name (its `{NAMESPACE_NAME_LABEL}` label).",
    )
    namespace_selector: dict[LabelKey, LabelValue] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        description="Namespaces whose labels include all of these; {} is every namespace.",
    )
    pod_selector: dict[LabelKey, LabelValue] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        description="Pods whose labels include all of these; {} is every pod. Alone, it "
        "selects pods in the FluxDeployment's namespace.",
    )

    @model_validator(mode="after")
    def _one_namespace(self) -> NetworkPeer:
        if self.namespace is None and self.namespace_selector is None and self.pod_selector is None:
            raise ValueError("set namespace, namespaceSelector or podSelector")
        if self.namespace is not None and self.namespace_selector is not None:
            raise ValueError("set at most one of namespace or namespaceSelector")
        return self


class NetworkPolicySpec(_Model):
    """A NetworkPolicy (named like the resource) on the server's pods, stable and canary:
    REST and gRPC only from ``from``, metrics only from ``metricsFrom``, every other port
    closed. It restricts ingress only (the pods may still fetch weights from the hub).
    Needs a network plugin that enforces NetworkPolicies (Calico, Cilium, ...); kubelet
    probes are not affected."""

    enabled: bool = Field(
        default=True,
        description="Make the NetworkPolicy; false removes it and keeps the peers written here.",
    )
    from_: list[NetworkPeer] = Field(
        alias="from",
        # Written as the API server stores it (the CRD's default), validated into peers.
        default=[{"podSelector": {}}],
        validate_default=True,
        min_length=1,
        max_length=MAX_PEERS,
        description="Who may call the REST and gRPC ports (any listed peer).",
    )
    metrics_from: list[NetworkPeer] = Field(
        default=[{"namespace": MONITORING_NAMESPACE}],
        validate_default=True,
        max_length=MAX_PEERS,
        description="Who may scrape the metrics port; [] closes it.",
    )
