"""Async jobs over REST: ``Prefer: respond-async`` on ``POST /generate`` and ``/edit``
(the ``202`` answer, built here), and the ``/jobs/{id}`` routes: the job, its cancel,
its Server-Sent Events and its images. The bodies are ``flux_server.jobs.http_views``'s."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from flux_contract.wire import EXPERIMENT_HEADER
from flux_server.api.rest.convert import MEDIA_TYPES, context_from
from flux_server.api.rest.jobs_openapi import JOB_ANSWERS, job_answers
from flux_server.errors import InvalidRequest, NotFound
from flux_server.jobs import http_views
from flux_server.jobs.records import JobState
from flux_server.service.core import GenerationService

ASYNC_FIELDS = ("webhook", "webhook_events_filter")
"""Body fields of an async submission besides the generation's parameters."""

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def wants_async(request: Request) -> bool:
    return http_views.wants_async(request.headers.get("prefer"))


def pop_async_fields(
    body: dict[str, Any], asynchronous: bool
) -> tuple[str | None, Sequence[str] | None]:
    """``webhook`` and ``webhook_events_filter`` taken out of a body (JSON or form
    fields; a form's filter may be a JSON list or comma separated). Without
    ``Prefer: respond-async`` they are refused, naming the field, never ignored."""
    webhook = body.pop("webhook", None)
    raw_filter = body.pop("webhook_events_filter", None)
    if not asynchronous:
        for name, value in (("webhook", webhook), ("webhook_events_filter", raw_filter)):
            if value is not None:
                raise InvalidRequest(
                    f"{name} applies to async jobs: send the header 'Prefer: respond-async'",
                    name,
                )
        return None, None
    if webhook is not None and not isinstance(webhook, str):
        raise InvalidRequest("webhook must be a URL string", "webhook")
    events: Sequence[str] | None = None
    if isinstance(raw_filter, str):
        try:
            parsed = json.loads(raw_filter)
        except json.JSONDecodeError:
            parsed = [part.strip() for part in raw_filter.split(",") if part.strip()]
        raw_filter = parsed
    if raw_filter is not None:
        if not isinstance(raw_filter, list) or not all(isinstance(v, str) for v in raw_filter):
            raise InvalidRequest(
                "webhook_events_filter must be a list of start, progress, completed",
                "webhook_events_filter",
            )
        events = raw_filter
    return webhook, events


def accepted_response(state: JobState, request_id: str) -> JSONResponse:
    """``202 Accepted`` with the job, where to find it, and that the preference applied;
    like a synchronous answer, ``X-Fluxserve-Experiment`` names the arm it was assigned."""
    body = http_views.submit_json(state)
    headers = {
        "Location": body["urls"]["get"],
        "Preference-Applied": "respond-async",
        "X-Request-Id": request_id,
    }
    if state.experiment is not None:
        headers[EXPERIMENT_HEADER] = state.experiment.header_value
    return JSONResponse(body, status_code=202, headers=headers)


def job_routes(service: GenerationService) -> APIRouter:
    router = APIRouter()

    def reader(request: Request, endpoint: str) -> Any:
        return service.job_reader(context_from(request, f"rest:/jobs/{{id}}{endpoint}"))

    @router.get(
        "/jobs/{job_id}",
        summary="An async job: status, queue position, progress, error or images",
        responses=JOB_ANSWERS,
    )
    async def get_job(job_id: str, request: Request) -> JSONResponse:
        state = await reader(request, "").get(job_id)
        return JSONResponse(http_views.job_json(state))

    @router.post(
        "/jobs/{job_id}/cancel",
        summary="Cancel a job: a queued one leaves the queue, a running one stops at the "
        "next denoising step; a finished one stays as it is",
        responses=JOB_ANSWERS,
    )
    async def cancel_job(job_id: str, request: Request) -> JSONResponse:
        state = await reader(request, "/cancel").cancel(job_id)
        return JSONResponse(http_views.job_json(state))

    @router.get(
        "/jobs/{job_id}/events",
        summary="Server-Sent Events of a job: the current state first, then queued, "
        "running, one progress per step (and a preview every --preview-every steps with "
        "previews: true), and exactly one terminal event",
        responses=job_answers({"text/event-stream": {"schema": {"type": "string"}}}),
    )
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        jobs = reader(request, "/events")
        state = await jobs.get(job_id)  # 404 before the stream starts, not inside it
        frames = http_views.sse_frames(jobs.watch(state))
        return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)

    @router.get(
        "/jobs/{job_id}/images/{index}",
        summary="The bytes of image `index` of a succeeded job",
        responses=job_answers({"image/png": {}, "image/jpeg": {}, "image/webp": {}}),
    )
    async def job_image(job_id: str, index: int, request: Request) -> Response:
        jobs = reader(request, "/images/{i}")
        state = await jobs.get(job_id)
        if not 0 <= index < len(state.images):
            raise NotFound(
                f"job {job_id} has {len(state.images)} image(s); no image {index}", "index"
            )
        data = await jobs.image(state, index)
        media = MEDIA_TYPES.get(state.images[index].format, "application/octet-stream")
        return Response(data, media_type=media)

    return router


__all__ = ["accepted_response", "job_routes", "pop_async_fields", "wants_async"]
