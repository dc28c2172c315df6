"""The server's errors, free of any web framework. Each names its wire reason (``code``);
the HTTP status and gRPC code of a reason come from the one table of the wire contract,
:data:`flux_contract.wire.REASONS`, which the REST and gRPC adapters and the SDK share."""

from __future__ import annotations

import math
from typing import TypeAlias

from flux_contract.wire import REASONS, WireError, WireStatus, error_body


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
        return error_body(self.to_wire())

    def to_wire(self, request_id: str | None = None) -> WireError:
        return WireError(
            self.code,
            self.message,
            self.field,
            getattr(self, "retry_after", None),
            request_id,
        )


class InvalidRequest(ServeError):
    """A request that cannot be served as sent: a value out of range, an unknown preset."""

    code = "invalid_argument"


class UnknownName(InvalidRequest):
    """A request naming something the server does not have (a style preset, an adapter);
    the message lists what it has."""

    code = "unknown_name"


class RefusedTarget(InvalidRequest):
    """A URL the server will not send to (a webhook to a private address)."""

    code = "refused_target"


class NotFound(ServeError):
    """No such thing (an unknown or expired job id); the message says how long
    things are kept."""

    code = "unknown_id"


class MalformedRequest(ServeError):
    """A body that is not a request at all: bad JSON, too large."""

    code = "malformed_request"


class UnsupportedMediaType(MalformedRequest):
    """A body of a media type the endpoint does not read; the message names the one
    it does."""

    code = "unsupported_media_type"


class PayloadTooLarge(MalformedRequest):
    """A body over ``--max-body-bytes``."""

    code = "payload_too_large"


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


Status: TypeAlias = WireStatus
"""The HTTP status (``http``) and gRPC code name (``grpc``) of an error."""


def status_of(error: ServeError) -> Status:
    """The HTTP and gRPC status of an error, from the wire table by its ``code``."""
    return REASONS.get(error.code, REASONS["internal"])
