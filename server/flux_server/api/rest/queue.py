"""``GET /queue``: what waits, for how long, and who works on it. With ``--queue`` it
reads the fleet's streams (every front answers the same); without, the process's own
batcher, in the same shape, so a dashboard or script needs not know how it is deployed."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from flux_server.api.rest.openapi import ERROR_SCHEMA
from flux_server.service.core import GenerationService


class ByPriority(BaseModel):
    high: int = Field(description="Waiting in the priority lane (X-Priority: high).")
    normal: int = Field(description="Waiting in the normal lane.")


class QueueStatus(BaseModel):
    source: Literal["fleet", "local"] = Field(
        description="fleet: the shared queue (--queue), read from its Redis streams; "
        "local: this process's own batcher."
    )
    waiting: ByPriority = Field(description="Requests and jobs waiting, not yet running.")
    total: int = Field(description="high + normal.")
    tracks: dict[str, ByPriority] = Field(
        description="The same counts by release track (stable, canary, an experiment's)."
    )
    oldest_wait_s: float | None = Field(
        description="How long the oldest waiting entry has waited; null when none waits."
    )
    workers_alive: int = Field(
        description="Workers whose heartbeat is live (local: 1 once the model is loaded)."
    )
    workers: dict[str, int] = Field(description="Live workers by release track.")


def queue_routes(service: GenerationService) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/v1/queue",
        summary="The queue: waiting by priority and release track, oldest wait, workers",
        response_model=QueueStatus,
        responses={
            503: {
                "description": "The fleet's queue (Redis) is unreachable; see Retry-After.",
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            }
        },
    )
    @router.get("/queue", summary="The queue (same as /v1/queue)", response_model=QueueStatus)
    async def queue() -> dict[str, Any]:
        return await service.queue_status()

    return router
