"""The fluxserve wire contract, in one place for the server and the SDK.

- ``pb`` / ``pb_grpc``: the generated ``fluxserve.v1`` messages and service stubs.
- ``REASONS``: each error reason (``pb.ErrorReason``) with its one HTTP status and one
  gRPC code. The REST error body's ``code`` and the gRPC ``google.rpc.ErrorInfo.reason``
  are the reason's name (lower case in the body, upper case in ErrorInfo).
- The header and metadata names both sides use.
- ``to_grpc_status`` / ``from_grpc_status``: gRPC's rich error model
  (``google.rpc.Status`` with ``ErrorInfo``, ``BadRequest.FieldViolation`` and
  ``RetryInfo``) built and read with ``grpcio-status`` and ``googleapis-common-protos``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import StatusCode
from grpc_status import rpc_status

from flux_client._proto.fluxserve.v1 import fluxserve_pb2 as pb
from flux_client._proto.fluxserve.v1 import fluxserve_pb2_grpc as pb_grpc

__all__ = [
    "AUTHORIZATION_METADATA",
    "ERROR_DOMAIN",
    "EXPERIMENT_HEADER",
    "EXPERIMENT_METADATA",
    "MAX_MESSAGE_BYTES",
    "PRIORITY_HEADER",
    "REASONS",
    "REQUEST_ID_HEADER",
    "REQUEST_ID_METADATA",
    "REQUEST_TIMEOUT_HEADER",
    "RETRY_AFTER_HEADER",
    "SERVICE_NAME",
    "STATUS_DETAILS_METADATA",
    "USER_ID_HEADER",
    "USER_ID_METADATA",
    "GrpcStatus",
    "WireError",
    "WireStatus",
    "error_body",
    "from_grpc_status",
    "pb",
    "pb_grpc",
    "reason_for_grpc_code",
    "reason_for_http_status",
    "reason_name",
    "to_grpc_status",
]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FluxService"].full_name
"""``fluxserve.v1.FluxService``."""
ERROR_DOMAIN = "fluxserve.v1"
"""``google.rpc.ErrorInfo.domain`` of every fluxserve error."""

AUTHORIZATION_METADATA = "authorization"
"""gRPC metadata (and HTTP header) with ``Bearer <api key>``."""
REQUEST_ID_METADATA = "x-request-id"
"""gRPC metadata naming the request; sent by the client, echoed in trailing metadata."""
STATUS_DETAILS_METADATA = "grpc-status-details-bin"
"""Trailing metadata with the serialized ``google.rpc.Status`` (gRPC's convention)."""
REQUEST_ID_HEADER = "X-Request-Id"
PRIORITY_HEADER = "X-Priority"
"""``high``: the priority lane (REST; gRPC has ``GenerationParams.priority``)."""
REQUEST_TIMEOUT_HEADER = "X-Request-Timeout"
"""Seconds the client still waits (REST; gRPC has its deadline)."""
RETRY_AFTER_HEADER = "Retry-After"
USER_ID_HEADER = "X-User-Id"
"""Who the request is for, when no API key says so: the subject of experiments."""
USER_ID_METADATA = USER_ID_HEADER.lower()
EXPERIMENT_HEADER = "X-Fluxserve-Experiment"
"""The experiment arm that served a request: ``experiment=arm`` (percent-encoded UTF-8,
``flux_client.names.header_value``); absent outside any experiment."""
EXPERIMENT_METADATA = EXPERIMENT_HEADER.lower()
"""The same in gRPC trailing metadata."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""gRPC message limit both sides set: several full-size images exceed the 4 MiB default."""


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


def to_grpc_status(error: WireError) -> GrpcStatus:
    """The rich gRPC status of an error: its code, message and the ``google.rpc``
    details (ErrorInfo, BadRequest for the field, RetryInfo), plus the request id in
    trailing metadata. For ``context.abort(s.code, s.details, s.trailing_metadata)``."""
    wire = REASONS.get(error.reason, REASONS["internal"])
    info = error_details_pb2.ErrorInfo(reason=wire.reason.upper(), domain=ERROR_DOMAIN)
    if error.request_id:
        info.metadata["request_id"] = error.request_id
    details = [info]
    if error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.message
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if error.retry_after is not None:
        seconds = max(0, math.ceil(error.retry_after))
        details.append(
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
        )
    message = status_pb2.Status(code=getattr(code_pb2, wire.grpc), message=error.message)
    for detail in details:
        message.details.add().Pack(detail)
    status = rpc_status.to_status(message)
    trailing = tuple(status.trailing_metadata)
    if error.request_id:
        trailing = (*trailing, (REQUEST_ID_METADATA, error.request_id))
    return GrpcStatus(status.code, status.details, trailing)


@dataclass(frozen=True)
class GrpcStatus:
    """What ``grpc.aio.ServicerContext.abort`` takes."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _value(metadata: Sequence[tuple[str, Any]] | None, key: str) -> str | bytes | None:
    for name, value in metadata or ():
        if name.lower() == key:
            return value
    return None


def from_grpc_status(
    code: grpc.StatusCode, details: str | None, trailing: Sequence[tuple[str, Any]] | None
) -> WireError:
    """The error a failed call carries: the reason, field and retry advice of its rich
    status, or, from a peer that sends none, the reason its gRPC code stands for."""
    request_id = _value(trailing, REQUEST_ID_METADATA)
    request_id = request_id.decode() if isinstance(request_id, bytes) else request_id
    reason = reason_for_grpc_code(code.name) or code.name.lower()
    message, field, retry_after = details or code.name, None, None
    raw = _value(trailing, STATUS_DETAILS_METADATA)
    if isinstance(raw, bytes):
        status = status_pb2.Status.FromString(raw)
        message = status.message or message
        for any_detail in status.details:
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            retry = error_details_pb2.RetryInfo()
            if any_detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                reason = info.reason.lower()
                request_id = request_id or info.metadata.get("request_id")
            elif any_detail.Unpack(bad) and bad.field_violations:
                field = bad.field_violations[0].field or None
            elif any_detail.Unpack(retry):
                retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    return WireError(reason, message, field, retry_after, request_id)
