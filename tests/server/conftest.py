"""Fixtures shared by the server tests: one tiny random FLUX pipeline per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flux_server.tiny_model import write_tiny_flux

    return write_tiny_flux(tmp_path_factory.mktemp("tiny-flux"))
