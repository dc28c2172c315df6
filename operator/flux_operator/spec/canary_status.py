"""``status.canary``: the canary now running (or the last one, until the spec changes), as
``flux_operator.reconcile.canary_decision.decide`` writes it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flux_operator.spec.base import _StatusModel

MeasurementOutcome = Literal["Passed", "Failed", "Inconclusive"]
CanaryPhase = Literal["Starting", "Progressing", "Paused", "Promoting", "Promoted", "Aborted"]


class Measurement(_StatusModel):
    """One metric measured once."""

    metric: str = Field(description="Metric name.")
    value: float | None = Field(default=None, description="What Prometheus returned.")
    min: float | None = Field(default=None, description="Lower bound in force.")
    max: float | None = Field(default=None, description="Upper bound in force.")
    outcome: MeasurementOutcome = Field(description="Passed, Failed or Inconclusive.")
    reason: str | None = Field(
        default=None, max_length=1024, description="Why it failed or was inconclusive."
    )
    time: str = Field(description="When it was measured (RFC 3339).")

    def bound(self) -> str:
        """The bound as a person reads it: ``max 0.02``, ``min 1``, ``0.1..0.9``."""
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        if self.max is not None:
            return f"max {self.max:g}"
        return f"min {self.min:g}" if self.min is not None else "none"


class CanaryStatus(_StatusModel):
    """The canary now running (or the last one, until the spec changes)."""

    release: str = Field(description="Release the canary runs.")
    revision: int | None = Field(default=None, description="Its revision in status.history.")
    phase: CanaryPhase = Field(
        default="Progressing",
        description="Starting (until the canary has a ready pod: the first step's clock waits), "
        "Progressing, Paused (waiting for promote), Promoting, Promoted or Aborted.",
    )
    step: int = Field(default=0, ge=0, description="Index of the step in force.")
    weight: int = Field(default=0, ge=0, le=100, description="Canary's share of traffic, %.")
    step_started_at: str = Field(description="When the step began (RFC 3339).")
    step_ends_at: str | None = Field(
        default=None, description="When the step's pause ends; none: waits for promote."
    )
    failures: int = Field(default=0, ge=0, description="Failed measurements so far.")
    last_analysis_at: str | None = Field(default=None, description="When analysis last ran.")
    measurements: list[Measurement] = Field(
        default_factory=list, description="The last measurement of each metric."
    )
    message: str | None = Field(
        default=None, max_length=4096, description="Why it holds, paused or ended so."
    )
    summary: str | None = Field(
        default=None,
        max_length=256,
        description="release@weight% and phase, as kubectl get shows it (CANARY column).",
    )

    def summarized(self) -> CanaryStatus:
        """This status with ``summary`` filled in from the fields it sums up."""
        return self.model_copy(update={"summary": f"{self.release}@{self.weight}% {self.phase}"})
