"""The FluxDeployment resource as pydantic models: the one source of the CRD schema.

Every field carries a description (it becomes the CRD's documentation, `kubectl explain`),
bounds the API server enforces, and — where a JSON schema cannot say it — a CEL rule in
``x-kubernetes-validations``. ``crdgen`` turns these models into ``crds/``.

By area: ``base`` (names, patterns, the base model) · ``sources`` (where the weights come
from) · ``serving`` (GPUs, resources, autoscaling, batching, rollout) · ``features``
(LoRAs, safety, audit, API keys, cache, editing, VQA) · ``network`` (who may reach the
pods) · ``fleet`` (the fleet queue's fronts and workers, the model cache) ·
``experiments`` (A/B experiments on style presets, and their checks against the
server's own model) · ``performance`` (the server's speed options) · ``rollout`` (canary
steps and analysis, the Gateway API route) · ``resource`` (the spec as a whole) ·
``status`` and ``canary_status``. A new part of the spec is a model in its area (or a new module),
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
from flux_operator.spec.canary_status import (
    CanaryPhase,
    CanaryStatus,
    Measurement,
    MeasurementOutcome,
)
from flux_operator.spec.experiments import (
    ArmSpec,
    AudienceSpec,
    ExperimentSpec,
    experiments_as_written,
    parse_experiments,
    preset_name_problems,
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
from flux_operator.spec.fleet import FrontSpec, ModelCacheSpec, QueueSpec
from flux_operator.spec.network import NetworkPeer, NetworkPolicySpec
from flux_operator.spec.performance import CompileCacheSpec, PerformanceSpec, StartupSeconds
from flux_operator.spec.resource import FluxDeployment, FluxDeploymentSpec
from flux_operator.spec.rollout import (
    BUILTIN_METRICS,
    CanaryAnalysis,
    CanaryMetric,
    CanaryRolloutFields,
    CanarySpec,
    CanaryStep,
    GatewaySpec,
    ParentRef,
    parse_duration,
)
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
    parse_time,
    rfc3339,
)

__all__ = [
    "BUILTIN_METRICS",
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
    "CanaryAnalysis",
    "CanaryMetric",
    "CanaryPhase",
    "CanaryRolloutFields",
    "CanarySpec",
    "CanaryStatus",
    "CanaryStep",
    "CompileCacheSpec",
    "Condition",
    "ConditionType",
    "ConfigMapKeyRef",
    "EditingSpec",
    "ExperimentSpec",
    "FluxDeployment",
    "FluxDeploymentSpec",
    "FluxDeploymentStatus",
    "FrontSpec",
    "GatewaySpec",
    "GpuSpec",
    "HistoryEntry",
    "HubSource",
    "LoraSpec",
    "Measurement",
    "MeasurementOutcome",
    "ModelCacheSpec",
    "ModelSource",
    "ModelSpec",
    "NetworkPeer",
    "NetworkPolicySpec",
    "Outcome",
    "ParentRef",
    "PerformanceSpec",
    "Phase",
    "PresetName",
    "PvcSource",
    "QueueSpec",
    "ResourcesSpec",
    "RollbackRecord",
    "RolloutSpec",
    "SafetySpec",
    "SecretKeyRef",
    "StartupSeconds",
    "VqaSpec",
    "experiments_as_written",
    "parse_duration",
    "parse_experiments",
    "parse_time",
    "preset_name_problems",
    "rfc3339",
]
