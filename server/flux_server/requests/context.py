"""Who asks and how (:class:`CallContext`): what a call carries from the API adapters
to the core besides its parameters. No framework, no torch: every layer above the
engine may import it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

ProgressFn = Callable[[int, int], None]
"""Called on the event loop after each denoising step with (step, total steps)."""


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class CallContext:
    """Who asks, through which endpoint, with which deadline and lane."""

    endpoint: str  # "rest:/generate", "grpc:Generate", ...
    request_id: str = field(default_factory=new_request_id)
    authorization: str | None = None  # the "authorization" header / metadata value
    priority: bool = False
    timeout: float | None = None  # seconds; None: --request-timeout
    priority_denied: bool = False  # asked for the priority lane without the permission
    # The request's headers (REST) or metadata (gRPC), names in lower case: what an
    # experiment reads (the subject's ``x-user-id``, its audience's header).
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    # The caller's network address (REST: the peer, or X-Forwarded-For from a trusted
    # proxy; gRPC: the peer's host): what failed-key throttling counts by.
    client: str | None = None
