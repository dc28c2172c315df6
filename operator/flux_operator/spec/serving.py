"""How the server runs: GPUs, resources, autoscaling, batching and rollouts."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from flux_operator.spec.base import _cel, _Model
from flux_operator.spec.rollout import CanaryRolloutFields


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
    """A HorizontalPodAutoscaler on the per-pod queue depth (fluxserve_queue_depth), or a
    KEDA ScaledObject on the fleet queue (``engine: keda`` or ``minReplicas: 0``)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas")
        )
    )

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Fewest pods; 0 scales the workers to zero through KEDA (needs spec.queue).",
    )
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

    engine: Literal["hpa", "keda"] = Field(
        default="hpa",
        description="hpa: a HorizontalPodAutoscaler (minReplicas >= 1); keda: a KEDA "
        "ScaledObject on the fleet queue (chosen anyway when minReplicas is 0).",
    )
    polling_interval_seconds: int = Field(
        default=15,
        ge=1,
        le=600,
        description="KEDA: how often the queue is read (the wake-up delay from zero is up to "
        "this, plus the pod's start).",
    )
    cooldown_seconds: int = Field(
        default=600,
        ge=0,
        le=86400,
        description="KEDA: seconds without waiting or running work before the last worker "
        "goes (a new one costs a cold start).",
    )
    activation_queue_depth: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="KEDA: waiting requests above which the first worker starts (0: any).",
    )
    prometheus_url: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^https?://[^\s]+$",
        description="KEDA: Prometheus to read the workers' running requests from, so a "
        "worker busy with a long batch is not scaled away while the queue is empty.",
    )

    @property
    def keda(self) -> bool:
        """A KEDA ScaledObject scales the workers (the only way to zero)."""
        return self.engine == "keda" or self.min_replicas == 0

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self


class BatchingSpec(_Model):
    """The server's dynamic batching (--max-batch-size, --max-delay-ms, --batch-wait,
    --max-queue)."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("self.maxBatchSize <= self.maxQueue", "maxBatchSize must be <= maxQueue")
        )
    )

    max_batch_size: int = Field(default=4, ge=1, le=64, description="Most requests per batch.")
    max_delay_ms: int = Field(
        default=50, ge=0, le=10000, description="How long a batch waits to fill."
    )
    wait: Literal["when-busy", "always"] = Field(
        default="when-busy",
        description="when-busy: a request that finds the server idle runs at once; always: "
        "it waits up to maxDelayMs for company (--batch-wait).",
    )
    max_queue: int = Field(
        default=64, ge=1, le=10000, description="Waiting requests before 429 / RESOURCE_EXHAUSTED."
    )

    @model_validator(mode="after")
    def _batch_le_queue(self) -> BatchingSpec:
        if self.max_batch_size > self.max_queue:
            raise ValueError("maxBatchSize must be <= maxQueue")
        return self


class RolloutSpec(CanaryRolloutFields):
    """How a new revision rolls out and when it is rolled back: replacing every pod
    (``strategy: RollingUpdate``) or through a canary judged on Prometheus (``Canary``)."""

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
