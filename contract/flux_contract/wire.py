"""The fluxserve wire contract, in one import for the server and the SDK.

- ``pb`` / ``pb_grpc``: the generated ``fluxserve.v1`` messages and service stubs.
- ``SERVICE_NAME``, ``MAX_MESSAGE_BYTES``, and the image formats' proto values.
- From ``reasons``: ``REASONS``, each error reason with its one HTTP status and one gRPC
  code, and ``WireError``, an error as it travels.
- From ``headers``: the header and metadata names both sides use.
- From ``status``: ``to_grpc_status`` / ``from_grpc_status``, gRPC's rich error model.
"""

from __future__ import annotations

from flux_contract._proto.fluxserve.v1 import fluxserve_pb2 as pb
from flux_contract._proto.fluxserve.v1 import fluxserve_pb2_grpc as pb_grpc
from flux_contract.headers import (
    AUTHORIZATION_METADATA,
    EXPERIMENT_HEADER,
    EXPERIMENT_METADATA,
    PRIORITY_HEADER,
    REQUEST_ID_HEADER,
    REQUEST_ID_METADATA,
    REQUEST_TIMEOUT_HEADER,
    RETRY_AFTER_HEADER,
    STATUS_DETAILS_METADATA,
    USER_ID_HEADER,
    USER_ID_METADATA,
)
from flux_contract.reasons import (
    ERROR_DOMAIN,
    REASONS,
    WireError,
    WireStatus,
    error_body,
    reason_for_grpc_code,
    reason_for_http_status,
    reason_name,
)
from flux_contract.status import GrpcStatus, from_grpc_status, to_grpc_status

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

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FluxService"].full_name
"""``fluxserve.v1.FluxService``."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""gRPC message limit both sides set: several full-size images exceed the 4 MiB default."""

IMAGE_FORMAT_TO_PB: dict[str, pb.ImageFormat.ValueType] = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
}
"""``pb.ImageFormat`` of each image format by its lower-case name (the REST value)."""
IMAGE_FORMAT_FROM_PB: dict[pb.ImageFormat.ValueType, str] = {
    pb.IMAGE_FORMAT_UNSPECIFIED: "png",
    **{value: name for name, value in IMAGE_FORMAT_TO_PB.items()},
}
"""The format name of a ``pb.ImageFormat``; unspecified means PNG, the default."""
