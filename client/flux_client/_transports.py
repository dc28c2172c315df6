"""What a transport is, which one to build, and how ``transport="auto"`` finds out what a
port speaks.

The probe is one HTTP/1.1 ``GET /healthz``: any HTTP answer means the REST server; a peer
that breaks the exchange off (a gRPC server speaks HTTP/2 only) is then asked the standard
gRPC health check, and any gRPC answer means gRPC. A port that answers neither is an error
naming ``transport=``; a port nobody listens on is ``UnavailableError`` (retried, and
probed again next time, since the server may be starting).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeVar

import grpc
import grpc.aio
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flux_client._common import USER_AGENT, Attempt, ClientSettings
from flux_client._grpc import AsyncGrpcTransport
from flux_client._http import AsyncHttpTransport, base_url
from flux_client._operation_types import Operation
from flux_client.errors import FluxError, UnavailableError

Req = TypeVar("Req")
Res = TypeVar("Res")

PROBE_TIMEOUT_S = 5.0
"""The longest the protocol probe waits for each answer."""


class Transport(Protocol):
    """Runs operations over one protocol; one instance per client, one event loop."""

    async def unary(self, op: Operation[Req, Res], request: Req, call: Attempt) -> Res: ...

    def stream(self, op: Operation[Req, Res], request: Req, call: Attempt) -> AsyncIterator[Res]:
        """An async iterator of the operation's events."""
        ...

    async def ready(self, timeout: float | None) -> bool: ...

    async def close(self) -> None: ...


def build_transport(settings: ClientSettings, name: str) -> Transport:
    """The transport for ``name`` (``grpc`` or ``http``)."""
    if name == "grpc":
        return AsyncGrpcTransport(
            settings.grpc_target, api_key=settings.api_key, secure=settings.secure
        )
    return AsyncHttpTransport(
        base_url(settings.host, settings.port, settings.secure), api_key=settings.api_key
    )


class ProtocolUnknownError(FluxError):
    """The port answered neither REST nor gRPC."""


async def detect_protocol(settings: ClientSettings, timeout: float | None) -> str:
    """``"http"`` or ``"grpc"``: what the server at ``settings``' address speaks."""
    budget = min(PROBE_TIMEOUT_S, timeout) if timeout is not None else PROBE_TIMEOUT_S
    address = f"{settings.host}:{settings.port}"
    url = base_url(settings.host, settings.port, settings.secure)
    async with httpx.AsyncClient(base_url=url, headers={"User-Agent": USER_AGENT}) as http:
        try:
            await http.get("/healthz", timeout=budget)
            return "http"
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise UnavailableError(
                f"cannot reach {address} to tell whether it speaks REST or gRPC: {error!r}",
                code="unavailable",
            ) from None
        except httpx.TransportError:
            pass  # not HTTP/1.1: perhaps gRPC
    if await _answers_grpc(settings, budget):
        return "grpc"
    raise ProtocolUnknownError(
        f"{address} answers neither REST nor gRPC; name the protocol: "
        "transport='http' (the server's --http-port) or transport='grpc' (--grpc-port)",
        code="unknown_protocol",
    )


async def _answers_grpc(settings: ClientSettings, timeout: float) -> bool:
    channel = (
        grpc.aio.secure_channel(settings.grpc_target, grpc.ssl_channel_credentials())
        if settings.secure
        else grpc.aio.insecure_channel(settings.grpc_target)
    )
    try:
        await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
        return True
    except grpc.RpcError as error:
        # Any status from a gRPC server (NOT_FOUND, UNIMPLEMENTED, ...) is still gRPC;
        # UNAVAILABLE and DEADLINE_EXCEEDED mean nothing spoke gRPC back.
        code = error.code()
        return code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        await channel.close()
