"""The FluxDeployment resource as pydantic models: the one source of the CRD schema.

Every field carries a description (it becomes the CRD's documentation, `kubectl explain`),
bounds the API server enforces, and — where a JSON schema cannot say it — a CEL rule in
``x-kubernetes-validations``. ``crdgen`` turns these models into ``crds/``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from flux_client.presets import PRESET_NAME_PATTERN, StylePreset
from flux_operator.performance import PerformanceSpec

GROUP = "fluxserve.dev"
VERSION = "v1alpha1"
KIND = "FluxDeployment"
PLURAL = "fluxdeployments"
SINGULAR = "fluxdeployment"
SHORT_NAMES = ("fxd",)

RELEASE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
"""A git tag that is also a valid OCI image tag (the image tag is the release)."""

DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
LORA_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$"
MAX_NAME_LENGTH = 40
"""Children are named ``<name>-presets-<10 hex>``; 40 keeps them inside 63 characters."""


PresetName = Annotated[str, StringConstraints(pattern=PRESET_NAME_PATTERN)]


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretKeyRef(_Model):
    """A key of a Secret in the FluxDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=K8S_NAME, description="Secret name.")
    key: str = Field(min_length=1, max_length=253, description="Key in the Secret's data.")


class ConfigMapKeyRef(_Model):
    """A key of a ConfigMap in the FluxDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=K8S_NAME, description="ConfigMap name.")
    key: str = Field(min_length=1, max_length=253, description="Key in the ConfigMap's data.")


class PvcSource(_Model):
    """A PersistentVolumeClaim mounted read-only."""

    claim_name: str = Field(
        min_length=1, max_length=253, pattern=K8S_NAME, description="PVC name, same namespace."
    )
    sub_path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^[^/].*$",
        description="Directory inside the volume (relative, no leading slash).",
    )


class HubSource(_Model):
    """Download from the Hugging Face hub when the pod starts."""

    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding HF_TOKEN (gated models such as FLUX.1-dev)."
    )


class ModelSource(_Model):
    """Where the weights come from: exactly one of ``pvc`` or ``hub``."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("has(self.pvc) != has(self.hub)", "set exactly one of model.source.pvc or .hub")
        )
    )

    pvc: PvcSource | None = Field(
        default=None, description="Weights on a PVC (mounted at /models)."
    )
    hub: HubSource | None = Field(default=None, description="Weights fetched from the hub.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if (self.pvc is None) == (self.hub is None):
            raise ValueError("set exactly one of model.source.pvc or .hub")
        return self


class ModelSpec(_Model):
    """The diffusers model the server loads."""

    id: str = Field(
        min_length=1,
        max_length=256,
        description="Hub id (e.g. black-forest-labs/FLUX.1-dev); names the model in responses "
        "and metrics. With a PVC source the server loads the PVC directory instead.",
    )
    revision: str | None = Field(
        default=None, max_length=128, description="Hub revision (branch, tag or commit); hub only."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="Weights dtype (--dtype)."
    )
    source: ModelSource = Field(description="Where the weights come from.")


class GpuSpec(_Model):
    """GPUs per pod and where such pods may run."""

    count: int = Field(
        default=1, ge=0, le=16, description="GPUs per pod; 0 runs on CPU (--device cpu)."
    )
    resource_name: str = Field(
        default="nvidia.com/gpu",
        max_length=253,
        pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$",
        description="Extended resource name of the GPU.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the pods require (e.g. the GPU product)."
    )
    taint_key: str = Field(
        default="nvidia.com/gpu",
        max_length=253,
        description="Key of the taint GPU nodes carry; pods tolerate it when count > 0.",
    )


class ResourcesSpec(_Model):
    """CPU and memory of the server container."""

    cpu: str = Field(default="4", pattern=r"^[0-9]+(\.[0-9]+|m)?$", description="CPU request.")
    memory: str = Field(
        default="48Gi",
        pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$",
        description="Memory request and limit (weights are loaded through host memory).",
    )
    shm_size: str = Field(
        default="16Gi",
        pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$",
        description="Size of the memory-backed /dev/shm.",
    )


class AutoscalingSpec(_Model):
    """A HorizontalPodAutoscaler on the per-pod queue depth (fluxserve_queue_depth)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas")
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest pods.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most pods.")
    target_queue_depth: int = Field(
        default=4, ge=1, le=1000, description="Average waiting requests per pod to aim for."
    )
    scale_down_stabilization_seconds: int = Field(
        default=600,
        ge=0,
        le=3600,
        description="How long load must stay low before pods are removed (loading takes minutes).",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self


class BatchingSpec(_Model):
    """The server's dynamic batching (--max-batch-size, --max-delay-ms, --max-queue)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("self.maxBatchSize <= self.maxQueue", "maxBatchSize must be <= maxQueue")
        )
    )

    max_batch_size: int = Field(default=4, ge=1, le=64, description="Most requests per batch.")
    max_delay_ms: int = Field(
        default=50, ge=0, le=10000, description="How long a batch waits to fill."
    )
    max_queue: int = Field(
        default=64, ge=1, le=10000, description="Waiting requests before 429 / RESOURCE_EXHAUSTED."
    )

    @model_validator(mode="after")
    def _batch_le_queue(self) -> BatchingSpec:
        if self.max_batch_size > self.max_queue:
            raise ValueError("maxBatchSize must be <= maxQueue")
        return self


