"""One process, one event loop: uvicorn (REST + /metrics), grpc.aio, and the core.

Start-up order: the ports are bound first (a busy one fails at once, naming its flag),
then the listeners start (so ``/healthz`` answers and ``/readyz`` says 503 while the model
loads), then the model, then readiness (``/readyz`` 200, gRPC health
SERVING). On SIGTERM/SIGINT: readiness off, stop accepting, finish accepted work for
up to ``--drain-timeout`` seconds, then close the listeners and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import grpc
import uvicorn
from grpc_health.v1 import health

from flux_server.api.grpc import idle as grpc_idle
from flux_server.api.grpc.servicer import build_grpc_server, set_serving
from flux_server.api.rest import asgi_app, metrics_app
from flux_server.connections import (
    ConnectionGuard,
    ProbesOnly,
    accept_errors,
    fd_budget,
    guarded_protocol,
)
from flux_server.listeners import Listeners, PortUnavailable, bound_port
from flux_server.metrics import Metrics
from flux_server.service.core import GenerationService
from flux_server.settings import ServerSettings

log = logging.getLogger(__name__)

METRICS_CONNECTIONS = 64
"""The separate metrics port's cap: scrapers and probes, a handful at a time."""


def _uvicorn(
    app: object,
    host: str,
    port: int,
    keep_alive: float = 5,
    guard: ConnectionGuard | None = None,
) -> uvicorn.Server:
    """A uvicorn server; with ``guard``, its connections have a head deadline and a cap
    (see :mod:`flux_server.connections`)."""
    config = uvicorn.Config(
        ProbesOnly(app) if guard is not None else app,  # type: ignore[arg-type]
        http=guarded_protocol(guard) if guard is not None else "auto",
        host=host,
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        backlog=guard.backlog if guard is not None else 2048,  # 2048: uvicorn's default
        # An idle connection is closed after this; a slow request head after the guard's
        # --header-timeout; slow bodies are the gateway's to cut (the README's security).
        timeout_keep_alive=keep_alive,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    # Signals are ours: uvicorn must not close its connections on SIGTERM before the
    # drain has answered them.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server


class FluxServer:
    """The running server. ``run()`` returns when it has stopped."""

    def __init__(self, settings: ServerSettings, listeners: Listeners | None = None) -> None:
        """``listeners``: the ports, bound already (``main()`` binds them before the
        heavy imports); None: ``run()`` binds them."""
        self.settings = settings
        self.listeners = listeners
        self.metrics = Metrics(settings.release)
        self.service = GenerationService(settings, self.metrics)
        self.stop_requested = asyncio.Event()
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port = 0
        # True when run() returned while the engine thread was still busy (a model load
        # or a pipeline call nobody waits for any more): main() must not join it.
        self.abandoned_work = False

    def request_stop(self) -> None:
        self.stop_requested.set()

    def _grpc(
        self, listeners: Listeners, max_connections: int | None = None
    ) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
        s = self.settings
        try:
            return build_grpc_server(
                self.service, s.host, s.grpc_port, max_connections=max_connections
            )
        except RuntimeError:
            # Taken between the check and the bind.
            listeners.close()
            raise PortUnavailable("--grpc-port", s.grpc_port) from None

    async def run(self) -> int:
        """Serve until a stop is requested. Raises :class:`PortUnavailable` before
        anything starts when a port cannot be bound."""
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        # asyncio's "accept() out of system resource": one line per burst, not per accept.
        loop.set_exception_handler(accept_errors(loop.get_exception_handler()))
        running = self._start(self.listeners or Listeners.bind(s))
        if not await self._listening(running):
            return 1
        log.info(
            "listening",
            extra={
                "http_port": self.http_port,
                "grpc_port": self.grpc_port,
                "metrics_port": self.metrics_port,
                "release": s.release,
            },
        )
        exit_code = await self._serve(running.health)
        await self._stop(running)
        return exit_code

    def _start(self, listeners: Listeners) -> _Running:
        """The gRPC server and the uvicorn servers on the bound sockets, not started; the
        connection caps fit the file descriptors."""
        s = self.settings
        metrics_socket = listeners.metrics
        caps = fd_budget(
            {"http": s.max_connections, "grpc": s.max_connections}
            | ({"metrics": METRICS_CONNECTIONS} if metrics_socket is not None else {})
        )
        grpc_server, health_servicer, self.grpc_port = self._grpc(listeners, caps["grpc"])
        http = _uvicorn(
            asgi_app(self.service),
            s.host,
            s.http_port,
            s.keep_alive_timeout,
            ConnectionGuard("http", caps["http"], s.header_timeout, s.keep_alive_timeout),
        )
        metrics_server = (
            _uvicorn(
                metrics_app(self.service),
                s.host,
                s.metrics_port,
                guard=ConnectionGuard("metrics", caps["metrics"], s.header_timeout),
            )
            if metrics_socket is not None
            else None
        )
        return _Running(listeners, caps["grpc"], grpc_server, health_servicer, http, metrics_server)

    async def _listening(self, running: _Running) -> bool:
        """Start the listeners (readiness off); False when the HTTP one could not."""
        await set_serving(running.health, False)
        await running.grpc.start()
        # gRPC's core never evicts a connection to make room: silent ones are, from here.
        running.sweeper = grpc_idle.start(self.grpc_port, running.grpc_cap)
        running.http_task = asyncio.create_task(
            running.http.serve([running.listeners.http]), name="http"
        )
        metrics_socket = running.listeners.metrics
        if running.metrics is not None and metrics_socket is not None:
            running.metrics_task = asyncio.create_task(
                running.metrics.serve([metrics_socket]), name="metrics"
            )
        while not running.http.started:
            if running.http_task.done():
                running.sweeper.cancel()
                await running.grpc.stop(0)
                running.http_task.result()
                log.error(
                    "the HTTP listener did not start", extra={"port": self.settings.http_port}
                )
                return False
            await asyncio.sleep(0.01)
        self.http_port = bound_port(running.listeners.http)
        if running.metrics is not None and running.metrics_task is not None:
            # uvicorn exposes only a flag for "listening"; poll it briefly.
            while not running.metrics.started and not running.metrics_task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if running.metrics.started and metrics_socket is not None:
                self.metrics_port = bound_port(metrics_socket)
        return True

    async def _serve(self, health_servicer: health.aio.HealthServicer) -> int:
        """Load the model, then serve (readiness on) until a stop is requested; a stop
        during the load cuts it short. 1 when the model could not be loaded."""
        start = asyncio.create_task(self.service.start(), name="load")
        stop = asyncio.create_task(self.stop_requested.wait(), name="stop")
        await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        if start.done() and start.exception() is not None:
            log.error("the model could not be loaded: %s", start.exception())
            return 1
        if start.done():
            await set_serving(health_servicer, True)
            await stop
        else:
            start.cancel()
            self.abandoned_work = True
        return 0

    async def _stop(self, running: _Running) -> None:
        """Readiness off, drain accepted work for up to ``--drain-timeout``, then close
        the listeners and the core."""
        s = self.settings
        log.info("draining", extra={"drain_timeout": s.drain_timeout})
        # Health answers NOT_SERVING from here on, and ignores later updates.
        await running.health.enter_graceful_shutdown()
        drained = await self.service.drain(s.drain_timeout)
        self.abandoned_work = self.abandoned_work or not drained
        if not drained:
            log.warning("drain timed out; unfinished requests were refused")
        # Accepted work is done: let the adapters send the last answers, then close.
        await running.grpc.stop(grace=2)
        if running.sweeper is not None:
            running.sweeper.cancel()
        running.http.should_exit = True
        if running.metrics is not None:
            running.metrics.should_exit = True
        if running.http_task is not None:
            await running.http_task
        if running.metrics_task is not None:
            await running.metrics_task
        await self.service.close()
        log.info("stopped", extra={"drained": drained})


@dataclass
class _Running:
    """The listeners of one run, and the tasks serving them once started."""

    listeners: Listeners
    grpc_cap: int
    grpc: grpc.aio.Server
    health: health.aio.HealthServicer
    http: uvicorn.Server
    metrics: uvicorn.Server | None
    sweeper: asyncio.Future[None] | None = None
    http_task: asyncio.Task[None] | None = None
    metrics_task: asyncio.Task[None] | None = None
