"""Async jobs: the state machine of one job and the events it emits (pure).

A job is ``queued`` → ``running`` → exactly one of ``succeeded``, ``failed`` or
``canceled`` (a queued job may also go straight to ``failed`` or ``canceled``). Every
transition is a function ``(state, ...) -> (state, event)``: nothing here does I/O or
reads a clock, so the store, the webhooks and the SSE stream all see one sequence of
events numbered by ``seq``, and a replica that reads the record from Redis rebuilds
the same view.

The record and the events themselves are :mod:`flux_server.jobs.records`'s (imported
here too, where the transitions' callers find them); each event's JSON
(:meth:`JobEvent.to_json`) is part of the wire contract; the bodies of the HTTP answers
are in ``flux_server.jobs.http_views``.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any

from flux_contract.jobs import TERMINAL
from flux_server.experiments.assignment import ServedArm
from flux_server.jobs.records import (
    EventKind,
    ImageInfo,
    JobError,
    JobEvent,
    JobState,
    JobStateError,
    JobStatus,
    Progress,
)

__all__ = [
    "DEFAULT_WEBHOOK_FILTER",
    "TERMINAL",
    "WEBHOOK_FILTERS",
    "EventKind",
    "ImageInfo",
    "JobError",
    "JobEvent",
    "JobState",
    "JobStateError",
    "JobStatus",
    "Progress",
    "Watch",
    "cancel",
    "fail",
    "image_url",
    "images_json",
    "iso",
    "new_job_id",
    "parse_events_filter",
    "preview",
    "queued_json",
    "reposition",
    "snapshot",
    "start",
    "step",
    "submit",
    "succeed",
    "urls",
    "webhook_filter_of",
]


WEBHOOK_FILTERS = frozenset({"start", "progress", "completed"})
DEFAULT_WEBHOOK_FILTER = frozenset({"completed"})


def webhook_filter_of(kind: EventKind) -> str | None:
    """The ``webhook_events_filter`` value that subscribes to events of this kind
    (``queued`` is never sent: the submitter has just been told)."""
    if kind is EventKind.RUNNING:
        return "start"
    if kind is EventKind.PROGRESS:
        return "progress"
    if kind.terminal:
        return "completed"
    return None


def parse_events_filter(values: Sequence[str] | None) -> frozenset[str]:
    """``webhook_events_filter`` from a request; ``ValueError`` naming the bad value."""
    if not values:
        return DEFAULT_WEBHOOK_FILTER
    unknown = sorted(set(values) - WEBHOOK_FILTERS)
    if unknown:
        raise ValueError(
            f"unknown webhook event {unknown[0]!r}; use any of {', '.join(sorted(WEBHOOK_FILTERS))}"
        )
    return frozenset(values)


def new_job_id() -> str:
    """A random id, safe in URLs and Redis keys (128 bits)."""
    return "job_" + secrets.token_urlsafe(16).replace("-", "a").replace("_", "b")


# --- transitions -------------------------------------------------------------------------


def _event(state: JobState, kind: EventKind, data: Mapping[str, Any]) -> tuple[JobState, JobEvent]:
    state = replace(state, seq=state.seq + 1)
    return state, JobEvent(state.id, state.seq, kind, data)


def _require(state: JobState, *allowed: JobStatus, action: str) -> None:
    if state.status not in allowed:
        raise JobStateError(f"job {state.id} is {state.status.value}; cannot {action}")


def submit(
    job_id: str,
    *,
    now: float,
    position: int,
    owner: str = "",
    kind: str = "generate",
    request_id: str | None = None,
    webhook: str | None = None,
    webhook_events_filter: frozenset[str] = DEFAULT_WEBHOOK_FILTER,
    experiment: ServedArm | None = None,
    user: str | None = None,
) -> tuple[JobState, JobEvent]:
    """A new queued job at ``position`` and its ``queued`` event."""
    state = JobState(
        id=job_id,
        status=JobStatus.QUEUED,
        created_at=now,
        kind=kind,
        queue_position=position,
        owner=owner,
        request_id=request_id,
        webhook=webhook,
        webhook_events_filter=webhook_events_filter,
        experiment=experiment,
        user=user,
    )
    return _event(state, EventKind.QUEUED, queued_json(state))


def reposition(
    state: JobState, position: int, eta: float | None = None, warming_up: bool = False
) -> tuple[JobState, JobEvent | None]:
    """The queue moved: a new ``queued`` event when the place, the estimate or the
    workers' presence changed, else none."""
    _require(state, JobStatus.QUEUED, action="move in the queue")
    if (position, eta, warming_up) == (state.queue_position, state.eta_seconds, state.warming_up):
        return state, None
    state = replace(state, queue_position=position, eta_seconds=eta, warming_up=warming_up)
    return _event(state, EventKind.QUEUED, queued_json(state))


def queued_json(state: JobState) -> dict[str, Any]:
    """A queued job's place: ``queue_position`` (0-based), ``position`` (1 is next),
    ``eta_seconds`` when the fleet has measured its rate, ``warming_up`` when no worker
    is alive to take it."""
    data: dict[str, Any] = {"queue_position": state.queue_position}
    if state.queue_position is not None:
        data["position"] = state.queue_position + 1
    if state.eta_seconds is not None:
        data["eta_seconds"] = state.eta_seconds
    if state.warming_up:
        data["warming_up"] = True
    return data


def start(state: JobState, *, now: float, total: int) -> tuple[JobState, JobEvent]:
    _require(state, JobStatus.QUEUED, action="start")
    state = replace(
        state,
        status=JobStatus.RUNNING,
        started_at=now,
        queue_position=None,
        progress=Progress(0, total),
    )
    return _event(state, EventKind.RUNNING, {"started_at": iso(now), "total": total})


