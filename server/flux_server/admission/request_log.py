"""The server's request log: one line per request served, synchronous or an async job,
with what an analyst groups by (preset, experiment arm, size, steps, release) and how
long it took. :mod:`flux_server.logs` writes it as an ECS document (``event.action``
``generate`` or ``edit``, ``fluxserve.latency_ms``, ...)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from flux_server.admission.audit_lines import Trail
    from flux_server.requests.results import GenerationResult
    from flux_server.scheduling.batch_items import BatchInfo

log = logging.getLogger("flux_server.service")

Action = Literal["generate", "edit"]
_MESSAGES = {"generate": "generated", "edit": "edited"}


def action_of(endpoint: str) -> Action:
    """What a request asked for, by the entry point it came through (an async job keeps
    the endpoint of its submission: ``rest:/edit``, ``grpc:Edit`` for edits)."""
    return "edit" if "edit" in endpoint.lower() else "generate"


def log_served(
    trail: Trail,
    result: GenerationResult,
    info: BatchInfo | None,
    action: Action | None = None,
    job: bool = False,
) -> None:
    """Log one served request (``info`` None: answered from the cache; ``job``: an async
    job's result, stored rather than sent)."""
    action = action or action_of(trail.ctx.endpoint)
    resolved = trail.job
    arm = trail.experiment
    log.info(
        f"job {_MESSAGES[action]}" if job else _MESSAGES[action],
        extra={
            "request_id": trail.ctx.request_id,
            "endpoint": trail.ctx.endpoint,
            "user": trail.user,
            "action": action,
            "outcome": "success",
            "preset": resolved.style_preset if resolved is not None else None,
            "experiment": arm.experiment if arm is not None else None,
            "arm": arm.arm if arm is not None else None,
            "size": [resolved.width, resolved.height] if resolved is not None else None,
            "steps": resolved.steps if resolved is not None else None,
            "images": len(result.images),
            "batch_size": result.batch_size,
            "cache_hit": result.cache_hit,
            "queue_ms": round(result.queue_ms, 1),
            "total_ms": round(result.total_ms, 1),
        },
    )
