"""Reads gRPC's rich error status with the reference libraries (grpcio-status,
googleapis-common-protos), independently of the SDK's own parser."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class RichError:
    reason: str | None
    domain: str | None
    field: str | None
    retry_after_s: int | None
    request_id: str | None


def rich_error(error: grpc.RpcError) -> RichError:
    """The ErrorInfo reason, BadRequest field and RetryInfo delay of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error!r}"
    reason = domain = field = None
    retry_after = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain = info.reason, info.domain
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field = bad.field_violations[0].field
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.seconds
    trailing = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    return RichError(reason, domain, field, retry_after, trailing.get("x-request-id"))
