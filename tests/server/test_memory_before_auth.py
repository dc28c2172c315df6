"""Memory before authentication, measured on a real server over 20 rounds (not one): ten
parallel messages just under ``--max-body-bytes`` without a key, gRPC then REST, leave
the server's RSS within 64 MiB of where it was.

What these guard against: an unauthenticated gRPC call's error kept its traceback, whose
frames reached back to the caller's frame holding the raw message; the error sat in a
reference cycle that only a full collection freed, so RSS rose ~50 MiB a round (602 →
1,517 MiB over 20 rounds of 10 x 15 MiB). A REST body was read and parsed whole (and
refused 422 for its size) before the key was checked.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from server_process import GRPC_BIG, ServerProcess, unthrottled_keyed_server, wait_rss_within

from flux_client.wire import pb

LIMIT = 16 * 1024 * 1024  # the default --max-body-bytes
ROUNDS = 20
PARALLEL = 10
MARGIN = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def keyed(server_factory: Any, tiny_model_dir: Path, tmp_path_factory: Any) -> ServerProcess:
    return unthrottled_keyed_server(
        server_factory, tiny_model_dir, tmp_path_factory.mktemp("keys"), LIMIT
    )


def _parallel(one: Callable[[], str]) -> set[str]:
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(one())) for _ in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return set(answers)


def _settled_rss(process: psutil.Process) -> int:
    """RSS once it stops falling (the debounced trim after a round has run)."""
    last = process.memory_info().rss
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = process.memory_info().rss
        if abs(now - last) < 1024 * 1024:
            return now
        last = now
    return last


def _rounds(server: ServerProcess, one: Callable[[], str], expected: str) -> None:
    """One warm-up round (the allocator's one-time pool for a round is in the baseline),
    then ``ROUNDS`` rounds; RSS must come back within ``MARGIN`` of the baseline."""
    process = psutil.Process(server.process.pid)
    assert _parallel(one) == {expected}
    before = _settled_rss(process)
    seen = []
    for _ in range(ROUNDS):
        assert _parallel(one) == {expected}
        seen.append(process.memory_info().rss >> 20)
    wait_rss_within(server.process.pid, before, MARGIN, 10, f"after each round {seen} MiB")


def test_grpc_messages_without_a_key_leave_memory_as_it_was(keyed: ServerProcess) -> None:
    message = pb.GenerateRequest(
        params=pb.GenerationParams(prompt="x" * (LIMIT - 64 * 1024))
    ).SerializeToString()
    assert LIMIT - 128 * 1024 < len(message) < LIMIT
    with grpc.insecure_channel(keyed.grpc_target, options=GRPC_BIG) as channel:
        call = channel.unary_unary("/fluxserve.v1.FluxService/Generate")

        def one() -> str:
            try:
                call(message, timeout=60)
            except grpc.RpcError as error:
                return str(error.code().name)
            return "OK"

        _rounds(keyed, one, "UNAUTHENTICATED")


def _post_without_key(server: ServerProcess, body: bytes) -> str:
    """POST /generate with ``body`` and no key over a plain socket; the status line's
    code. Sends until the server answers (as a client that reads while it writes)."""
    head = (
        f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as sock:
        sock.sendall(head)
        view, sent, answer = memoryview(body), 0, b""
        while b"\r\n" not in answer:
            readable, writable, _ = select.select([sock], [sock] if sent < len(body) else [], [])
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            elif writable:
                try:
                    sent += sock.send(view[sent : sent + 1024 * 1024])
                except (BrokenPipeError, ConnectionResetError):
                    sent = len(body)
    return answer.split(b" ", 2)[1].decode() if answer else "closed"


def test_rest_bodies_without_a_key_are_refused_unread(keyed: ServerProcess) -> None:
    body = json.dumps({"prompt": "x" * (LIMIT - 1024)}).encode()
    assert LIMIT - 2048 < len(body) < LIMIT
    _rounds(keyed, lambda: _post_without_key(keyed, body), "401")


def test_a_small_body_without_a_key_is_still_401_with_the_error_shape(
    keyed: ServerProcess,
) -> None:
    import httpx

    response = httpx.post(f"{keyed.url}/generate", json={"prompt": "a cat"}, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["field"] == "authorization"
    assert response.headers["x-request-id"]
