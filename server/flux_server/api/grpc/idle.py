"""Room on the gRPC port for clients that talk.

gRPC's core caps the port's open connections (``grpc.max_allowed_incoming_connections``)
but, unlike the HTTP guard (flux_server.connections), never evicts one to let a new one
in: a flood of sockets that never send the HTTP/2 client preface holds the cap until
their handshake deadline (``--header-timeout``), and every new client, health checks
included, is turned away meanwhile.

The sweeper watches the port's connections from outside the core, as the kernel sees
them: the process's own sockets, read with ``getsockopt(TCP_INFO)`` (Linux). When the
port holds at least ``high`` connections, each that has received fewer bytes than the
preface and been quiet for ``quiet`` seconds is shut down, the quietest first:
``shutdown(2)`` on a duplicate of its descriptor, so the core sees its peer go and frees
the slot, and the descriptor stays the core's to close. A gRPC client sends the preface
with its first bytes, so a real one is never among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from flux_server.connections import BurstLog

log = logging.getLogger(__name__)

PREFACE_BYTES = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_ESTABLISHED = 1
# struct tcp_info (linux/tcp.h): tcpi_state is byte 0, tcpi_last_data_recv (ms) the u32
# at 52, tcpi_bytes_received (Linux 4.1+) the u64 at 128.
_TCP_INFO_BYTES = 136


@dataclass(frozen=True)
class Peer:
    fd: int
    quiet_ms: int
    bytes_received: int


def supported() -> bool:
    return sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


def _socket_fds() -> Iterator[int]:
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                yield int(name)


def _peer(fd: int, port: int) -> Peer | None:
    """The connection on descriptor ``fd`` if it is an established one to ``port``."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None  # closed since it was listed
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None
    with sock:
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in (
                socket.AF_INET,
                socket.AF_INET6,
            ):
                return None
            if sock.getsockname()[1] != port:
                return None
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return None  # the listener itself
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
        except OSError:
            return None
    if len(info) < _TCP_INFO_BYTES or info[0] != _ESTABLISHED:
        return None
    (quiet_ms,) = struct.unpack_from("I", info, 52)
    (received,) = struct.unpack_from("Q", info, 128)
    return Peer(fd, quiet_ms, received)


def connections(port: int) -> list[Peer]:
    """The established connections to ``port`` this process holds."""
    return [peer for fd in _socket_fds() if (peer := _peer(fd, port)) is not None]


def _shut(fd: int) -> bool:
    try:
        dup = os.dup(fd)
    except OSError:
        return False
    try:
        with socket.socket(fileno=dup) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False


def sweep(port: int, high: int, quiet: float) -> int:
    """One pass; returns how many silent connections were shut down."""
    peers = connections(port)
    if len(peers) < high:
        return 0
    silent = [p for p in peers if p.bytes_received < PREFACE_BYTES and p.quiet_ms >= quiet * 1000]
    silent.sort(key=lambda p: p.quiet_ms, reverse=True)
    return sum(_shut(p.fd) for p in silent)


async def sweep_forever(port: int, cap: int, quiet: float = 1.0, period: float = 0.5) -> None:
    """Every ``period`` seconds, once the port holds 3/4 of ``cap``, shut down the
    connections that sent no preface in ``quiet`` seconds (a thread reads the sockets)."""
    high = max(1, cap * 3 // 4)
    burst = BurstLog("grpc connections that sent no HTTP/2 preface closed to make room")
    while True:
        await asyncio.sleep(period)
        try:
            closed = await asyncio.to_thread(sweep, port, high, quiet)
        except OSError as exc:  # /proc unreadable: say so once, stop sweeping
            log.warning("grpc connection sweeper stopped", extra={"error": str(exc)})
            return
        for _ in range(closed):
            burst.note(grpc_port=port)


def start(port: int, cap: int) -> asyncio.Future[None]:
    """The sweeper as a task; where the kernel's view is not readable (not Linux), a
    future that is never done (cancelling it is all the caller does)."""
    if not supported():
        log.warning("no grpc connection sweeper on this platform", extra={"grpc_port": port})
        return asyncio.get_running_loop().create_future()
    return asyncio.create_task(sweep_forever(port, cap), name="grpc-sweeper")
