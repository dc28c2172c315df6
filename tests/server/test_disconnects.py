"""Clients that go away, against a real server: a body cut short is a client disconnect
(``code="499"``, logged at info, no traceback), never a server error; an idle keep-alive
connection is closed after ``--keep-alive-timeout``."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess


@pytest.fixture(scope="module")
def server(server_factory: Any, tiny_model_dir: Path) -> ServerProcess:
    started: ServerProcess = server_factory(
        tiny_model_dir, ["--keep-alive-timeout", "1", "--log-level", "info"]
    )
    return started


def _requests(server: ServerProcess, path: str) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics").text
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fluxserve_requests_total" and sample.labels["endpoint"] == path
    }


def _half_a_body(
    server: ServerProcess, path: str, content_type: str, start: bytes, request_id: str
) -> None:
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"X-Request-Id: {request_id}\r\nContent-Length: 100000\r\n\r\n"
        )
        sock.sendall(head.encode() + start + b"a" * 40_000)
        time.sleep(0.2)  # let the server start reading the body
    # closed mid-body


def _wait(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


@pytest.mark.parametrize(
    ("path", "content_type", "start"),
    [
        ("/generate", "application/json", b'{"prompt": "'),
        (
            "/vqa",
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n",
        ),
    ],
)
def test_an_aborted_upload_is_a_client_disconnect(
    server: ServerProcess, path: str, content_type: str, start: bytes
) -> None:
    rid = f"aborted{path.replace('/', '-')}"
    _half_a_body(server, path, content_type, start, rid)
    codes = _wait(lambda: _requests(server, f"rest:{path}").get("499"), "the 499 count")
    assert codes == 1
    assert "500" not in _requests(server, f"rest:{path}")
    records = _wait(
        lambda: [r for r in server.log_records() if r.get("trace.id") == rid], "its log line"
    )
    assert [(r["log.level"], r["message"]) for r in records] == [("info", "client went away")]
    assert not server.tracebacks()


def test_idle_keep_alive_connections_are_closed(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        answer = b""
        while b"alive" not in answer:
            answer += sock.recv(65536)
        assert b"200 OK" in answer
        started = time.monotonic()
        assert sock.recv(65536) == b""  # the server closed it
        assert time.monotonic() - started < 8
