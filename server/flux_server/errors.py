"""The server's errors, free of any framework, and the one table that maps each to an
HTTP status and a gRPC status code; the REST and gRPC adapters both use it."""

from __future__ import annotations

import math
from dataclasses import dataclass


class ServeError(Exception):
    """An error a caller sees: a stable ``code``, a human message, and the request
    field at fault when there is one."""

    code = "internal"
    audited = False
    """Set once the audit log has a line for the request this error ended."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class InvalidRequest(ServeError):
    """A request that cannot be served as sent: a value out of range, an unknown preset."""

    code = "invalid_argument"


class UnknownName(InvalidRequest):
    """A request naming something the server does not have (a style preset, an adapter);
    the message lists what it has."""


class RefusedTarget(InvalidRequest):
    """A URL the server will not send to (a webhook to a private address)."""


class NotFound(ServeError):
    """No such thing (an unknown or expired job id); the message says how long
    things are kept."""

    code = "not_found"


class MalformedRequest(ServeError):
    """A body that is not a request at all: bad JSON, too large."""

    code = "malformed_request"


class Unauthenticated(ServeError):
    code = "unauthenticated"


class PermissionDenied(ServeError):
    code = "permission_denied"


class ContentRejected(ServeError):
    """The safety filter refused the prompt."""

    code = "content_rejected"


class QueueFull(ServeError):
    """Backpressure: the queue is at ``--max-queue``; retry after ``retry_after`` seconds."""

    code = "resource_exhausted"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class Unavailable(ServeError):
    """Not ready yet, or draining: safe to retry elsewhere."""

    code = "unavailable"


class DeadlineExceeded(ServeError):
    code = "deadline_exceeded"


class Cancelled(ServeError):
    code = "cancelled"


class NotEnabled(ServeError):
    """A feature the server was not started with (editing, VQA)."""

    code = "unimplemented"


class InternalError(ServeError):
    code = "internal"


@dataclass(frozen=True)
class Status:
    http: int
    grpc: str  # a grpc.StatusCode member name; kept a string so this module imports no grpc


STATUS: dict[type[ServeError], Status] = {
    InvalidRequest: Status(422, "INVALID_ARGUMENT"),
    UnknownName: Status(400, "INVALID_ARGUMENT"),
    RefusedTarget: Status(400, "INVALID_ARGUMENT"),
    NotFound: Status(404, "NOT_FOUND"),
    MalformedRequest: Status(400, "INVALID_ARGUMENT"),
    ContentRejected: Status(400, "INVALID_ARGUMENT"),
    Unauthenticated: Status(401, "UNAUTHENTICATED"),
    PermissionDenied: Status(403, "PERMISSION_DENIED"),
    QueueFull: Status(429, "RESOURCE_EXHAUSTED"),
    Unavailable: Status(503, "UNAVAILABLE"),
    DeadlineExceeded: Status(504, "DEADLINE_EXCEEDED"),
    Cancelled: Status(499, "CANCELLED"),
    NotEnabled: Status(501, "UNIMPLEMENTED"),
    InternalError: Status(500, "INTERNAL"),
    ServeError: Status(500, "INTERNAL"),
}


def status_of(error: ServeError) -> Status:
    """The HTTP and gRPC status of an error (the nearest class in the table)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return STATUS[ServeError]
