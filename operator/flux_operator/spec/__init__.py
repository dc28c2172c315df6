"""The FluxDeployment resource as pydantic models: the one source of the CRD schema.

Every field carries a description (it becomes the CRD's documentation, `kubectl explain`),
bounds the API server enforces, and — where a JSON schema cannot say it — a CEL rule in
``x-kubernetes-validations``. ``crdgen`` turns these models into ``crds/``.

By area: ``base`` (names, patterns, the base model) · ``sources`` (where the weights come
from) · ``serving`` (GPUs, resources, autoscaling, batching, rollout) · ``features``
(LoRAs, safety, audit, API keys, cache, editing, VQA) · ``network`` (who may reach the
pods) · ``experiments`` (A/B experiments on style presets) · ``resource`` (the spec as a
whole) · ``status``. A new part of the spec is a model in its area (or a new module),
and a field of ``resource.FluxDeploymentSpec``.
"""

from flux_operator.spec.base import (
    DNS_LABEL,
    GROUP,
    K8S_NAME,
    KIND,
    LORA_NAME,
    MAX_NAME_LENGTH,
    PLURAL,
    RELEASE_PATTERN,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    PresetName,
)
from flux_operator.spec.experiments import (
    ArmSpec,
    AudienceSpec,
    ExperimentSpec,
    experiments_as_written,
)
from flux_operator.spec.features import (
    ApiKeysSpec,
    AuditSpec,
    CacheSpec,
    EditingSpec,
    LoraSpec,
    SafetySpec,
    VqaSpec,
)
from flux_operator.spec.network import NetworkPeer, NetworkPolicySpec
from flux_operator.spec.resource import FluxDeployment, FluxDeploymentSpec
from flux_operator.spec.serving import (
    AutoscalingSpec,
    BatchingSpec,
    GpuSpec,
    ResourcesSpec,
    RolloutSpec,
)
from flux_operator.spec.sources import (
    ConfigMapKeyRef,
    HubSource,
    ModelSource,
    ModelSpec,
    PvcSource,
    SecretKeyRef,
)
from flux_operator.spec.status import (
    Condition,
    ConditionType,
    FluxDeploymentStatus,
    HistoryEntry,
    Outcome,
    Phase,
    RollbackRecord,
)

__all__ = [
    "DNS_LABEL",
    "GROUP",
    "K8S_NAME",
    "KIND",
    "LORA_NAME",
    "MAX_NAME_LENGTH",
    "PLURAL",
    "RELEASE_PATTERN",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "ApiKeysSpec",
    "ArmSpec",
    "AudienceSpec",
    "AuditSpec",
    "AutoscalingSpec",
    "BatchingSpec",
    "CacheSpec",
    "Condition",
    "ConditionType",
    "ConfigMapKeyRef",
    "EditingSpec",
    "ExperimentSpec",
    "FluxDeployment",
    "FluxDeploymentSpec",
    "FluxDeploymentStatus",
    "GpuSpec",
    "HistoryEntry",
    "HubSource",
    "LoraSpec",
    "ModelSource",
    "ModelSpec",
    "NetworkPeer",
    "NetworkPolicySpec",
    "Outcome",
    "Phase",
    "PresetName",
    "PvcSource",
    "ResourcesSpec",
    "RollbackRecord",
    "RolloutSpec",
    "SafetySpec",
    "SecretKeyRef",
    "VqaSpec",
    "experiments_as_written",
]
