"""Bounds on the HTTP listener's connections: a deadline for a request's head, a cap on
open connections, and one log line per burst of refusals.

uvicorn has neither: ``timeout_keep_alive`` starts only after a first response, and any
byte received cancels it, so a connection that sends nothing, or trickles a partial
head (slowloris), is held for ever; enough of them (~20,000 from one client) exhaust the
process's file descriptors, and then ``/healthz`` and gRPC stop answering too. uvicorn
takes its protocol as a class (``Config(http=...)``), so :func:`guarded_protocol`
subclasses the one it would pick (httptools, else h11) and adds:

* **the head deadline** (``--header-timeout``): a connection whose request head is not
  complete within it is answered 408 and closed. After a response the next head must
  come within ``--keep-alive-timeout`` plus the deadline;
* **the cap** (``--max-connections``): at the cap, a new connection takes the place of
  the oldest one still waiting for its head with nothing unread in its socket (an idle
  or slow one; never one whose request is being served, nor one whose request has
  arrived and is about to be read, such as a probe's). When none can make room, a few
  more (``RESERVE``) are let in for probes only: ``/healthz``, ``/readyz`` and
  ``/metrics`` are answered on them, anything else 503. Beyond that, a connection is
  answered 503 (``/healthz`` 200, if its request is already there: liveness is the loop
  answering) and closed at once;
* **quiet logs**: the first refusal of a burst is logged at once, the rest are counted
  and summed up once per ``interval`` (:class:`BurstLog`), never a line per connection.

The cap fits the descriptors: :func:`fd_budget` raises the soft ``RLIMIT_NOFILE`` to
the hard one, and the caps of the listeners are clamped to what that leaves after a
reserve for the process's own files.
"""

from __future__ import annotations

import array
import asyncio
import collections
import fcntl
import itertools
import logging
import resource
import socket
import termios
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

RESERVE = 16
EVICTION_SCAN = 16
"""Waiting connections looked at, oldest first, for one to close to make room."""
"""Connections let in over the cap, for the probes' paths only."""
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
FD_RESERVE = 128
"""Descriptors kept for the process itself: model files, logs, Redis, pipes."""

OVERFLOW_KEY = "fluxserve.overflow"
"""Set in the ASGI scope of a request that came on a connection let in over the cap."""


def _answer(status: str, code: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer in the error shape, ending the connection."""
    body = f'{{"error": {{"code": "{code}", "message": "{message}", "field": null}}}}'.encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_TIMEOUT = _answer("408 Request Timeout", "deadline_exceeded", "the request head came too late")
_FULL_MESSAGE = "too many open connections; retry shortly"
_ALIVE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b'content-length: 19\r\n\r\n{"status": "alive"}'
)
_FULL = _answer("503 Service Unavailable", "unavailable", _FULL_MESSAGE, "retry-after: 1\r\n")


class BurstLog:
    """One warning at the start of a burst of like events, then one line per
    ``interval`` with how many more came, until a quiet interval ends the burst."""

    def __init__(self, message: str, interval: float = 10.0) -> None:
        self.message = message
        self.interval = interval
        self.total = 0
        self._pending = 0
        self._timer: asyncio.TimerHandle | None = None

    def note(self, **extra: Any) -> None:
        self.total += 1
        if self._timer is not None:
            self._pending += 1
            return
        log.warning(self.message, extra={**extra, "count": 1, "total": self.total})
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush)

    def _flush(self) -> None:
        if self._pending == 0:
            self._timer = None  # a quiet interval: the burst is over
            return
        log.warning(
            self.message,
            extra={"count": self._pending, "total": self.total, "interval_s": self.interval},
        )
        self._pending = 0
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush)


class ConnectionGuard:
    """The connections of one listener: counted, the waiting ones in age order."""

    def __init__(
        self,
        name: str,
        max_connections: int,
        header_timeout: float,
        keep_alive: float = 5.0,
        log_interval: float = 10.0,
    ) -> None:
        self.name = name
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.keep_alive = keep_alive
        self.open: set[Any] = set()
        self.waiting: collections.OrderedDict[Any, None] = collections.OrderedDict()
        self.overflow = 0  # connections let in over the cap (probes only)
        self.refused = BurstLog(f"{name}: connections refused at --max-connections", log_interval)
        self.evicted = BurstLog(
            f"{name}: connections waiting for a request head closed to make room", log_interval
        )
        self.timed_out = BurstLog(f"{name}: request heads not received in time", log_interval)

    def admit(self) -> str:
        """``"open"``, ``"overflow"`` (probes only) or ``"refuse"`` for a new connection;
        at the cap, the oldest waiting connection is closed first. Connections being
        closed still hold their descriptors: all open ones stay under ``hard_cap``."""
        count = len(self.open)
        if count < self.max_connections:
            return "open"
        if count < self.hard_cap:
            for candidate in itertools.islice(self.waiting, EVICTION_SCAN):
                # Only one with nothing unread: a burst of new connections must not push
                # out one whose request is in its socket, accepted but not yet read.
                if candidate.unread() == 0:
                    del self.waiting[candidate]
                    self.evicted.note()
                    candidate.close_waiting()
                    return "open"
            if self.overflow < RESERVE:
                return "overflow"
        self.refused.note(open=count)
        return "refuse"

    @property
    def hard_cap(self) -> int:
        """Open connections, those being closed and those let in over the cap."""
        return self.max_connections + 2 * RESERVE

    @property
    def backlog(self) -> int:
        """The listen backlog, which is also how many connections asyncio accepts at
        once before any of them is looked at: their descriptors count too."""
        return min(2048, self.max_connections)


def descriptors_needed(cap: int) -> int:
    """The descriptors a listener with ``cap`` may hold at worst (see
    :class:`ConnectionGuard`)."""
    return cap + 2 * RESERVE + min(2048, cap)


def guarded_protocol(guard: ConnectionGuard, base: type[asyncio.Protocol] | None = None) -> type:
    """uvicorn's HTTP protocol class (httptools, else h11, as uvicorn's ``auto``) with the
    guard's deadline and cap; pass it as ``uvicorn.Config(http=...)``."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    name = f"Guarded{base.__name__}"
    return type(name, (_GuardedConnection, base), {"guard": guard, "__qualname__": name})


