"""A real redis-server and real processes: fronts and workers on the tiny model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from features.redis_server import RedisServer
from server_process import ServerProcess, start_server


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def tiny_dir(tiny_flux_dir: Path) -> Path:
    """The run's tiny FLUX (tests/conftest.py)."""
    return tiny_flux_dir


def start_role(model: Path, logs: Path, redis_url: str, role: str, *extra: str) -> ServerProcess:
    return start_server(
        model,
        logs,
        ["--queue", redis_url, "--role", role, "--visibility-timeout", "2",
         "--no-warmup", *extra],
    )  # fmt: skip


def until(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return got
