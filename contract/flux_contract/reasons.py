"""Each error reason (``pb.ErrorReason``) with its one HTTP status and one gRPC code.

The REST error body's ``code`` and the gRPC ``google.rpc.ErrorInfo.reason`` are the
reason's name (lower case in the body, upper case in ErrorInfo); the REST and gRPC
adapters of the server and both transports of the SDK read this one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from grpc import StatusCode

from flux_contract._proto.fluxserve.v1 import fluxserve_pb2 as pb

__all__ = [
    "CONTENT_REFUSALS",
    "ERROR_DOMAIN",
    "REASONS",
    "WireError",
    "WireStatus",
    "error_body",
    "reason_for_grpc_code",
    "reason_for_http_status",
    "reason_name",
]

ERROR_DOMAIN = "fluxserve.v1"
"""``google.rpc.ErrorInfo.domain`` of every fluxserve error."""


@dataclass(frozen=True)
class WireStatus:
    """How one error reason travels: its name, HTTP status and gRPC code."""

    reason: str
    """Lower-case reason name: the REST body's ``code`` (e.g. ``content_rejected``)."""
    http: int
    grpc: str
    """A ``grpc.StatusCode`` member name."""

    @property
    def grpc_code(self) -> StatusCode:
        return StatusCode[self.grpc]


_PREFIX = "ERROR_REASON_"

_HTTP_AND_GRPC: dict[int, tuple[int, str]] = {
    pb.ERROR_REASON_INVALID_ARGUMENT: (422, "INVALID_ARGUMENT"),
    pb.ERROR_REASON_UNKNOWN_NAME: (400, "INVALID_ARGUMENT"),
    pb.ERROR_REASON_MALFORMED_REQUEST: (400, "INVALID_ARGUMENT"),
    pb.ERROR_REASON_CONTENT_REJECTED: (400, "INVALID_ARGUMENT"),
    pb.ERROR_REASON_UNAUTHENTICATED: (401, "UNAUTHENTICATED"),
    pb.ERROR_REASON_PERMISSION_DENIED: (403, "PERMISSION_DENIED"),
    pb.ERROR_REASON_RESOURCE_EXHAUSTED: (429, "RESOURCE_EXHAUSTED"),
    pb.ERROR_REASON_UNAVAILABLE: (503, "UNAVAILABLE"),
    pb.ERROR_REASON_DEADLINE_EXCEEDED: (504, "DEADLINE_EXCEEDED"),
    pb.ERROR_REASON_CANCELLED: (499, "CANCELLED"),
    pb.ERROR_REASON_UNIMPLEMENTED: (501, "UNIMPLEMENTED"),
    pb.ERROR_REASON_INTERNAL: (500, "INTERNAL"),
    pb.ERROR_REASON_NOT_FOUND: (404, "NOT_FOUND"),
    pb.ERROR_REASON_METHOD_NOT_ALLOWED: (405, "UNIMPLEMENTED"),
    pb.ERROR_REASON_REFUSED_TARGET: (400, "INVALID_ARGUMENT"),
    pb.ERROR_REASON_UNKNOWN_ID: (404, "NOT_FOUND"),
    pb.ERROR_REASON_UNSUPPORTED_MEDIA_TYPE: (415, "INVALID_ARGUMENT"),
    pb.ERROR_REASON_PAYLOAD_TOO_LARGE: (413, "RESOURCE_EXHAUSTED"),
}


def reason_name(reason: int) -> str:
    """The lower-case name of a ``pb.ErrorReason`` value (``content_rejected``)."""
    return pb.ErrorReason.Name(reason).removeprefix(_PREFIX).lower()  # type: ignore[arg-type]


REASONS: dict[str, WireStatus] = {
    reason_name(value): WireStatus(reason_name(value), http, code)
    for value, (http, code) in _HTTP_AND_GRPC.items()
}
"""Every error reason by its lower-case name: the one table of HTTP statuses and gRPC
codes. ``pb.ErrorReason`` lists them; a test checks that none is missing here."""

CONTENT_REFUSALS: dict[str, WireStatus] = {
    refusal: REASONS["content_rejected"]
    for refusal in ("blocklist", "minor_sexual", "hate", "classifier", "image_classifier")
}
"""Why the content policy refused a request, each with how the refusal travels: all are
``content_rejected`` (HTTP 400, gRPC ``INVALID_ARGUMENT``), the refusal named in the
message (``... refused by the content policy (image_classifier)``), the audit line's
``reason`` and the ``fluxserve_safety_rejections`` label. ``blocklist``, ``minor_sexual``,
``hate`` and ``classifier`` judge the prompt (or a question) before any work;
``image_classifier`` judges the images made (``--image-safety-model``), so a refused
image is never returned, cached or stored for a job."""

# For answers that carry no reason (a proxy's 502, a peer that is not fluxserve): the
# first reason with that status stands for it.
_BY_HTTP: dict[int, str] = {}
_BY_GRPC: dict[str, str] = {}
for _status in REASONS.values():
    _BY_HTTP.setdefault(_status.http, _status.reason)
    _BY_GRPC.setdefault(_status.grpc, _status.reason)


def reason_for_http_status(status: int) -> str | None:
    """The reason an HTTP status stands for when the body names none."""
    return _BY_HTTP.get(status)


def reason_for_grpc_code(code_name: str) -> str | None:
    """The reason a gRPC code stands for when the status carries no ErrorInfo."""
    return _BY_GRPC.get(code_name)


@dataclass(frozen=True)
class WireError:
    """An error as it travels, whichever the transport."""

    reason: str
    """Lower-case reason name, or the gRPC code / HTTP status name of a foreign peer."""
    message: str
    field: str | None = None
    retry_after: float | None = None
    """Seconds (RetryInfo / Retry-After)."""
    request_id: str | None = None


def error_body(error: WireError) -> dict[str, dict[str, str | None]]:
    """The REST error body: ``{"error": {"code", "message", "field"}}``."""
    return {"error": {"code": error.reason, "message": error.message, "field": error.field}}
