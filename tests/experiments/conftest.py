"""A real redis-server for the feedback store's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from features.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight FLUX pipeline saved with save_pretrained (loaded like FLUX.1-dev)."""
    from flux_server.tools.tiny_model import write_tiny_flux

    return write_tiny_flux(tmp_path_factory.mktemp("tiny-flux"))
