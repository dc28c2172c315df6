"""The connection side of the async client: settings, finding the port's protocol, the
retries within a call's deadline, readiness and closing. ``AsyncFluxModelClient`` adds
the calls (``flux_client.aio``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from typing_extensions import Self

from flux_client._common import (
    DEFAULT_TIMEOUT,
    Attempt,
    ClientSettings,
    check_address,
    check_transport,
    log_retry,
    new_request_id,
    with_request_id,
)
from flux_client._operation_types import Operation
from flux_client._retry import RetryPolicy
from flux_client._transports import Transport, build_transport, detect_protocol
from flux_client.errors import FluxError, UnavailableError
from flux_client.types import TransportName

T = TypeVar("T")
Req = TypeVar("Req")
Res = TypeVar("Res")


class ClientCore:
    """One server's connection and the running of an operation on it (see
    ``AsyncFluxModelClient`` for the arguments)."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = 50051,
        transport: TransportName = "auto",
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        retry: RetryPolicy | None = None,
        secure: bool = False,
    ) -> None:
        check_address(host, port)
        self.settings = ClientSettings(
            host=host,
            port=port,
            transport=check_transport(transport),
            api_key=api_key,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            secure=secure,
        )
        self._protocol: str | None = None if transport == "auto" else transport
        self._transport: Transport | None = None
        self._detecting = asyncio.Lock()

    @property
    def transport(self) -> str:
        """``"grpc"`` or ``"http"``; ``"auto"`` until the first call has found out."""
        return self._protocol or "auto"

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"{type(self).__name__}(host={s.host!r}, port={s.port}, transport={self.transport!r})"
        )

    async def detect_transport(self, *, timeout: float | None = None) -> str:
        """The protocol the server's port speaks, asked once and remembered.

        Args:
            timeout: Seconds to wait for the probe (default: the client's, at most 5 s).

        Returns:
            ``"grpc"`` or ``"http"``.
        """
        await self._get_transport(self.settings.timeout if timeout is None else timeout)
        assert self._protocol is not None
        return self._protocol

    # -- readiness ----------------------------------------------------------------

    async def is_ready(self, *, timeout: float = 5.0) -> bool:
        """Whether the server has loaded and warmed its model (gRPC health SERVING, or
        ``GET /readyz`` 200); ``False`` while it is unreachable, loading or draining.

        Args:
            timeout: Seconds to wait for the answer.
        """
        try:
            transport = await self._get_transport(timeout)
        except UnavailableError:
            return False
        return await transport.ready(timeout)

    async def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> None:
        """Poll readiness until the server is ready; ``UnavailableError`` after ``timeout``.

        Args:
            timeout: Seconds to wait in all.
            poll: Seconds between two checks.
        """
        deadline = time.monotonic() + timeout
        while not await self.is_ready(timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise UnavailableError(
                    f"server {self.settings.host}:{self.settings.port} not ready after {timeout} s",
                    code="unavailable",
                )
            await asyncio.sleep(poll)

    # -- plumbing -----------------------------------------------------------------

    async def _get_transport(self, timeout: float | None) -> Transport:
        if self._transport is None:
            async with self._detecting:  # concurrent first calls probe once
                if self._protocol is None:
                    self._protocol = await detect_protocol(self.settings, timeout)
                if self._transport is None:
                    self._transport = build_transport(self.settings, self._protocol)
        return self._transport

    def _deadline(self, timeout: float | None) -> float | None:
        budget = self.settings.timeout if timeout is None else timeout
        return None if budget is None else time.monotonic() + budget

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.001, deadline - time.monotonic())

    async def _stream(
        self, op: Operation[Req, Res], request: Req, timeout: float | None
    ) -> AsyncIterator[Res]:
        """An operation's events; a failure before the first one is retried like a call."""
        deadline = self._deadline(timeout)
        request_id = new_request_id()
        attempt = 0
        while True:
            attempt += 1
            started = False
            call = Attempt(self._remaining(deadline), request_id)
            try:
                transport = await self._get_transport(call.timeout)
                async for event in transport.stream(op, request, call):
                    started = True
                    yield event
                return
            except FluxError as error:
                wait = None if started else self.settings.retry.next_delay(attempt, error, deadline)
                if wait is None:
                    raise with_request_id(error, request_id) from None
                log_retry(error, request_id, attempt, wait)
                await asyncio.sleep(wait)

    async def _call(self, op: Operation[Req, Res], request: Req, timeout: float | None) -> Res:
        async def send(call: Attempt) -> Res:
            transport = await self._get_transport(call.timeout)
            return await transport.unary(op, request, call)

        return await self._retrying(send, timeout)

    async def _retrying(self, send: Callable[[Attempt], Awaitable[T]], timeout: float | None) -> T:
        deadline = self._deadline(timeout)
        request_id = new_request_id()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await send(Attempt(self._remaining(deadline), request_id))
            except FluxError as error:
                wait = self.settings.retry.next_delay(attempt, error, deadline)
                if wait is None:
                    raise with_request_id(error, request_id) from None
                log_retry(error, request_id, attempt, wait)
                await asyncio.sleep(wait)

    async def close(self) -> None:
        """Release the connection."""
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