class RolloutSpec(_Model):
    """How a new revision rolls out and when it is rolled back."""

    progress_deadline_seconds: int = Field(
        default=900,
        ge=60,
        le=86400,
        description="Seconds a revision may take to become available (weights load slowly).",
    )
    auto_rollback: bool = Field(
        default=True, description="Put back the last healthy revision when the deadline passes."
    )
    revision_history_limit: int = Field(
        default=10, ge=1, le=100, description="Revisions kept in status.history (and ConfigMaps)."
    )
    drain_timeout_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="Seconds a stopping pod finishes accepted work (--drain-timeout).",
    )


class LoraSpec(_Model):
    """A LoRA adapter loaded at start (--lora NAME=PATH[:SCALE]); exactly one source."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "(has(self.path) ? 1 : 0) + (has(self.configMap) ? 1 : 0)"
                " + (has(self.pvc) ? 1 : 0) == 1",
                "set exactly one of path, configMap or pvc",
            )
        )
    )

    # maxLength although the pattern bounds it too: the API server prices CEL rules (the
    # uniqueness rule compares every pair of names) from maxLength, not from patterns.
    name: str = Field(
        max_length=63, pattern=LORA_NAME, description="Adapter name requests and presets use."
    )
    path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^[^/].*$",
        description="Path relative to the model volume (needs model.source.pvc).",
    )
    config_map: str | None = Field(
        default=None,
        max_length=253,
        pattern=K8S_NAME,
        description="ConfigMap whose binaryData holds the adapter files (small adapters).",
    )
    pvc: PvcSource | None = Field(default=None, description="PVC holding the adapter.")
    scale: float = Field(default=1.0, ge=0.0, le=4.0, description="Default adapter weight.")

    @model_validator(mode="after")
    def _one_source(self) -> LoraSpec:
        if sum(x is not None for x in (self.path, self.config_map, self.pvc)) != 1:
            raise ValueError("set exactly one of path, configMap or pvc")
        return self


class SafetySpec(_Model):
    """The prompt safety filter (--blocklist, --safety-model)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!(has(self.blocklist) && has(self.blocklistConfigMapRef))",
                "set at most one of blocklist or blocklistConfigMapRef",
            ),
            ("!has(self.threshold) || has(self.model)", "threshold needs model"),
        )
    )

    blocklist: list[str] | None = Field(
        default=None,
        max_length=10000,
        description="Blocked terms, inline (written to a ConfigMap the pods mount).",
    )
    blocklist_config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key holding the blocklist, one term a line."
    )
    model: str | None = Field(
        default=None,
        max_length=1024,
        description="Text-classification model path or hub id (--safety-model).",
    )
    threshold: float | None = Field(
        default=None,
        ge=0.01,
        le=1.0,
        description="Score of an unsafe label at which the model refuses a prompt "
        "(--safety-threshold; the server's default is 0.5).",
    )

    @model_validator(mode="after")
    def _one_blocklist(self) -> SafetySpec:
        if self.blocklist is not None and self.blocklist_config_map_ref is not None:
            raise ValueError("set at most one of blocklist or blocklistConfigMapRef")
        if self.threshold is not None and self.model is None:
            raise ValueError("threshold needs model")
        return self


