"""Async jobs as the SDK sees them, independent of the transport: the state of a job
(``GET /jobs/{id}``), its events, and a parser of the Server-Sent Events stream
(``GET /jobs/{id}/events``). No I/O here; the transports feed it what they read.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flux_client.types import GenerationParams
from flux_contract.experiments import ExperimentArm
from flux_contract.jobs import JobStatus

TERMINAL_EVENTS = frozenset({"succeeded", "failed", "canceled"})


@dataclass(frozen=True)
class JobImage:
    """One result image: its seed and either its bytes or where to fetch them."""

    seed: int
    format: str
    width: int
    height: int
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class JobProgress:
    step: int
    total: int


@dataclass(frozen=True)
class JobFailure:
    code: str
    message: str
    field: str | None = None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@dataclass(frozen=True)
class JobInfo:
    """A job's state as the server reported it."""

    id: str
    status: JobStatus
    created_at: datetime | None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    queue_position: int | None = None
    """0-based place while queued."""
    progress: JobProgress | None = None
    error: JobFailure | None = None
    images: tuple[JobImage, ...] = ()
    experiment: ExperimentArm | None = None
    """The experiment arm the job was assigned at submission; None outside any."""
    position: int | None = None
    """While queued: 1 is next (on a fleet, counting other keys' turns and priority)."""
    eta_seconds: float | None = None
    """While queued: seconds until done at the fleet's measured rate; None unmeasured."""
    warming_up: bool = False
    """While queued on a fleet's queue that no worker serves yet."""

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> JobInfo:
        progress = body.get("progress")
        error = body.get("error")
        return cls(
            id=str(body["id"]),
            status=JobStatus(body["status"]),
            created_at=_time(body.get("created_at")),
            started_at=_time(body.get("started_at")),
            completed_at=_time(body.get("completed_at")),
            queue_position=body.get("queue_position"),
            position=body.get("position"),
            eta_seconds=body.get("eta_seconds"),
            warming_up=bool(body.get("warming_up")),
            progress=JobProgress(int(progress["step"]), int(progress["total"]))
            if progress
            else None,
            error=JobFailure(error["code"], error["message"], error.get("field"))
            if error
            else None,
            images=tuple(_image(image) for image in body.get("images") or ()),
            experiment=ExperimentArm.model_validate(arm)
            if (arm := body.get("experiment"))
            else None,
        )


def _image(item: Mapping[str, Any]) -> JobImage:
    data = item.get("data")
    return JobImage(
        seed=int(item["seed"]),
        format=str(item.get("format", "png")),
        width=int(item.get("width", 0)),
        height=int(item.get("height", 0)),
        data=base64.b64decode(data) if data else None,
        url=item.get("url"),
    )


@dataclass(frozen=True)
class JobEvent:
    """One event of a job: ``queued``, ``running``, ``progress`` or a terminal one."""

    job_id: str
    seq: int
    kind: str
    data: Mapping[str, Any]

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_EVENTS

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> JobEvent:
        rest = {k: v for k, v in body.items() if k not in ("id", "seq", "event")}
        return cls(str(body["id"]), int(body["seq"]), str(body["event"]), rest)


def parse_sse(lines: Iterable[str]) -> Iterator[JobEvent]:
    """Job events from the lines of an SSE stream (``text/event-stream``; line ends
    already stripped or not). Comments (keep-alives) are skipped; the stream's own
    ``event``/``id`` fields are taken from the JSON, which repeats them."""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield JobEvent.from_json(json.loads("\n".join(data)))
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield JobEvent.from_json(json.loads("\n".join(data)))


WEBHOOK_EVENTS = ("start", "progress", "completed")


@dataclass(frozen=True)
class JobSubmission:
    """A generation to run as an async job, and where to send its events."""

    params: GenerationParams
    webhook: str | None = None
    webhook_events_filter: tuple[str, ...] = ()
