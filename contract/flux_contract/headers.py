"""The HTTP header and gRPC metadata names the server and the SDK both use.

gRPC metadata keys are lower case; where a header also travels as metadata, the
metadata name is the header's in lower case.
"""

from __future__ import annotations

__all__ = [
    "AUTHORIZATION_METADATA",
    "EXPERIMENT_HEADER",
    "EXPERIMENT_METADATA",
    "PRIORITY_HEADER",
    "REQUEST_ID_HEADER",
    "REQUEST_ID_METADATA",
    "REQUEST_TIMEOUT_HEADER",
    "RETRY_AFTER_HEADER",
    "STATUS_DETAILS_METADATA",
    "USER_ID_HEADER",
    "USER_ID_METADATA",
]

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
``flux_contract.names.header_value``); absent outside any experiment."""
EXPERIMENT_METADATA = EXPERIMENT_HEADER.lower()
"""The same in gRPC trailing metadata."""