class _GuardedConnection:
    """What :func:`guarded_protocol` adds to uvicorn's protocol (the class before it in
    the method order, so ``super()`` is uvicorn's): ``guard`` is the class's guard."""

    guard: ConnectionGuard
    _deadline: asyncio.TimerHandle | None = None
    _headed: object = None  # the request cycle whose head has been seen
    _overflow = False
    _refused = False
    # uvicorn's protocol sets these.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    pipeline: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        guard = self.guard
        verdict = guard.admit()
        if verdict == "refuse":
            self._refused = True
            # Liveness is the loop answering: a probe is told so even now.
            alive = _peek(transport).startswith(b"GET /healthz ")
            transport.write(_ALIVE if alive else _FULL)
            transport.close()
            return
        super().connection_made(transport)  # type: ignore[misc]
        guard.open.add(self)
        if verdict == "overflow":
            self._overflow = True
            guard.overflow += 1
        self._wait(guard.header_timeout)

    def _wait(self, seconds: float) -> None:
        self.guard.waiting[self] = None
        self._deadline = self.loop.call_later(seconds, self._too_late)

    def _served(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not None and self.cycle is not self._headed:
            # A request's head is complete; its ASGI task is scheduled, not yet run,
            # so the scope can still say where the request came in.
            self._headed = self.cycle
            if self._overflow:
                self.cycle.scope[OVERFLOW_KEY] = True
            self._served()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing() and not self.pipeline:
            self._served()
            self._wait(self.guard.keep_alive + self.guard.header_timeout)

    def _too_late(self) -> None:
        self._deadline = None
        self.guard.waiting.pop(self, None)
        self.guard.timed_out.note()
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT)
            self.transport.close()

    def unread(self) -> int:
        """Bytes received and not yet read: a request on its way in."""
        return _unread(self.transport)

    def close_waiting(self) -> None:
        self._served()
        if not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._served()
        self.guard.open.discard(self)
        if self._overflow:
            self._overflow = False
            self.guard.overflow -= 1
        super().connection_lost(exc)  # type: ignore[misc]


class ProbesOnly:
    """ASGI: a connection let in over the cap is served for the probes' paths only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get(OVERFLOW_KEY)
            and scope.get("path") not in (PROBE_PATHS)
        ):
            body = _FULL.partition(b"\r\n\r\n")[2]
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", b"1"),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _unread(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    buffer = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buffer)
    except OSError:
        return 0
    return buffer[0]


def _peek(transport: asyncio.BaseTransport, size: int = 64) -> bytes:
    """The first bytes waiting in the connection's socket, left there."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return b""
    raw = socket.socket(sock.family, sock.type, fileno=sock.fileno())
    try:
        return raw.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:
        return b""
    finally:
        raw.detach()  # the descriptor stays the transport's


def fd_budget(wanted: dict[str, int]) -> dict[str, int]:
    """The connection caps ``wanted`` (listener name → cap) that the descriptors allow:
    the soft ``RLIMIT_NOFILE`` raised to the hard limit first, then every cap scaled
    down alike (logged) when their sum, the probes' reserve and ``FD_RESERVE`` exceed
    it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("RLIMIT_NOFILE not raised", extra={"soft": soft, "error": str(exc)})
    room = soft - FD_RESERVE
    if sum(descriptors_needed(cap) for cap in wanted.values()) <= room:
        return dict(wanted)
    scale = room / sum(descriptors_needed(cap) for cap in wanted.values())
    fitted = {name: max(1, int(cap * scale)) for name, cap in wanted.items()}
    log.warning(
        "--max-connections lowered to fit the file descriptor limit",
        extra={"rlimit_nofile": soft, "wanted": wanted, "caps": fitted},
    )
    return fitted


def accept_errors(
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
    interval: float = 10.0,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop exception handler that sums up asyncio's ``socket.accept() out of
    system resource`` (one line per burst, not one per accept) and passes the rest on."""
    burst = BurstLog("accept() out of system resource (file descriptors?)", interval)
    started = time.monotonic()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            burst.note(since_start_s=round(time.monotonic() - started))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handler
