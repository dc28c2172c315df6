"""``spec.queue`` (one queue for the fleet: fronts on CPUs, GPU workers pulling from Redis
Streams) and ``spec.modelCache`` (the weights filled once onto a volume every pod mounts).
``render.front``, ``render.keda`` and ``render.model_cache`` turn them into objects."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from flux_operator.spec.base import K8sName, _cel, _Model
from flux_operator.spec.sources import SecretKeyRef

QUEUE_URL_PATTERN = r"^rediss?://[^@\s]+$"
"""A URL without credentials: a password belongs in a Secret (``passwordSecretRef``, or the
whole URL in ``urlSecretRef``), never in the spec ArgoCD and ``kubectl get`` show."""


class FrontSpec(_Model):
    """The ``NAME-front`` Deployment: admission, REST and gRPC, no model, on CPUs."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("self.replicas <= self.maxReplicas", "front.replicas must be <= front.maxReplicas")
        )
    )

    replicas: int = Field(
        default=2, ge=1, le=100, description="Fewest fronts (the HPA's minReplicas)."
    )
    max_replicas: int = Field(default=8, ge=1, le=100, description="Most fronts (the HPA's).")
    target_cpu_utilization: int = Field(
        default=70,
        ge=10,
        le=100,
        description="Average CPU use, percent of the request, the fronts' HPA aims for.",
    )
    cpu: str = Field(
        default="1", max_length=16, pattern=r"^[0-9]+(\.[0-9]+|m)?$", description="CPU request."
    )
    memory: str = Field(
        default="1Gi",
        max_length=16,
        pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$",
        description="Memory request and limit.",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> FrontSpec:
        if self.replicas > self.max_replicas:
            raise ValueError("front.replicas must be <= front.maxReplicas")
        return self


class QueueSpec(_Model):
    """The fleet queue on Redis (--queue): ``NAME-front`` takes the requests and queues
    them, the GPU Deployment ``NAME`` runs as workers that pull. Use a Redis with
    persistence (AOF): what waits in the streams survives a Redis restart only then."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "has(self.url) != has(self.urlSecretRef)",
                "set exactly one of queue.url or .urlSecretRef",
            )
        )
    )

    url: str | None = Field(
        default=None,
        max_length=1024,
        pattern=QUEUE_URL_PATTERN,
        description="redis:// or rediss:// URL without credentials (a password-less Redis, "
        "or one whose password is in passwordSecretRef).",
    )
    url_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the whole URL (FLUXSERVE_QUEUE)."
    )
    password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the password (FLUXSERVE_QUEUE_PASSWORD)."
    )
    visibility_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="Seconds before a silent worker's entries go to another "
        "(--visibility-timeout); default: the server's.",
    )
    front: FrontSpec = Field(default_factory=FrontSpec, description="The fronts.")

    @model_validator(mode="after")
    def _one_url(self) -> QueueSpec:
        if (self.url is None) == (self.url_secret_ref is None):
            raise ValueError("set exactly one of queue.url or .urlSecretRef")
        return self


class ModelCacheSpec(_Model):
    """The weights, downloaded once at a pinned revision onto a volume the pods mount
    read-only, instead of from the hub on every start: a PVC filled by a Job, or an OCI
    image holding them (the ``image`` volume source)."""

    revision: str = Field(
        min_length=40,
        max_length=40,
        pattern=r"^[0-9a-f]{40}$",
        description="Hub commit (40 hex) the cache holds: every pod loads the same bytes, "
        "and another commit is another cache.",
    )
    size: str = Field(
        default="64Gi",
        max_length=16,
        pattern=r"^[0-9]+(Mi|Gi|Ti)$",
        description="PVC size (FLUX.1-dev's diffusers weights are about 35 GB).",
    )
    storage_class_name: K8sName | None = Field(
        default=None,
        description="StorageClass of the PVC; it must offer ReadOnlyMany (default: the cluster's).",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=r"^[a-z0-9][a-z0-9._/:@-]*[a-z0-9]$",
        description="An OCI image whose files are the weights, mounted as an image volume "
        "(Kubernetes 1.33+, feature ImageVolume): no PVC and no Job.",
    )
