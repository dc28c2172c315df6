"""The SDK's errors: one hierarchy for both transports, importing no framework.

Every error carries the server's ``message``, the request ``field`` it names (when the
server named one), the HTTP status and gRPC code it came from, and the ``request_id``
when the server sent one. ``REASON_ERRORS`` maps the server's error reasons (the wire
contract's ``flux_contract.reasons.REASONS``) to the classes; the transports use it and
nothing else.
"""

from __future__ import annotations


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
    """The content policy refused the request (code ``content_rejected``): its prompt, or
    the images it made (``image_classifier`` in the message), which are never sent."""


class NotEnabledError(FluxError):
    """The server was not started with this feature (VQA without ``--vqa-model``, editing
    without ``--enable-editing``), or has no such endpoint (501, 404, UNIMPLEMENTED)."""


class NotFoundError(FluxError, LookupError):
    """No job or request with that id, or it expired (404, NOT_FOUND, code
    ``unknown_id``); the message says how long the server keeps them."""


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


REASON_ERRORS: dict[str, type[FluxError]] = {
    "invalid_argument": InvalidArgumentError,
    "unknown_name": InvalidArgumentError,
    "malformed_request": InvalidArgumentError,
    "content_rejected": ContentRejectedError,
    "unauthenticated": AuthenticationError,
    "permission_denied": PermissionDeniedError,
    "resource_exhausted": OverloadedError,
    "unavailable": UnavailableError,
    "deadline_exceeded": DeadlineExceededError,
    "cancelled": FluxError,
    "unimplemented": NotEnabledError,
    "not_found": NotEnabledError,
    "method_not_allowed": NotEnabledError,
    "internal": ServerError,
    "refused_target": InvalidArgumentError,
    "unknown_id": NotFoundError,
    "unsupported_media_type": InvalidArgumentError,
    "payload_too_large": InvalidArgumentError,
}
"""The class of each server error reason (``flux_contract.reasons.REASONS``: the REST body's
``code``, the gRPC ErrorInfo ``reason``); a test checks that every reason has one."""

_FOREIGN_HTTP: dict[int, type[FluxError]] = {
    408: DeadlineExceededError,
    413: InvalidArgumentError,
    502: UnavailableError,
}
_FOREIGN_GRPC: dict[str, type[FluxError]] = {
    "out_of_range": InvalidArgumentError,
    "aborted": FluxError,
    "failed_precondition": FluxError,
}


def error_class(reason: str | None, http_status: int | None = None) -> type[FluxError]:
    """The class for a reason; for one the server did not send (a proxy's answer, a
    peer that is not fluxserve), the nearest class for the HTTP status or gRPC code."""
    if reason in REASON_ERRORS:
        return REASON_ERRORS[reason]
    if reason in _FOREIGN_GRPC:
        return _FOREIGN_GRPC[reason]
    if http_status is not None:
        if http_status in _FOREIGN_HTTP:
            return _FOREIGN_HTTP[http_status]
        if 400 <= http_status < 500:
            return InvalidArgumentError
    return ServerError


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds only; dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
