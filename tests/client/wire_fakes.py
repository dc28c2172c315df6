"""Small real servers that speak the fluxserve wire contract (gRPC and REST), for testing the
SDK's retries, timeouts and request building over real sockets without a model: images are
flat colours derived from the seed. The error contract itself is tested against the real
server (test_error_contract.py), never against these.

A ``Script`` shared by both servers says how the next requests fail, and records what
arrived, so tests can check both directions of the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import uvicorn
from fake_contract import DEFAULT_SEED, DEFAULT_SIZE, Script
from fake_grpc import FakeHealth, FakeServicer
from fake_rest import build_app
from grpc_health.v1 import health_pb2_grpc

from flux_client.wire import pb_grpc

__all__ = ["DEFAULT_SEED", "DEFAULT_SIZE", "FakeServers", "Script", "running_fake_servers"]


# -- both, on one loop in a thread ---------------------------------------------------


@dataclass
class FakeServers:
    script: Script
    grpc_port: int
    http_port: int

    def port(self, transport: str) -> int:
        return self.grpc_port if transport == "grpc" else self.http_port


@contextlib.contextmanager
def running_fake_servers() -> Iterator[FakeServers]:
    """Serve the fake gRPC and REST servers on 127.0.0.1 (free ports) until the block ends."""
    script = Script()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says TCP, and without it every response waits ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        server = grpc.aio.server()
        pb_grpc.add_FluxServiceServicer_to_server(FakeServicer(script), server)
        health_pb2_grpc.add_HealthServicer_to_server(FakeHealth(script), server)
        holder["grpc_port"] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        config = uvicorn.Config(build_app(script), log_level="warning", lifespan="off")
        http = uvicorn.Server(config)
        holder["http"] = http
        task = asyncio.create_task(http.serve(sockets=[sock]))
        # uvicorn exposes its readiness only as the `started` flag.
        while not http.started:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        ready.set()
        await task
        await server.stop(grace=None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    while not ready.wait(0.05):
        if not thread.is_alive():
            raise RuntimeError("fake servers failed to start (see the thread's traceback)")
    try:
        yield FakeServers(script, holder["grpc_port"], sock.getsockname()[1])
    finally:
        script.release.set()
        holder["http"].should_exit = True
        thread.join(30)
        loop.close()
        sock.close()
