"""Thousands of idle and slowloris connections, against a real server whose file
descriptor limit is lowered to 1,024 (so a few thousand loopback sockets exhaust it, as
~20,000 did at the default limit): ``/healthz`` and gRPC health keep answering, the
sockets are closed after ``--header-timeout``, and the server's log stays short.

Before the connection guard, a connection that sent nothing or a partial head was held
for ever; past the descriptor limit asyncio logged "accept() out of system resource" for
every accept, and neither port answered.
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_process import ServerProcess, start_server

HTTP_SOCKETS = 2_000  # under uvicorn's accept backlog (2,048): no SYN retries
GRPC_SOCKETS = 1_000
HEADER_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def guarded(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    yield from _serving(tiny_model_dir, tmp_path_factory, HEADER_TIMEOUT, 300, rlimit_nofile=1024)


def _serving(
    model: Path,
    tmp_path_factory: pytest.TempPathFactory,
    header_timeout: float,
    max_connections: int,
    rlimit_nofile: int | None = None,
) -> Iterator[ServerProcess]:
    server = start_server(
        model,
        tmp_path_factory.mktemp("logs"),
        ["--header-timeout", str(header_timeout), "--max-connections", str(max_connections)],
        rlimit_nofile=rlimit_nofile,
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def many_sockets() -> Iterator[None]:
    """Room in this process for the attack's sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = HTTP_SOCKETS + GRPC_SOCKETS + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is under the {wanted} sockets needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open(port: int, count: int, partial: bytes | None) -> list[socket.socket]:
    """``count`` non-blocking connections to ``port``; each sends ``partial`` (a head
    that never ends) once connected, or nothing."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    if partial is not None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                _ready(sock, select.POLLOUT, 1.0)
                sock.send(partial)
    return sockets


def _ready(sock: socket.socket, events: int, timeout: float) -> bool:
    """poll(2), not select(2): these descriptors are past select's 1,024."""
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(timeout * 1000))


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        if not _ready(sock, select.POLLIN | select.POLLHUP | select.POLLERR, 0):
            return False
        while chunk := sock.recv(65536):
            del chunk
        return True
    except BlockingIOError:
        return False
    except OSError:  # reset, refused: closed all the same
        return True


def _established(process: psutil.Process) -> int:
    return sum(1 for c in process.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED)


def _half_open(port: int) -> int:
    """Connections to ``port`` the server has not taken yet: those in its listener's
    accept queue and those still in the handshake (SYN_RECV), from /proc/net/tcp."""
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rpartition(":")[2], 16) != port:
            continue
        if fields[3] == "0A":  # LISTEN: rx_queue is the accept queue's length
            waiting += int(fields[4].partition(":")[2], 16)
        elif fields[3] == "03":  # SYN_RECV
            waiting += 1
    return waiting


def _settle(server: ServerProcess) -> None:
    """Wait until the last attack's connections are all gone on the server's side.
    Sockets the kernel completes after the client closed them (those past the accept
    backlog finish their handshake late) still reach the server as new connections:
    at the cap, they would make room by closing a later test's waiting connection."""
    process = psutil.Process(server.process.pid)
    deadline, quiet_since = time.monotonic() + 60, None
    while True:
        held = sum(1 for c in process.net_connections("tcp") if c.laddr.port == server.http_port)
        busy = held > 8 or _half_open(server.http_port) > 0
        now = time.monotonic()
        if busy:
            quiet_since = None
            assert now < deadline, f"the server still holds {held} attack connections"
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= 1.0:
            return
        time.sleep(0.1)


