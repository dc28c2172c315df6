"""A real redis-server and real processes: fronts and workers on the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
