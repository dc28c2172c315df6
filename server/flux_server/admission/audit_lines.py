"""One audit line from what a request carried: who asked, what, the decision and its
reason, the arm of an experiment. Pure: the admission path (:mod:`flux_server.admission.gate`)
keeps the :class:`Trail` and writes what this builds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from flux_server.admission.audit import AuditRecord
from flux_server.errors import ContentRejected, PermissionDenied, ServeError, Unauthenticated
from flux_server.experiments.assignment import Assignment
from flux_server.requests.context import CallContext
from flux_server.requests.params import ResolvedRequest

Decision = Literal["accepted", "rejected", "submitted", "canceled"]


@dataclass
class Trail:
    """What is known of one request so far, for its audit line whatever the outcome."""

    ctx: CallContext
    started: float = field(default_factory=time.perf_counter)
    user: str | None = None
    job: ResolvedRequest | None = None
    # A request without a generation job (a question): what its audit line records.
    prompt: str | None = None
    params: dict[str, Any] | None = None
    experiment: Assignment | None = None  # the arm serving it, once assigned
    admitted: bool = False  # its "accepted" line is written: an error is its outcome

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


def audit_record(
    trail: Trail,
    decision: Decision,
    reason: str | None = None,
    status: int | None = None,
    *,
    detail: str | None = None,
    latency_ms: float | None = None,
    cache_hit: bool = False,
) -> AuditRecord:
    """The audit line of ``trail``'s request: its job's parameters, or for a request
    without one (a question) the prompt and parameters it carried; ``experiment`` is the
    arm that served it."""
    ctx, job = trail.ctx, trail.job
    params = {**(trail.params or {}), "priority": ctx.priority}
    if job is not None:
        params = {
            "width": job.width,
            "height": job.height,
            "steps": job.steps,
            "guidance_scale": job.guidance_scale,
            "true_cfg_scale": job.true_cfg_scale,
            "seed": job.seed,
            "num_images": job.num_images,
            "style_preset": job.style_preset,
            "adapters": dict(job.adapters),
            **params,
        }
    arm = trail.experiment
    return AuditRecord(
        request_id=ctx.request_id,
        user=trail.user,
        endpoint=ctx.endpoint,
        prompt=job.prompt if job is not None else trail.prompt,
        negative_prompt=job.negative_prompt if job is not None else None,
        params=params,
        decision=decision,
        reason=reason or ("priority_denied" if ctx.priority_denied else None),
        detail=detail,
        status=status,
        latency_ms=latency_ms,
        cache_hit=cache_hit,
        experiment=(
            {"name": arm.experiment, "arm": arm.arm, "subject": arm.subject}
            if arm is not None
            else None
        ),
    )


def refusal_of(error: ServeError) -> tuple[str, str]:
    """The audit line's reason and detail for a request that ended in ``error``: the
    content policy's reason and what matched for a content refusal, else the error code
    (two have their own names) and its message."""
    if isinstance(error, ContentRejected) and error.refusal is not None:
        return error.refusal, error.detail or error.message
    reason = {Unauthenticated: "unauthenticated", PermissionDenied: "priority_denied"}.get(
        type(error), error.code
    )
    return reason, error.message
