"""The fluxserve wire contract (``flux_contract.wire``), under the name SDK users know.

The stubs ``pb`` / ``pb_grpc``, the reason → HTTP → gRPC table ``REASONS``, the header
and metadata names and the rich-status helpers all live in ``flux_contract``.
"""

from __future__ import annotations

from flux_contract.wire import (
    AUTHORIZATION_METADATA,
    ERROR_DOMAIN,
    EXPERIMENT_HEADER,
    EXPERIMENT_METADATA,
    IMAGE_FORMAT_FROM_PB,
    IMAGE_FORMAT_TO_PB,
    MAX_MESSAGE_BYTES,
    PRIORITY_HEADER,
    REASONS,
    REQUEST_ID_HEADER,
    REQUEST_ID_METADATA,
    REQUEST_TIMEOUT_HEADER,
    RETRY_AFTER_HEADER,
    SERVICE_NAME,
    STATUS_DETAILS_METADATA,
    USER_ID_HEADER,
    USER_ID_METADATA,
    GrpcStatus,
    WireError,
    WireStatus,
    error_body,
    from_grpc_status,
    pb,
    pb_grpc,
    reason_for_grpc_code,
    reason_for_http_status,
    reason_name,
    to_grpc_status,
)

__all__ = [
    "AUTHORIZATION_METADATA",
    "ERROR_DOMAIN",
    "EXPERIMENT_HEADER",
    "EXPERIMENT_METADATA",
    "IMAGE_FORMAT_FROM_PB",
    "IMAGE_FORMAT_TO_PB",
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
