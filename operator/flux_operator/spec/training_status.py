"""What the operator reports about a FluxLoRATraining."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from flux_operator.spec.base import _StatusModel
from flux_operator.spec.training import FluxLoRATrainingSpec

TrainingPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
TrainingConditionType = Literal["Trained", "Evaluated", "Promoted"]


class TrainingCondition(_StatusModel):
    """A Kubernetes-style condition."""

    type: TrainingConditionType = Field(description="Trained, Evaluated or Promoted.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="CamelCase reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")


class TrainingProgress(_StatusModel):
    step: int = Field(default=0, ge=0, description="Steps done.")
    total: int = Field(default=0, ge=0, description="Steps of the run.")
    eta_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Time left while the Job runs, from the trainer's last step line.",
    )
    summary: str = Field(default="", description="step/total (and the ETA), for kubectl get.")


class TrainingMetrics(_StatusModel):
    """The trainer's metrics.json, as its termination message reported it."""

    base_validation_loss: float | None = Field(default=None, description="Before training.")
    final_validation_loss: float | None = Field(default=None, description="After training.")
    improvement_percent: float | None = Field(
        default=None, description="How far below the base the final loss is, in percent."
    )
    steps: int | None = Field(default=None, description="Steps run.")
    seconds: float | None = Field(default=None, description="Time training took.")
    peak_memory_gb: float | None = Field(default=None, description="Peak accelerator memory.")


class AdapterStatus(_StatusModel):
    uri: str = Field(description="Where the adapter is: s3://... or pvc://CLAIM/PATH.")
    sha256: str = Field(description="sha256 of pytorch_lora_weights.safetensors.")
    dataset_sha256: str | None = Field(default=None, description="The data set's content hash.")
    trainer_version: str | None = Field(default=None, description="flux_trainer's version.")


class PromotionStatus(_StatusModel):
    target: str = Field(description="The FluxDeployment the adapter was added to.")
    lora_name: str = Field(description="Its name in the target's loras.")
    time: str = Field(description="When (RFC 3339).")


class FluxLoRATrainingStatus(_StatusModel):
    observed_generation: int | None = Field(default=None, description="Last generation handled.")
    phase: TrainingPhase = Field(
        default="Pending", description="Pending, Running, Succeeded, Failed."
    )
    conditions: list[TrainingCondition] = Field(default_factory=list, description="Conditions.")
    job: str | None = Field(default=None, description="The Job (or TrainJob) that runs it.")
    progress: TrainingProgress | None = Field(default=None, description="Steps done.")
    metrics: TrainingMetrics | None = Field(default=None, description="The run's metrics.")
    adapter: AdapterStatus | None = Field(default=None, description="The adapter made.")
    promotion: PromotionStatus | None = Field(default=None, description="Where it went.")
    message: str | None = Field(default=None, max_length=4096, description="Why this phase.")


class FluxLoRATraining(_StatusModel):
    """The whole resource, for ``render`` and tests."""

    api_version: Literal["fluxserve.dev/v1alpha1"] = "fluxserve.dev/v1alpha1"
    kind: Literal["FluxLoRATraining"] = "FluxLoRATraining"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FluxLoRATrainingSpec
    status: FluxLoRATrainingStatus | None = None
