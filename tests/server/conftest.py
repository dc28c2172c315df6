"""Fixtures shared by the server tests: the run's tiny random FLUX pipeline, and real
server processes (``python -m flux_server``) on free ports."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from server_process import ServerProcess, start_server

from flux_client.presets import StylePreset, presets_to_files


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_flux_dir: Path) -> Path:
    """The server tests' name for the run's tiny FLUX pipeline (tests/conftest.py)."""
    return tiny_flux_dir


@pytest.fixture(scope="session")
def presets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("presets")
    presets = {
        "cyberpunk": StylePreset(
            prompt_template="{prompt}, cyberpunk, neon", negative_prompt="washed out"
        ),
        "sketch": StylePreset(prompt_template="pencil sketch of {prompt}", steps=3),
    }
    for name, content in presets_to_files(presets).items():
        (directory / name).write_text(content)
    return directory


@pytest.fixture(scope="module")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[object]:
    started: list[ServerProcess] = []
    log_dir = tmp_path_factory.mktemp("server-logs")

    def factory(
        model: Path | str,
        args: Sequence[str] = (),
        wait: bool = True,
        env: Mapping[str, str] | None = None,
        fresh: bool = False,
    ) -> ServerProcess:
        server = start_server(model, log_dir, args, env, fresh=fresh)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield factory
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
