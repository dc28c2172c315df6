"""What every gRPC call does around its own work: the call context read from the
metadata, and the call itself, whose :class:`ServeError` ends it with gRPC's rich
status (audited, with ``x-request-id``) and which is counted and timed like a REST
request. The servicer, the job RPCs and the guard share one :class:`Calls`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc

from flux_contract.wire import AUTHORIZATION_METADATA, REQUEST_ID_METADATA, to_grpc_status
from flux_server.errors import ServeError, status_of
from flux_server.requests.context import CallContext, new_request_id
from flux_server.service.core import GenerationService

T = TypeVar("T")

Metadata = Iterable[tuple[str, str | bytes]]


def metadata_value(metadata: Metadata | None, key: str) -> str | None:
    """A metadata entry's text (binary values decoded leniently), or None."""
    for entry_key, value in metadata or ():
        if entry_key == key:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def call_context(
    metadata: Metadata | None,
    method: str,
    *,
    priority: bool = False,
    timeout: float | None = None,
    client: str | None = None,
) -> CallContext:
    """The call as the core sees it: the caller's request id when it gives a usable one,
    its key, and its text metadata for experiments (credentials and binary values out)."""
    entries = list(metadata or ())
    given = metadata_value(entries, REQUEST_ID_METADATA) or ""
    headers = {
        key: value
        for key, value in entries
        if key != AUTHORIZATION_METADATA and isinstance(value, str)
    }
    return CallContext(
        endpoint=f"grpc:{method}",
        request_id=given if 0 < len(given) <= 128 else new_request_id(),
        authorization=metadata_value(entries, AUTHORIZATION_METADATA),
        priority=priority,
        timeout=timeout,
        headers=headers,
        client=client,
    )


class Calls:
    """The context and the outcome of every call to the service."""

    def __init__(self, service: GenerationService) -> None:
        self.service = service

    def context(
        self, context: grpc.aio.ServicerContext, method: str, priority: bool = False
    ) -> CallContext:
        """The call's context; its deadline, when it has one, is the request's timeout."""
        remaining = context.time_remaining()
        return call_context(
            _entries(context),
            method,
            priority=priority,
            timeout=remaining if remaining is not None and remaining > 0 else None,
        )

    async def run(
        self,
        context: grpc.aio.ServicerContext,
        ctx: CallContext,
        work: Callable[[], Awaitable[T]],
    ) -> T:
        """``work``'s answer; its ServeError ends the call with the rich status."""
        started = time.perf_counter()
        code = "OK"
        try:
            return await work()
        except ServeError as error:
            status = status_of(error)
            code = status.grpc
            await self.abort(context, ctx, error)
            raise  # abort raises; this line is never reached
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            metrics = self.service.metrics
            metrics.requests.labels(endpoint=ctx.endpoint, code=code).inc()
            metrics.request_duration.labels(endpoint=ctx.endpoint).observe(
                time.perf_counter() - started
            )

    async def abort(
        self, context: grpc.aio.ServicerContext, ctx: CallContext, error: ServeError
    ) -> None:
        """End the call with ``error`` (audited unless it was already)."""
        self.service.audit_refusal(ctx, error, status_of(error).http)
        rich = to_grpc_status(error.to_wire(ctx.request_id))
        await context.abort(rich.code, rich.details, rich.trailing_metadata)


def _entries(context: grpc.aio.ServicerContext) -> list[tuple[str, Any]]:
    return [(entry.key, entry.value) for entry in context.invocation_metadata() or ()]
