"""The SDK's errors: one hierarchy for both transports, importing no framework.

Every error carries the server's ``message``, the request ``field`` it names (when the
server named one), the HTTP status and gRPC code it came from, and the ``request_id``
when the server sent one. ``ERROR_TABLE`` maps the server's HTTP statuses and gRPC code
names to the classes; the transports use it and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


class FluxError(Exception):
    """Base of every error the SDK raises."""

    retryable: bool = False
    """Whether the same request may succeed when sent again unchanged."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        http_status: int | None = None,
        grpc_code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (field: {self.field})" if self.field else ""
        status = self.grpc_code or (str(self.http_status) if self.http_status else None)
        return f"{status}: {self.message}{where}" if status else f"{self.message}{where}"


class InvalidArgumentError(FluxError, ValueError):
    """The request was rejected as malformed or out of limits (400/422, INVALID_ARGUMENT);
    ``field`` names the offending field."""


class AuthError(FluxError):
    """Base of authentication and authorization failures."""


class AuthenticationError(AuthError):
    """No API key, or one the server does not know (401, UNAUTHENTICATED)."""


class PermissionDeniedError(AuthError):
    """The key may not do this (403, PERMISSION_DENIED). A key without the priority
    permission is not refused: its request is served in the normal lane."""


class ContentRejectedError(InvalidArgumentError):
    """The server's safety filter refused the prompt (code ``content_rejected``)."""


class NotEnabledError(FluxError):
    """The server was not started with this feature (VQA without ``--vqa-model``, editing
    without ``--enable-editing``), or has no such endpoint (501, 404, UNIMPLEMENTED)."""


class OverloadedError(FluxError):
    """The server's queue is full (429, RESOURCE_EXHAUSTED); ``retry_after`` is the
    server's advice in seconds. Not retried automatically: back off, or add replicas."""


class UnavailableError(FluxError):
    """The server cannot be reached, is not ready yet, or is draining (503, UNAVAILABLE,
    connection errors). Retried with backoff before it reaches the caller."""

    retryable = True


class DeadlineExceededError(FluxError, TimeoutError):
    """The request did not finish within its timeout (504, DEADLINE_EXCEEDED, or the
    client's own timeout)."""


class ServerError(FluxError):
    """The server failed while handling the request (500, INTERNAL, UNKNOWN)."""


class UnsupportedError(FluxError):
    """The chosen transport cannot do what was asked (e.g. progress streaming over HTTP)."""


@dataclass(frozen=True)
class ErrorKind:
    """One row of the mapping between wire statuses and error classes."""

    error: type[FluxError]
    http_statuses: tuple[int, ...]
    grpc_codes: tuple[str, ...]


ERROR_TABLE: tuple[ErrorKind, ...] = (
    ErrorKind(InvalidArgumentError, (400, 413, 415, 422), ("INVALID_ARGUMENT", "OUT_OF_RANGE")),
    ErrorKind(AuthenticationError, (401,), ("UNAUTHENTICATED",)),
    ErrorKind(PermissionDeniedError, (403,), ("PERMISSION_DENIED",)),
    ErrorKind(NotEnabledError, (404, 405, 501), ("NOT_FOUND", "UNIMPLEMENTED")),
    ErrorKind(OverloadedError, (429,), ("RESOURCE_EXHAUSTED",)),
    ErrorKind(UnavailableError, (502, 503), ("UNAVAILABLE",)),
    ErrorKind(DeadlineExceededError, (504, 408), ("DEADLINE_EXCEEDED",)),
    ErrorKind(FluxError, (409, 499), ("CANCELLED", "ABORTED", "FAILED_PRECONDITION")),
)

CODE_TABLE: dict[str, type[FluxError]] = {"content_rejected": ContentRejectedError}
"""Server error codes (the REST body's ``code``, gRPC metadata ``fluxserve-error-code``)
that pick a narrower class than the status alone."""

_BY_HTTP = {status: kind.error for kind in ERROR_TABLE for status in kind.http_statuses}
_BY_GRPC = {code: kind.error for kind in ERROR_TABLE for code in kind.grpc_codes}


def error_class_for_http(status: int, code: str | None = None) -> type[FluxError]:
    """The error class for an HTTP status (>= 400) and the server's error code."""
    if code in CODE_TABLE:
        return CODE_TABLE[code]
    if status in _BY_HTTP:
        return _BY_HTTP[status]
    if status >= 500:
        return ServerError
    return InvalidArgumentError if 400 <= status < 500 else FluxError


def error_class_for_grpc(code_name: str, code: str | None = None) -> type[FluxError]:
    """The error class for a gRPC status code name (``grpc.StatusCode.X.name``) and the
    server's error code."""
    if code in CODE_TABLE:
        return CODE_TABLE[code]
    return _BY_GRPC.get(code_name, ServerError)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds only; dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
