"""One audit line from what a request carried: who asked, what, the decision and its
reason, the arm of an experiment. Pure: the admission path writes what this builds."""

from __future__ import annotations

from typing import Any, Literal

from flux_server.admission.audit import AuditRecord
from flux_server.experiments.assignment import Assignment
from flux_server.requests.context import CallContext
from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GenerationResult


def audit_record(
    ctx: CallContext,
    user: str | None,
    job: ResolvedRequest | None,
    decision: Literal["accepted", "rejected", "submitted", "canceled"],
    reason: str | None,
    status: int | None,
    result: GenerationResult | None,
    detail: str | None = None,
    prompt: str | None = None,
    params: dict[str, Any] | None = None,
    experiment: Assignment | None = None,
    latency_ms: float | None = None,
    cache_hit: bool = False,
) -> AuditRecord:
    """One audit line. ``prompt`` and ``params`` describe a request without a generation
    job (a question); ``experiment`` is the arm that served it."""
    params = {**(params or {}), "priority": ctx.priority}
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
    return AuditRecord(
        request_id=ctx.request_id,
        user=user,
        endpoint=ctx.endpoint,
        prompt=job.prompt if job is not None else prompt,
        negative_prompt=job.negative_prompt if job is not None else None,
        params=params,
        decision=decision,
        reason=reason or ("priority_denied" if ctx.priority_denied else None),
        detail=detail,
        status=status,
        latency_ms=result.total_ms if result is not None else latency_ms,
        cache_hit=result.cache_hit if result is not None else cache_hit,
        experiment=(
            {"name": experiment.experiment, "arm": experiment.arm, "subject": experiment.subject}
            if experiment is not None
            else None
        ),
    )