def step(state: JobState, done: int, total: int) -> tuple[JobState, JobEvent]:
    """Denoising step ``done`` of ``total`` finished."""
    _require(state, JobStatus.RUNNING, action="report progress")
    progress = Progress(done, total)
    return _event(replace(state, progress=progress), EventKind.PROGRESS, asdict(progress))


def preview(state: JobState, image: Mapping[str, Any]) -> tuple[JobState, JobEvent]:
    """A live preview of a running job (``previews: true``): an event only, never kept
    in the state (the store keeps the last state, not a film)."""
    _require(state, JobStatus.RUNNING, action="report a preview")
    return _event(state, EventKind.PREVIEW, image)


def succeed(
    state: JobState, *, now: float, images: Sequence[ImageInfo]
) -> tuple[JobState, JobEvent]:
    _require(state, JobStatus.RUNNING, action="succeed")
    state = replace(state, status=JobStatus.SUCCEEDED, completed_at=now, images=tuple(images))
    return _event(state, EventKind.SUCCEEDED, _result(state))


def fail(state: JobState, *, now: float, error: JobError) -> tuple[JobState, JobEvent]:
    """A queued or running job failed (or was left unfinished at shutdown)."""
    _require(state, JobStatus.QUEUED, JobStatus.RUNNING, action="fail")
    state = replace(
        state, status=JobStatus.FAILED, completed_at=now, queue_position=None, error=error
    )
    return _event(state, EventKind.FAILED, {"error": asdict(error)})


def cancel(state: JobState, *, now: float) -> tuple[JobState, JobEvent | None]:
    """Cancel a queued or running job. A finished job stays as it is (no event): a
    cancel racing the last step is not an error, and the caller reads the outcome."""
    if state.status.terminal:
        return state, None
    state = replace(state, status=JobStatus.CANCELED, completed_at=now, queue_position=None)
    return _event(state, EventKind.CANCELED, {"completed_at": iso(now)})


def snapshot(state: JobState) -> list[JobEvent]:
    """What a watcher that connects now is told first: the current state as the events
    that led to it (``queued`` with its position; ``running`` and the last ``progress``;
    or the terminal event). They carry the state's ``seq``, so live events that follow
    with a higher ``seq`` are new."""
    s = state.seq
    if state.status is JobStatus.QUEUED:
        return [JobEvent(state.id, s, EventKind.QUEUED, queued_json(state))]
    if state.status is JobStatus.RUNNING:
        progress = state.progress or Progress(0, 0)
        events = [
            JobEvent(
                state.id,
                s,
                EventKind.RUNNING,
                {"started_at": iso(state.started_at), "total": progress.total},
            )
        ]
        if progress.step:
            events.append(JobEvent(state.id, s, EventKind.PROGRESS, asdict(progress)))
        return events
    if state.status is JobStatus.SUCCEEDED:
        return [JobEvent(state.id, s, EventKind.SUCCEEDED, _result(state))]
    if state.status is JobStatus.FAILED:
        error = asdict(state.error) if state.error else None
        return [JobEvent(state.id, s, EventKind.FAILED, {"error": error})]
    return [JobEvent(state.id, s, EventKind.CANCELED, {"completed_at": iso(state.completed_at)})]


@dataclass
class Watch:
    """Where one watcher of a job is (pure: the stores feed it what they read): the
    ``seq`` of the last event it was told, and whether that ended the job. An event at or
    below it is old news (it came in the snapshot, or twice)."""

    last: int = -1
    done: bool = False

    def start(self, state: JobState) -> list[JobEvent]:
        """The watcher's first events: :func:`snapshot` of ``state``."""
        self.last, self.done = state.seq, state.status.terminal
        return snapshot(state)

    def event(self, event: JobEvent) -> list[JobEvent]:
        """A live event: ``[event]`` when it is new, else nothing."""
        if self.done or event.seq <= self.last:
            return []
        self.last, self.done = event.seq, event.kind.terminal
        return [event]

    def reread(self, state: JobState) -> list[JobEvent]:
        """The record read again (events may have been lost): its snapshot when it is
        newer than what the watcher was told, else nothing."""
        if state.seq > self.last:
            return self.start(state)
        self.done = state.status.terminal
        return []


# --- JSON ------------------------------------------------------------------------------------


def iso(timestamp: float | None) -> str | None:
    """RFC 3339 UTC with milliseconds, or None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def urls(job_id: str, prefix: str = "") -> dict[str, str]:
    base = f"{prefix}/jobs/{job_id}"
    return {"get": base, "cancel": f"{base}/cancel", "events": f"{base}/events"}


def image_url(job_id: str, index: int, prefix: str = "") -> str:
    return f"{prefix}/jobs/{job_id}/images/{index}"


def images_json(
    state: JobState, data: Sequence[bytes] | None, prefix: str = ""
) -> list[dict[str, Any]]:
    images = []
    for index, info in enumerate(state.images):
        entry: dict[str, Any] = {
            "seed": info.seed,
            "format": info.format,
            "width": info.width,
            "height": info.height,
        }
        if data is not None:
            entry["data"] = base64.b64encode(data[index]).decode("ascii")
        else:
            entry["url"] = image_url(state.id, index, prefix)
        images.append(entry)
    return images


def _result(state: JobState) -> dict[str, Any]:
    return {"completed_at": iso(state.completed_at), "images": images_json(state, None)}
