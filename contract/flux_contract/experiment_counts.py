"""What each experiment arm has counted: the body of the server's ``GET /experiments``
(built from its metrics) and what the SDK's experiments report reads, from one server or
summed over every replica from Prometheus."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["ArmCounts", "ExperimentCounts", "ExperimentsCounts"]


class ArmCounts(BaseModel):
    name: str
    preset: str | None = None
    weight: int | None = None
    requests: float = 0
    images: float = 0
    gpu_seconds: float = 0
    duration_buckets: dict[str, float] = Field(
        default_factory=dict,
        description="Cumulative request-duration histogram: Prometheus' `le` → count.",
    )
    events: dict[str, float] = Field(
        default_factory=dict, description="Feedback event → sum of values (once per request)."
    )


class ExperimentCounts(BaseModel):
    name: str
    preset: str | None = None
    arms: list[ArmCounts] = Field(description="The first arm is the control.")


class ExperimentsCounts(BaseModel):
    experiments: list[ExperimentCounts] = Field(default_factory=list)