class AuditSpec(_Model):
    """The audit log of prompts and decisions, written to the pod's stdout."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("!self.hashPrompts || self.enabled", "hashPrompts needs enabled: true")
        )
    )

    enabled: bool = Field(default=False, description="Write the audit log (--audit-log -).")
    hash_prompts: bool = Field(
        default=False, description="Record a hash instead of the prompt (--audit-hash-prompts)."
    )

    @model_validator(mode="after")
    def _hash_needs_log(self) -> AuditSpec:
        if self.hash_prompts and not self.enabled:
            raise ValueError("hashPrompts needs enabled: true")
        return self


class ApiKeysSpec(_Model):
    """API keys (Bearer tokens) the server accepts, from a Secret mounted as a file."""

    secret_name: str = Field(
        min_length=1, max_length=253, pattern=K8S_NAME, description="Secret with the key file."
    )
    key: str = Field(
        default="keys",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key of the Secret holding the file written by `flux_server keys add`.",
    )


class CacheSpec(_Model):
    """The result cache: Redis shared by the replicas when a URL is given, else in memory
    in each pod. Only requests with an explicit seed are cached."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!(has(self.redisUrl) && has(self.redisUrlSecretRef))",
                "set at most one of redisUrl or redisUrlSecretRef",
            )
        )
    )

    redis_url: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^rediss?://",
        description="Redis URL without a password (--redis-url).",
    )
    redis_url_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the Redis URL (env FLUXSERVE_REDIS_URL)."
    )
    bytes: int | None = Field(
        default=None,
        ge=0,
        le=1 << 40,
        description="In-memory cache size per pod when no Redis URL is set; 0 = off "
        "(--cache-bytes; the server's default is 256 MiB).",
    )
    ttl_seconds: int | None = Field(
        default=None, ge=1, le=30 * 86400, description="Entry lifetime (--cache-ttl)."
    )

    @model_validator(mode="after")
    def _one_url(self) -> CacheSpec:
        if self.redis_url is not None and self.redis_url_secret_ref is not None:
            raise ValueError("set at most one of redisUrl or redisUrlSecretRef")
        return self


