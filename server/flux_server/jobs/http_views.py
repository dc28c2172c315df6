"""The HTTP shapes of async jobs: the ``Prefer: respond-async`` header, the ``202``
body of a submission (:func:`submit_json`), the body of ``GET /jobs/{id}``
(:func:`job_json`) and the Server-Sent Events stream (:func:`sse_frames`). Pure, and
free of any web framework: the REST adapter returns these, and the gRPC adapter maps
the same fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from typing import Any

from flux_server.experiments.assignment import arm_json
from flux_server.jobs.lifecycle import images_json, iso, queued_json, urls
from flux_server.jobs.records import JobEvent, JobState, JobStatus

# --- HTTP helpers --------------------------------------------------------------------------


def wants_async(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header (RFC 7240) asks for ``respond-async``: preferences
    are comma separated, each may carry ``;`` parameters, names are case-insensitive."""
    if not prefer:
        return False
    for preference in prefer.split(","):
        name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if name == "respond-async":
            return True
    return False


KEEPALIVE_FRAME = ": keep-alive\n\n"


async def sse_frames(
    events: AsyncIterator[JobEvent], keepalive: float = 15.0
) -> AsyncIterator[str]:
    """Server-Sent Events frames of a job's events, with a comment frame whenever
    ``keepalive`` seconds pass without one, so proxies and load balancers with idle
    timeouts (often 60 s) keep a slow job's stream open. Ends after the terminal event."""
    iterator = aiter(events)
    pending: asyncio.Future[JobEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                yield KEEPALIVE_FRAME
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield event.to_sse()
    finally:
        if pending is not None and not pending.done():
            pending.cancel()


def submit_json(state: JobState, prefix: str = "") -> dict[str, Any]:
    """The body of the ``202`` answer to an async submission."""
    return {
        "id": state.id,
        "status": state.status.value,
        "created_at": iso(state.created_at),
        "urls": urls(state.id, prefix),
        "experiment": arm_json(state.experiment),
    }


def job_json(
    state: JobState, image_data: Sequence[bytes] | None = None, prefix: str = ""
) -> dict[str, Any]:
    """The body of ``GET /jobs/{id}``. Images carry ``data`` (base64) when their bytes
    are given, else a ``url`` to ``GET /jobs/{id}/images/{i}``. Fields that do not apply
    to the status (``queue_position``, ``progress``, ``error``, ``images``) are absent;
    ``experiment`` is null outside any experiment, as in a synchronous answer."""
    body: dict[str, Any] = {
        "id": state.id,
        "kind": state.kind,
        "status": state.status.value,
        "created_at": iso(state.created_at),
        "started_at": iso(state.started_at),
        "completed_at": iso(state.completed_at),
        "urls": urls(state.id, prefix),
        # the arm assigned at submission, as a synchronous answer's JSON names it
        "experiment": arm_json(state.experiment),
    }
    if state.status is JobStatus.QUEUED:
        body |= queued_json(state)
    if state.status is JobStatus.RUNNING and state.progress is not None:
        body["progress"] = asdict(state.progress)
    if state.status is JobStatus.FAILED and state.error is not None:
        body["error"] = asdict(state.error)
    if state.status is JobStatus.SUCCEEDED:
        body["images"] = images_json(state, image_data, prefix)
    timings: dict[str, float] = {}
    if state.started_at is not None:
        timings["queue_seconds"] = round(state.started_at - state.created_at, 3)
        if state.completed_at is not None:
            timings["run_seconds"] = round(state.completed_at - state.started_at, 3)
    if timings:
        body["metrics"] = timings
    return body
