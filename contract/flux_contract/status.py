"""gRPC's rich error model, built and read: a ``google.rpc.Status`` whose details hold an
``ErrorInfo`` (the reason), a ``BadRequest.FieldViolation`` (the field) and a
``RetryInfo`` (the backoff advice), with ``grpcio-status`` and
``googleapis-common-protos``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from flux_contract.headers import REQUEST_ID_METADATA, STATUS_DETAILS_METADATA
from flux_contract.reasons import ERROR_DOMAIN, REASONS, WireError, reason_for_grpc_code

__all__ = ["GrpcStatus", "from_grpc_status", "to_grpc_status"]


@dataclass(frozen=True)
class GrpcStatus:
    """What ``grpc.aio.ServicerContext.abort`` takes."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


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
