"""The record of one async job and the events it emits: what the store keeps
(:meth:`JobState.to_record`), what Redis pub/sub carries (:meth:`JobEvent.to_message`)
and what a watcher reads (:meth:`JobEvent.to_json`, :meth:`JobEvent.to_sse`, part of the
wire contract). Plain values: the transitions between them are
:mod:`flux_server.jobs.lifecycle`'s."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from flux_contract.jobs import JobStatus
from flux_server.experiments.assignment import ServedArm


class EventKind(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PROGRESS = "progress"
    PREVIEW = "preview"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELED)


class JobStateError(RuntimeError):
    """A transition the state machine does not allow (a bug in the caller, never a
    caller's request: a cancel of a finished job is not an error, see :func:`cancel`)."""


@dataclass(frozen=True)
class Progress:
    step: int
    total: int


@dataclass(frozen=True)
class JobError:
    """Why a job failed: the same ``code``/``message``/``field`` a synchronous request
    would have answered with."""

    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """One result image, without its bytes (the store keeps those apart)."""

    seed: int
    format: str
    width: int
    height: int
    size: int


@dataclass(frozen=True)
class JobState:
    """Everything known about a job, except its images' bytes."""

    id: str
    status: JobStatus
    created_at: float
    """Wall-clock seconds since the epoch (UTC)."""
    kind: str = "generate"
    """``generate`` or ``edit``."""
    seq: int = 0
    """Number of the last event this state emitted; increases by one per event."""
    started_at: float | None = None
    completed_at: float | None = None
    queue_position: int | None = None
    """0-based place in the queue while queued (``position`` in JSON is this + 1)."""
    eta_seconds: float | None = None
    """While queued: seconds until done at the fleet's measured rate (None: unmeasured)."""
    warming_up: bool = False
    """While queued on the fleet's queue: no worker is alive to take it yet."""
    progress: Progress | None = None
    error: JobError | None = None
    images: tuple[ImageInfo, ...] = ()
    owner: str = ""
    """The replica running the job: where a cancel must be delivered."""
    request_id: str | None = None
    webhook: str | None = None
    webhook_events_filter: frozenset[str] = field(default_factory=lambda: frozenset({"completed"}))
    experiment: ServedArm | None = None
    """The experiment arm the job was assigned at submission; None outside any."""
    user: str | None = None
    """The API key's user that submitted the job: only that user reads, watches or
    cancels it. None when the server takes no keys (then anyone with the id may)."""

    def to_record(self) -> str:
        """The JSON stored for the job (memory or Redis), read back by :meth:`from_record`."""
        data = asdict(self)
        data["status"] = self.status.value
        data["webhook_events_filter"] = sorted(self.webhook_events_filter)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_record(cls, record: str | bytes) -> JobState:
        data = json.loads(record)
        return cls(
            **{
                **data,
                "status": JobStatus(data["status"]),
                "progress": Progress(**data["progress"]) if data["progress"] else None,
                "error": JobError(**data["error"]) if data["error"] else None,
                "images": tuple(ImageInfo(**image) for image in data["images"]),
                "webhook_events_filter": frozenset(data["webhook_events_filter"]),
                # .get: a record written before jobs named their arm has none
                "experiment": ServedArm(**arm) if (arm := data.get("experiment")) else None,
            }
        )

    @property
    def result_bytes(self) -> int:
        return sum(image.size for image in self.images)


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job, as the SSE stream, ``WatchJob`` and the
    webhooks carry it."""

    job_id: str
    seq: int
    kind: EventKind
    data: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.job_id, "seq": self.seq, "event": self.kind.value, **self.data}

    def to_message(self) -> str:
        """The event as one line of JSON (Redis pub/sub), read back by :meth:`from_message`."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_message(cls, message: str | bytes) -> JobEvent:
        data = json.loads(message)
        job_id, seq, kind = data.pop("id"), data.pop("seq"), EventKind(data.pop("event"))
        return cls(job_id=job_id, seq=seq, kind=kind, data=data)

    def to_sse(self) -> str:
        """The event as a Server-Sent Events frame (``id`` lets a client resume)."""
        payload = json.dumps(self.to_json(), separators=(",", ":"))
        return f"id: {self.seq}\nevent: {self.kind.value}\ndata: {payload}\n\n"
