"""Shared fixtures: one tiny random FLUX pipeline per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flux_server.tools.tiny_model import write_tiny_flux


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_flux(tmp_path_factory.mktemp("tiny-flux"))


@pytest.fixture(scope="session")
def flux_pipe(tiny_flux_dir: Path) -> Any:
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_flux_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe
