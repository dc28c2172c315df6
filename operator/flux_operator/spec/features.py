"""The server's optional features: LoRAs, safety, audit, API keys, the result cache,
editing and VQA."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from flux_operator.spec.base import (
    Fraction,
    K8sName,
    LoraName,
    ModelId,
    RelativePath,
    SecretName,
    _cel,
    _Model,
)
from flux_operator.spec.sources import ConfigMapKeyRef, PvcSource, SecretKeyRef


class LoraSpec(_Model):
    """A LoRA adapter loaded at start (--lora NAME=PATH[:SCALE]); exactly one source."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "(has(self.path) ? 1 : 0) + (has(self.configMap) ? 1 : 0)"
                " + (has(self.pvc) ? 1 : 0) + (has(self.uri) ? 1 : 0) == 1",
                "set exactly one of path, configMap, pvc or uri",
            )
        )
    )

    name: LoraName = Field(description="Adapter name requests and presets use.")
    path: RelativePath | None = Field(
        default=None, description="Path relative to the model volume (needs model.source.pvc)."
    )
    config_map: K8sName | None = Field(
        default=None,
        description="ConfigMap whose binaryData holds the adapter files (small adapters).",
    )
    pvc: PvcSource | None = Field(default=None, description="PVC holding the adapter.")
    uri: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^s3://[^\s]+$",
        description="Object-store URI of the adapter file (a FluxLoRATraining's output).",
    )
    sha256: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-f0-9]{64}$",
        description="sha256 of the adapter file, as its training reported it.",
    )
    scale: float = Field(default=1.0, ge=0.0, le=4.0, description="Default adapter weight.")

    @model_validator(mode="after")
    def _one_source(self) -> LoraSpec:
        if sum(x is not None for x in (self.path, self.config_map, self.pvc, self.uri)) != 1:
            raise ValueError("set exactly one of path, configMap, pvc or uri")
        return self


class SafetySpec(_Model):
    """The content policy: the prompt filter (--blocklist, --safety-model) and the image
    check on every image made (--image-safety-model)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!(has(self.blocklist) && has(self.blocklistConfigMapRef))",
                "set at most one of blocklist or blocklistConfigMapRef",
            ),
            ("!has(self.threshold) || has(self.model)", "threshold needs model"),
            (
                "!has(self.imageThreshold) || has(self.imageModel)",
                "imageThreshold needs imageModel",
            ),
        )
    )

    blocklist: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] | None = (
        Field(
            default=None,
            max_length=10000,
            description="Blocked terms, inline (written to a ConfigMap the pods mount).",
        )
    )
    blocklist_config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key holding the blocklist, one term a line."
    )
    model: ModelId | None = Field(
        default=None, description="Text-classification model path or hub id (--safety-model)."
    )
    threshold: float | None = Field(
        default=None,
        ge=0.01,
        le=1.0,
        description="Score of an unsafe label at which the model refuses a prompt "
        "(--safety-threshold; the server's default is 0.5).",
    )

    image_model: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Image-classification model path or hub id run on every generated or "
        "edited image before it is returned (--image-safety-model; e.g. "
        "Falconsai/nsfw_image_detection, Apache-2.0). A flagged image is refused with "
        "reason image_classifier.",
    )
    image_threshold: Fraction | None = Field(
        default=None,
        description="Probability of an unsafe label above which an image is refused "
        "(--image-safety-threshold; 0 refuses every image, 1 none; the server's default is "
        "0.5).",
    )

    @model_validator(mode="after")
    def _one_blocklist(self) -> SafetySpec:
        if self.blocklist is not None and self.blocklist_config_map_ref is not None:
            raise ValueError("set at most one of blocklist or blocklistConfigMapRef")
        if self.threshold is not None and self.model is None:
            raise ValueError("threshold needs model")
        if self.image_threshold is not None and self.image_model is None:
            raise ValueError("imageThreshold needs imageModel")
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

    secret_name: SecretName = Field(description="Secret with the key file.")
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
    kontext_model: ModelId | None = Field(
        default=None,
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
