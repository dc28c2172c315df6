"""What the operator reports: conditions, the revision history, rollbacks."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import Field

from flux_operator.spec.base import _StatusModel
from flux_operator.spec.canary_status import CanaryStatus


def rfc3339(moment: datetime) -> str:
    """A time as the status records it (RFC 3339, UTC, whole seconds)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """A time the status recorded (:func:`rfc3339`), back as a datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "RolledBack"]
ConditionType = Literal["Ready", "Progressing", "Degraded", "RolledBack", "ScaleToZero"]
Outcome = Literal["Progressing", "Available", "Failed", "RolledBack", "Superseded"]


class Condition(_StatusModel):
    """A Kubernetes-style condition."""

    type: ConditionType = Field(
        description="Ready, Progressing, Degraded, RolledBack or ScaleToZero (with "
        "autoscaling to zero: whether KEDA scales the workers)."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="CamelCase reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this condition was computed for."
    )


class HistoryEntry(_StatusModel):
    """One revision: what ran and how it ended."""

    revision: int = Field(ge=1, description="Increasing revision number.")
    release: str = Field(description="The release (git tag) of this revision.")
    image: str = Field(description="The full image reference this revision ran.")
    presets_hash: str = Field(description="Hash of the style presets of this revision.")
    presets_config_map: str = Field(description="The immutable presets ConfigMap it mounted.")
    loras: str | None = Field(
        default=None,
        max_length=65536,
        description="The LoRA adapters it loaded (spec.loras then, as JSON); absent: none.",
    )
    time: str = Field(description="When the revision started (RFC 3339).")
    outcome: Outcome = Field(
        description="Progressing, Available, Failed, RolledBack (failed or replaced by a "
        "rollback) or Superseded (replaced by a newer revision)."
    )
    available_time: str | None = Field(
        default=None, description="When it first became available; set = once healthy."
    )
    message: str | None = Field(default=None, max_length=4096, description="Why it ended so.")


class RollbackRecord(_StatusModel):
    """The rollback in force, until the spec changes."""

    from_release: str = Field(description="The release rolled back from.")
    from_revision: int = Field(description="The revision rolled back from.")
    to_revision: int = Field(description="The revision restored (a new history entry).")
    to_release: str = Field(description="The release restored.")
    generation: int = Field(description="metadata.generation when it happened.")
    manual: bool = Field(description="True for the rollback-to annotation.")
    reason: str = Field(description="Why.")
    message: str | None = Field(
        default=None,
        max_length=4096,
        description="What failed (an aborted canary: the metric, its value and its bound).",
    )


class FluxDeploymentStatus(_StatusModel):
    """What the operator observed; written only by the operator."""

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
    canary: CanaryStatus | None = Field(
        default=None,
        description="The canary running (strategy Canary), or the last one until the spec "
        "changes to another release.",
    )
