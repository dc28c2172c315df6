from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from real_server import Server, running_server
from wire_fakes import FakeServers, running_fake_servers


@pytest.fixture(scope="module")
def fake_servers() -> Iterator[FakeServers]:
    """The fake gRPC and REST servers, shared by a module's tests."""
    with running_fake_servers() as servers:
        yield servers


@pytest.fixture
def fakes(fake_servers: FakeServers) -> Iterator[FakeServers]:
    """The fake servers with a clean script."""
    fake_servers.script.reset()
    yield fake_servers
    fake_servers.script.reset()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_flux_dir: Path) -> Iterator[Server]:
    """One real server process for every SDK test that needs one."""
    yield from running_server(tmp_path_factory, tiny_flux_dir)
