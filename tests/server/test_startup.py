"""Start-up as a newcomer meets it, with real processes: a busy port, a missing extra,
``--help``, and two servers side by side on one machine."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from server_process import ServerProcess, start_server


def run_server(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m flux_server ARGS`` (after ``prelude``, Python run in the process first)."""
    code = f"{prelude}\nimport runpy, sys\nsys.argv = ['flux_server', *{list(args)!r}]\n"
    code += "runpy.run_module('flux_server', run_name='__main__', alter_sys=True)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port", "--metrics-port"])
def test_a_busy_port_is_one_line_naming_the_flag(flag: str, busy_port: int, tmp_path: Path) -> None:
    ports = {"--http-port": "0", "--grpc-port": "0", flag: str(busy_port)}
    # No model there: the port is refused before any load is tried.
    result = run_server(
        "--model", str(tmp_path / "no-model"), "--host", "127.0.0.1",
        *(part for item in ports.items() for part in item),
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr == f"flux_server: {flag} {busy_port} is in use\n"
    assert result.stdout == ""


@pytest.mark.parametrize("module", ["torch", "fastapi"])
def test_a_missing_server_extra_names_the_install_command(module: str) -> None:
    result = run_server("--model", "x", prelude=f"import sys; sys.modules[{module!r}] = None")
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'fluxserve[server]'" in lines[0] and module in lines[0]


def test_help_lists_the_keys_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flux_server", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "python -m flux_server keys {add,list,remove}" in result.stdout
    flat = " ".join(result.stdout.split())
    assert "--metrics-port METRICS_PORT A separate Prometheus port; 0 = none" in flat
    assert "[env FLUXSERVE_METRICS_PORT] (default: 0)" in flat


def test_two_servers_side_by_side_with_the_default_metrics_port(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # One exec'd, one forked from the tests' preloaded process (tests/support/forked.py):
    # they must answer alike, or the forked servers the other tests use prove nothing.
    servers: list[ServerProcess] = []
    pixels = []
    try:
        for fresh in (True, False):
            servers.append(start_server(tiny_model_dir, tmp_path, metrics_port=False, fresh=fresh))
        for server in servers:
            server.wait_ready()
            # The metrics are on the REST port; no second port is taken.
            scrape = httpx.get(f"{server.url}/metrics", timeout=30)
            assert scrape.status_code == 200 and "fluxserve_ready 1.0" in scrape.text
            listening = [r for r in server.log_records() if r.get("message") == "listening"]
            assert listening and listening[0]["fluxserve.detail.metrics_port"] == 0, server.log()
            body = {"prompt": "a heron", "seed": 11}
            reply = httpx.post(f"{server.url}/generate", json=body, timeout=120)
            assert reply.status_code == 200, reply.text
            pixels.append(Image.open(io.BytesIO(reply.content)).tobytes())
    finally:
        for server in servers:
            server.stop()
    assert not any(server.tracebacks() for server in servers)
    assert pixels[0] == pixels[1]


def test_listening_log_names_the_bound_ports(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = start_server(tiny_model_dir, tmp_path)
    try:
        server.wait_ready()
        listening = next(r for r in server.log_records() if r.get("message") == "listening")
        assert (
            listening["fluxserve.detail.http_port"],
            listening["fluxserve.detail.grpc_port"],
            listening["fluxserve.detail.metrics_port"],
        ) == (
            server.http_port,
            server.grpc_port,
            server.metrics_port,
        )
        scrape = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30)
        assert "fluxserve_ready 1.0" in scrape.text
    finally:
        assert server.stop() == 0
