"""Who asks and how (:class:`CallContext`): what a call carries from the API adapters
to the core besides its parameters; and the callables a call is handed (``ProgressFn``,
the engine's own, and ``OffLoop``). No framework, no torch: every layer above the
engine may import it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from flux_server.execution.inputs import ProgressFn

__all__ = ["CallContext", "OffLoop", "ProgressFn", "new_request_id"]

OffLoop = Callable[..., Coroutine[Any, Any, Any]]
"""Runs a blocking function in a worker thread, off the event loop
(:meth:`flux_server.scheduling.runner.Runner.off_loop`)."""


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