def _grpc_serving(target: str) -> bool:
    """gRPC health, as a probe with retries sees it: at gRPC's cap a new connection is
    closed until the idle ones reach their handshake deadline (``--header-timeout``)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(
            health_pb2.HealthCheckRequest(service=""),
            timeout=HEADER_TIMEOUT * 2 + 3,
            wait_for_ready=True,
        )
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def test_idle_and_slow_sockets_leave_the_server_answering(
    guarded: ServerProcess, many_sockets: None
) -> None:
    lines_before = len(guarded.log().splitlines())
    slow = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
    attack = _open(guarded.http_port, HTTP_SOCKETS // 2, None)
    attack += _open(guarded.http_port, HTTP_SOCKETS // 2, slow)
    attack += _open(guarded.grpc_port, GRPC_SOCKETS, None)
    try:
        started = time.monotonic()
        # Answering while the sockets are open: well within the head deadline.
        assert httpx.get(f"{guarded.url}/healthz", timeout=5).status_code == 200
        assert _grpc_serving(guarded.grpc_target)
        answered = time.monotonic() - started
        assert answered < HEADER_TIMEOUT * 2 + 3, f"probes took {answered:.1f} s"
        # The server lets go of every attack connection: HTTP ones after the head deadline
        # (or earlier, to make room), gRPC ones after the handshake deadline. (Counted on
        # the server's side: sockets still in the kernel's accept queue, or still
        # retrying their SYN, hold none of its descriptors.)
        server = psutil.Process(guarded.process.pid)
        deadline = time.monotonic() + HEADER_TIMEOUT * 3 + 20
        while (held := _established(server)) > 8:
            assert time.monotonic() < deadline, f"the server still holds {held} connections"
            time.sleep(0.2)
        closed = sum(_closed_by_server(sock) for sock in attack)
        assert closed >= len(attack) // 2, f"only {closed} of {len(attack)} sockets were closed"
        assert httpx.get(f"{guarded.url}/readyz", timeout=5).status_code == 200
        assert _grpc_serving(guarded.grpc_target)
    finally:
        for sock in attack:
            sock.close()
        _settle(guarded)
    lines = guarded.log().splitlines()[lines_before:]
    assert len(lines) <= 30, "\n".join(lines[:40])
    assert not any("out of system resource" in line for line in lines), lines[:5]


def test_a_whole_request_on_a_new_connection_is_served(guarded: ServerProcess) -> None:
    # The deadline is for the head only: a normal request is not touched.
    response = httpx.get(f"{guarded.url}/presets", timeout=10)
    assert response.status_code == 200


def test_a_head_that_never_ends_gets_408(guarded: ServerProcess) -> None:
    _settle(guarded)
    with socket.create_connection(("127.0.0.1", guarded.http_port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = sock.recv(4096)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code": "deadline_exceeded"' in answer
    assert HEADER_TIMEOUT - 0.5 < waited < HEADER_TIMEOUT + 3


# --- gRPC: silent sockets make room ------------------------------------------------------

GRPC_CAP = 64
LONG_HANDSHAKE = 60.0


@pytest.fixture(scope="module")
def long_handshake(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A handshake deadline far beyond the test: what frees gRPC's cap is not it."""
    yield from _serving(tiny_model_dir, tmp_path_factory, LONG_HANDSHAKE, GRPC_CAP)


def _health_once(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def test_silent_grpc_sockets_at_the_cap_make_room_for_health(
    long_handshake: ServerProcess,
) -> None:
    """Before the sweeper, gRPC's core held the silent sockets until their handshake
    deadline (60 s here) and refused every new connection: health did not answer."""
    attack = _open(long_handshake.grpc_port, GRPC_CAP * 4, None)
    try:
        server = psutil.Process(long_handshake.process.pid)
        deadline = time.monotonic() + 20
        while _established(server) < GRPC_CAP * 3 // 4:  # the core has taken its fill
            assert time.monotonic() < deadline, "the silent sockets never reached the server"
            time.sleep(0.1)
        deadline = time.monotonic() + LONG_HANDSHAKE / 3
        while not _health_once(long_handshake.grpc_target):
            assert time.monotonic() < deadline, "gRPC health stayed refused at the cap"
            time.sleep(0.2)
        closed = sum(_closed_by_server(sock) for sock in attack)
        assert closed >= GRPC_CAP // 2, f"only {closed} silent sockets were closed"
    finally:
        for sock in attack:
            sock.close()
    swept = [
        r for r in long_handshake.log_records() if "sent no HTTP/2 preface" in str(r.get("message"))
    ]
    assert 1 <= len(swept) <= 3, swept  # one line per burst
