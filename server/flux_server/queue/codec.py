"""Work and results on the wire: what an entry carries and what a worker stores."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from flux_server.errors import (
    Cancelled,
    ContentRejected,
    DeadlineExceeded,
    InternalError,
    InvalidRequest,
    MalformedRequest,
    NotEnabled,
    PayloadTooLarge,
    PermissionDenied,
    QueueFull,
    ServeError,
    Unavailable,
    UnknownName,
)
from flux_server.requests.params import ResolvedRequest
from flux_server.requests.results import GeneratedImage
from flux_server.scheduling.batch_items import BatchInfo
from flux_server.scheduling.work import Made


def entry(
    job: ResolvedRequest | None,
    request_id: str,
    key_id: str,
    *,
    priority: bool,
    timeout: float,
    result_ttl: float,
    previews: bool = False,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An entry: the resolved request (seed included, so a redelivered entry makes the
    same images), who asked, and until when it is worth running. ``extra``: an edit's
    or a question's own fields (its ``kind`` and upload, :mod:`flux_server.queue.uploads`).
    ``previews``, ``progress``: whether its front relays those events (a plain sync
    request has no one to tell its steps to, and each event costs the call time)."""
    now = time.time()
    return {
        "kind": "generate",
        "job": {} if job is None else job.model_dump(mode="json"),
        "request_id": request_id,
        "key_id": key_id,
        "priority": priority,
        "enqueued": now,
        "deadline": now + timeout,
        "result_ttl": result_ttl,
        "previews": previews,
        "progress": progress,
        **(extra or {}),
    }


def job_of(payload: Mapping[str, Any]) -> ResolvedRequest:
    return ResolvedRequest.model_validate(payload["job"])


def images_outcome(
    images: Sequence[GeneratedImage], info: BatchInfo, worker: str
) -> dict[str, Any]:
    return {
        "images": [i.as_json("data") for i in images],
        "batch_size": info.size,
        "units": info.units,
        "queue_s": info.queue_s,
        "run_s": info.run_s,
        "worker": worker,
    }


def outcome_of(made: Made, info: BatchInfo, worker: str, kind: str) -> dict[str, Any]:
    """What a worker stores for one request: a question's answer, else its images."""
    if kind == "vqa":
        return answer_outcome(made.answer, info, worker)
    return images_outcome(made.images, info, worker)


def failed(error: ServeError, worker: str) -> dict[str, Any]:
    if isinstance(error, ContentRejected):
        return error_outcome(
            error.code, error.message, worker, error.field,
            refusal=error.refusal, detail=error.detail,
        )  # fmt: skip
    return error_outcome(error.code, error.message, worker, error.field)


def answer_outcome(answer: str, info: BatchInfo, worker: str) -> dict[str, Any]:
    return {"answer": answer, "batch_size": info.size, "units": info.units,
            "queue_s": info.queue_s, "run_s": info.run_s, "worker": worker}  # fmt: skip


def error_outcome(
    code: str,
    message: str,
    worker: str,
    field: str | None = None,
    *,
    refusal: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """A request's error as the worker met it: the front raises the same error (code,
    message, field), so the caller's answer is the one a process alone gives; a content
    refusal carries the policy's reason and what matched, for the front's audit line."""
    error: dict[str, Any] = {"code": code, "message": message, "field": field}
    if refusal is not None:
        error |= {"refusal": refusal, "detail": detail}
    return {"error": error, "worker": worker}


def error_of(error: Mapping[str, Any]) -> ServeError:
    """The error a stored outcome names, as the class with that code."""
    code, message = str(error.get("code")), str(error.get("message"))
    field = error.get("field")
    if code == QueueFull.code:
        return QueueFull(message)
    if code == ContentRejected.code:  # the prompt's policy, or the worker's image model
        return ContentRejected(
            message, field, refusal=error.get("refusal"), detail=error.get("detail")
        )
    for cls in _ERRORS:
        if cls.code == code:
            return cls(message, field)
    return InternalError(message, field)


_ERRORS: tuple[type[ServeError], ...] = (
    InvalidRequest, UnknownName, MalformedRequest, PayloadTooLarge, ContentRejected,
    NotEnabled, DeadlineExceeded, Unavailable, PermissionDenied, Cancelled,
)  # fmt: skip


def info_of(outcome: Mapping[str, Any]) -> BatchInfo:
    return BatchInfo(
        size=int(outcome["batch_size"]),
        units=int(outcome["units"]),
        queue_s=float(outcome["queue_s"]),
        run_s=float(outcome["run_s"]),
    )


def images_of(outcome: Mapping[str, Any]) -> tuple[list[GeneratedImage], BatchInfo]:
    images = [GeneratedImage.from_json(i, "data") for i in outcome["images"]]
    return images, info_of(outcome)


def json_loads(data: str | bytes) -> dict[str, Any]:
    import json

    loaded = json.loads(data)
    return loaded if isinstance(loaded, dict) else {}