class EditingSpec(_Model):
    """Image editing: img2img, inpainting, instruction editing (POST /edit, Edit)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("!has(self.kontextModel) || self.enabled", "kontextModel needs enabled: true")
        )
    )

    enabled: bool = Field(default=False, description="Serve editing (--enable-editing).")
    kontext_model: str | None = Field(
        default=None,
        max_length=1024,
        description="Instruction-editing model path or hub id (--kontext-model).",
    )

    @model_validator(mode="after")
    def _kontext_needs_editing(self) -> EditingSpec:
        if self.kontext_model is not None and not self.enabled:
            raise ValueError("kontextModel needs enabled: true")
        return self


class VqaSpec(_Model):
    """Visual question answering (POST /vqa, VQA)."""

    model: str = Field(
        min_length=1, max_length=1024, description="VQA model path or hub id (--vqa-model)."
    )


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
                "!has(self.stylePresets) || self.stylePresets.all(k, k.matches('"
                + PRESET_NAME_PATTERN
                + "'))",
                "stylePresets keys must be lower-case names (a-z, 0-9, '-', '_', '.')",
            ),
            (
                "!has(self.stylePresets) || self.stylePresets.all(k, "
                "self.stylePresets[k].promptTemplate.contains('{prompt}'))",
                "every stylePresets promptTemplate must contain {prompt}",
            ),
        )
    )

    release: str = Field(
        pattern=RELEASE_PATTERN,
        description="Git tag of the server code; the image tag unless `image` pins one.",
    )
    image: str = Field(
        default="ghcr.io/fluxserve/fluxserve-server",
        min_length=1,
        max_length=512,
        pattern=r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9](@sha256:[a-f0-9]{64}|:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$",
        description="Server image repository; a tag or digest written here overrides release.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, max_length=16, description="Secrets for pulling the image."
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
        description="Named styles (key: preset name), served from an immutable ConfigMap.",
    )
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Rollout and rollback.")
    loras: list[LoraSpec] = Field(default_factory=list, max_length=32, description="LoRA adapters.")
    safety: SafetySpec | None = Field(default=None, description="Prompt safety filter.")
    audit: AuditSpec = Field(default_factory=AuditSpec, description="Audit log.")
    api_keys: ApiKeysSpec | None = Field(default=None, description="Require API keys.")
    cache: CacheSpec | None = Field(default=None, description="Result cache.")
    editing: EditingSpec = Field(default_factory=EditingSpec, description="Image editing.")
    vqa: VqaSpec | None = Field(default=None, description="Visual question answering.")
    max_image_pixels: int | None = Field(
        default=None,
        ge=65536,
        le=67108864,
        description="Largest input image (edit, VQA) in pixels (--max-image-pixels).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Server log level (--log-level)."
    )

    @model_validator(mode="after")
    def _unique_loras(self) -> FluxDeploymentSpec:
        names = [lora.name for lora in self.loras]
        if len(names) != len(set(names)):
            raise ValueError("lora names must be unique")
        return self


# --- status -------------------------------------------------------------------------------

Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "RolledBack"]
ConditionType = Literal["Ready", "Progressing", "Degraded", "RolledBack"]
Outcome = Literal["Progressing", "Available", "Failed", "RolledBack", "Superseded"]


class Condition(_Model):
    """A Kubernetes-style condition."""

    model_config = ConfigDict(extra="ignore")

    type: ConditionType = Field(description="Ready, Progressing, Degraded or RolledBack.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="CamelCase reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this condition was computed for."
    )


class HistoryEntry(_Model):
    """One revision: what ran and how it ended."""

    model_config = ConfigDict(extra="ignore")

    revision: int = Field(ge=1, description="Increasing revision number.")
    release: str = Field(description="The release (git tag) of this revision.")
    image: str = Field(description="The full image reference this revision ran.")
    presets_hash: str = Field(description="Hash of the style presets of this revision.")
    presets_config_map: str = Field(description="The immutable presets ConfigMap it mounted.")
    time: str = Field(description="When the revision started (RFC 3339).")
    outcome: Outcome = Field(
        description="Progressing, Available, Failed, RolledBack (failed or replaced by a "
        "rollback) or Superseded (replaced by a newer revision)."
    )
    available_time: str | None = Field(
        default=None, description="When it first became available; set = once healthy."
    )
    message: str | None = Field(default=None, max_length=4096, description="Why it ended so.")


class RollbackRecord(_Model):
    """The rollback in force, until the spec changes."""

    model_config = ConfigDict(extra="ignore")

    from_release: str = Field(description="The release rolled back from.")
    from_revision: int = Field(description="The revision rolled back from.")
    to_revision: int = Field(description="The revision restored (a new history entry).")
    to_release: str = Field(description="The release restored.")
    generation: int = Field(description="metadata.generation when it happened.")
    manual: bool = Field(description="True for the rollback-to annotation.")
    reason: str = Field(description="Why.")


class FluxDeploymentStatus(_Model):
    """What the operator observed; written only by the operator."""

    # Read back leniently: other writers (kopf's own bookkeeping) may add keys to status.
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(default=None, description="Last generation handled.")
    phase: Phase = Field(default="Pending", description="Summary for humans and health checks.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions.")
    replicas: int = Field(default=0, description="Pods the Deployment has.")
    ready_replicas: int = Field(default=0, description="Pods ready to serve.")
    selector: str | None = Field(default=None, description="Pod label selector (scale).")
    current_release: str | None = Field(default=None, description="Release now deployed.")
    current_revision: int | None = Field(default=None, description="Revision now deployed.")
    history: list[HistoryEntry] = Field(default_factory=list, description="Newest last.")
    rollback: RollbackRecord | None = Field(default=None, description="Rollback in force.")
    handled_rollback_to: str | None = Field(
        default=None,
        description="The fluxserve.dev/rollback-to value already acted on (acted on once).",
    )


class FluxDeployment(_Model):
    """The whole resource, for ``render`` and tests."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["fluxserve.dev/v1alpha1"] = "fluxserve.dev/v1alpha1"
    kind: Literal["FluxDeployment"] = "FluxDeployment"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FluxDeploymentSpec
    status: FluxDeploymentStatus | None = None
