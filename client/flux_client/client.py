"""``FluxModelClient``: the blocking SDK client, a thin shell over ``AsyncFluxModelClient``.

Each blocking method runs the asyncio client's method of the same name on a private event
loop in a background thread, so every call is written once (in ``aio.py``), and the
blocking client works the same inside a program that already runs an event loop (a
notebook, a web handler): it never touches the caller's loop.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from flux_client._common import DEFAULT_TIMEOUT
from flux_client._loop_thread import LoopThread
from flux_client._retry import RetryPolicy
from flux_client.aio import AsyncFluxModelClient
from flux_client.job_handles import AsyncJob, Job
from flux_client.types import TransportName

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")


def _blocking(
    method: Callable[Concatenate[AsyncFluxModelClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[FluxModelClient, P], R]:
    """The blocking twin of an ``AsyncFluxModelClient`` method: same signature and docs."""

    @functools.wraps(method)
    def run(self: FluxModelClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._loop.run(method(self._async, *args, **kwargs))

    return run


def _blocking_job(
    method: Callable[Concatenate[AsyncFluxModelClient, P], Coroutine[Any, Any, AsyncJob]],
) -> Callable[Concatenate[FluxModelClient, P], Job]:
    """The blocking twin of a method that returns an ``AsyncJob``: a blocking ``Job``."""

    @functools.wraps(method)
    def run(self: FluxModelClient, /, *args: P.args, **kwargs: P.kwargs) -> Job:
        return Job(self._loop, self._loop.run(method(self._async, *args, **kwargs)))

    return run


def _blocking_iter(
    method: Callable[Concatenate[AsyncFluxModelClient, P], AsyncIterator[Y]],
) -> Callable[Concatenate[FluxModelClient, P], Iterator[Y]]:
    """The blocking twin of an async-iterator method: a plain iterator."""

    @functools.wraps(method)
    def run(self: FluxModelClient, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[Y]:
        return self._loop.iterate(method(self._async, *args, **kwargs))

    return run


class FluxModelClient:
    """A blocking client of one fluxserve server; the methods of ``AsyncFluxModelClient``
    (see there for each one's arguments), returning their results directly. Safe to use
    from several threads at once: their calls run concurrently and the server batches them.

    >>> with FluxModelClient(host="localhost", port=50051) as client:
    ...     client.generate(prompt="a lighthouse at dawn", output_path="lighthouse.png")

    Args:
        host: The server's host name or address (not a URL).
        port: Its REST port (``--http-port``) or its gRPC port (``--grpc-port``).
        transport: ``"grpc"``, ``"http"`` (REST), or ``"auto"``: the first call asks the
            port once which it speaks and remembers it; a port that answers neither is
            an error naming ``transport=``.
        api_key: Sent as ``authorization: Bearer <key>`` when the server requires keys.
        timeout: Seconds for a whole call, retries included; ``None`` waits forever.
        retry: Attempts and backoff for UNAVAILABLE / 503 (default: 4 attempts).
        secure: TLS (https, or a secure gRPC channel with the system's roots).
    """

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
        self._async = AsyncFluxModelClient(
            host, port, transport, api_key, timeout, retry=retry, secure=secure
        )
        self.settings = self._async.settings
        self._loop = LoopThread()

    @property
    def transport(self) -> str:
        """``"grpc"`` or ``"http"``; with ``transport="auto"``, asks the server once."""
        if self._async.transport == "auto":
            return self.detect_transport()
        return self._async.transport

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"FluxModelClient(host={s.host!r}, port={s.port}, transport={self._async.transport!r})"
        )

    detect_transport = _blocking(AsyncFluxModelClient.detect_transport)
    generate = _blocking(AsyncFluxModelClient.generate)
    generate_images = _blocking(AsyncFluxModelClient.generate_images)
    stream = _blocking_iter(AsyncFluxModelClient.stream)
    edit = _blocking(AsyncFluxModelClient.edit)
    edit_images = _blocking(AsyncFluxModelClient.edit_images)
    vqa = _blocking(AsyncFluxModelClient.vqa)
    list_presets = _blocking(AsyncFluxModelClient.list_presets)
    feedback = _blocking(AsyncFluxModelClient.feedback)
    list_experiments = _blocking(AsyncFluxModelClient.list_experiments)
    submit = _blocking_job(AsyncFluxModelClient.submit)

    def job(self, job_id: str) -> Job:
        """A job submitted earlier (by any client, to any replica), by its id."""
        return Job(self._loop, self._async.job(job_id))

    is_ready = _blocking(AsyncFluxModelClient.is_ready)
    wait_until_ready = _blocking(AsyncFluxModelClient.wait_until_ready)

    def close(self) -> None:
        """Release the connection and the client's background thread."""
        if not self._loop.started:
            return  # never used: no connection, no thread
        try:
            self._loop.run(self._async.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> FluxModelClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
