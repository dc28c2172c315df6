"""The FluxDeployment spec (every part together) and the whole resource."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from flux_contract.experiments import MAX_EXPERIMENTS
from flux_contract.names import MAX_NAME_LENGTH as MAX_PRESET_NAME_LENGTH
from flux_contract.presets import StylePreset
from flux_operator.spec import features
from flux_operator.spec.base import (
    RELEASE_PATTERN,
    ImagePullPolicy,
    ImagePullSecrets,
    ImageRepository,
    K8sName,
    PresetName,
    _cel,
    _Model,
)
from flux_operator.spec.experiments import (
    EXPERIMENTS_RULES,
    NAME_PATTERN,
    NAME_RULE_MESSAGE,
    ExperimentSpec,
)
from flux_operator.spec.fleet import ModelCacheSpec, QueueSpec
from flux_operator.spec.network import NetworkPolicySpec
from flux_operator.spec.performance import PerformanceSpec
from flux_operator.spec.rollout import SPEC_CEL_RULES, GatewaySpec
from flux_operator.spec.serving import (
    AutoscalingSpec,
    BatchingSpec,
    GpuSpec,
    ResourcesSpec,
    RolloutSpec,
)
from flux_operator.spec.sources import ModelSpec
from flux_operator.spec.status import FluxDeploymentStatus

SCALE_TO_ZERO_NEEDS_QUEUE = (
    "autoscaling.minReplicas 0 (or engine keda) needs spec.queue: the fronts hold the "
    "requests while no worker runs"
)
MODEL_CACHE_NEEDS_HUB = "modelCache needs model.source.hub (it is filled from the hub)"


class FluxDeploymentSpec(_Model):
    """A FLUX inference service: which release of the server, on which GPUs, with which
    presets and features."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!has(self.image) || !self.image.contains('@') || "
                "self.image.matches('@sha256:[a-f0-9]{64}$')",
                "image digest must be @sha256:<64 hex>",
            ),
            (
                "!has(self.loras) || self.loras.all(a, self.loras.exists_one(b, b.name == a.name))",
                "lora names must be unique",
            ),
            (
                f"!has(self.stylePresets) || self.stylePresets.all(k, "
                f"k.size() <= {MAX_PRESET_NAME_LENGTH} && k.matches(r'{NAME_PATTERN}'))",
                f"stylePresets keys must be at most {MAX_PRESET_NAME_LENGTH} characters: "
                + NAME_RULE_MESSAGE,
            ),
            (
                "!has(self.stylePresets) || self.stylePresets.all(k, "
                "self.stylePresets[k].promptTemplate.contains('{prompt}'))",
                "every stylePresets promptTemplate must contain {prompt}",
            ),
            *EXPERIMENTS_RULES,
            *SPEC_CEL_RULES,
            (
                "!has(self.autoscaling) || has(self.queue) || "
                "((!has(self.autoscaling.minReplicas) || self.autoscaling.minReplicas > 0) && "
                "(!has(self.autoscaling.engine) || self.autoscaling.engine != 'keda'))",
                SCALE_TO_ZERO_NEEDS_QUEUE,
            ),
            ("!has(self.modelCache) || has(self.model.source.hub)", MODEL_CACHE_NEEDS_HUB),
        )
    )

    release: str = Field(
        min_length=1,
        max_length=128,
        pattern=RELEASE_PATTERN,
        description="Git tag of the server code; the image tag unless `image` pins one.",
    )
    image: ImageRepository = Field(
        default="ghcr.io/fluxserve/fluxserve-server",
        description="Server image repository; a tag or digest written here overrides release.",
    )
    image_pull_policy: ImagePullPolicy = "IfNotPresent"
    image_pull_secrets: ImagePullSecrets = Field(default_factory=list)
    credentials_secret: K8sName | None = Field(
        default=None,
        description="A Secret whose keys become the server's environment: the object "
        "store's credentials for s3:// adapters (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_ENDPOINT_URL), as a FluxLoRATraining's credentialsSecret.",
    )
    model: ModelSpec = Field(description="The model to serve.")
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Pods when autoscaling is off; 0 with no autoscaling suspends the service.",
    )
    gpu: GpuSpec = Field(default_factory=GpuSpec, description="GPUs per pod and their nodes.")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="CPU, memory and shared memory per pod."
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="Scale on queue depth; when set, `replicas` is left to the HPA."
    )
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Dynamic batching.")
    performance: PerformanceSpec | None = Field(default=None, description="Speed options.")
    style_presets: dict[PresetName, StylePreset] = Field(
        default_factory=dict,
        max_length=256,
        description="Named styles (key: preset name, in any script), served from an immutable "
        "ConfigMap.",
    )
    experiments: list[ExperimentSpec] = Field(
        default_factory=list,
        max_length=MAX_EXPERIMENTS,
        description="A/B experiments on style presets, carried with the presets in their "
        "content-hashed ConfigMap: a change of weights is a new revision, and a rollback "
        "restores the experiments with the presets.",
    )
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Rollout and rollback.")
    gateway: GatewaySpec | None = Field(
        default=None,
        description="Route HTTP traffic through the Gateway API: an HTTPRoute named like this "
        "resource, whose backends carry a canary's weights (all on the stable side between "
        "canaries).",
    )
    loras: list[features.LoraSpec] = Field(
        default_factory=list, max_length=32, description="LoRA adapters."
    )
    safety: features.SafetySpec | None = Field(default=None, description="Prompt safety filter.")
    audit: features.AuditSpec = Field(default_factory=features.AuditSpec, description="Audit log.")
    api_keys: features.ApiKeysSpec | None = Field(default=None, description="Require API keys.")
    network_policy: NetworkPolicySpec | None = Field(
        default=None,
        description="Who may reach the pods (a NetworkPolicy); absent: no policy is made.",
    )
    cache: features.CacheSpec | None = Field(default=None, description="Result cache.")
    editing: features.EditingSpec = Field(
        default_factory=features.EditingSpec, description="Image editing."
    )
    vqa: features.VqaSpec | None = Field(default=None, description="Visual question answering.")
    max_image_pixels: int | None = Field(
        default=None,
        ge=65536,
        le=67108864,
        description="Largest input image (edit, VQA) in pixels (--max-image-pixels).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Server log level (--log-level)."
    )
    queue: QueueSpec | None = Field(
        default=None,
        description="One queue for the fleet (Redis Streams): NAME-front takes the requests "
        "on CPUs, the GPU pods of NAME pull from the queue; absent: every pod serves alone.",
    )
    model_cache: ModelCacheSpec | None = Field(
        default=None,
        description="The weights at a pinned revision on a volume every pod mounts "
        "read-only (a PVC filled once by a Job, or an OCI image), not from the hub.",
    )

    @model_validator(mode="after")
    def _unique_loras(self) -> FluxDeploymentSpec:
        names = [lora.name for lora in self.loras]
        if len(names) != len(set(names)):
            raise ValueError("lora names must be unique")
        return self

    @model_validator(mode="after")
    def _fleet_needs(self) -> FluxDeploymentSpec:
        if self.autoscaling is not None and self.autoscaling.keda and self.queue is None:
            raise ValueError(SCALE_TO_ZERO_NEEDS_QUEUE)
        if self.model_cache is not None and self.model.source.hub is None:
            raise ValueError(MODEL_CACHE_NEEDS_HUB)
        return self


class FluxDeployment(_Model):
    """The whole resource, for ``render`` and tests."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["fluxserve.dev/v1alpha1"] = "fluxserve.dev/v1alpha1"
    kind: Literal["FluxDeployment"] = "FluxDeployment"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FluxDeploymentSpec
    status: FluxDeploymentStatus | None = None
