"""Fixtures every test folder shares: the tiny random models, each built once per run
(and shared by the pytest-xdist workers), never written to by a test; and how
``make test`` spreads the modules over the workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from built_once import built_once

TINY_FLUX_SEED = 0
TINY_VQA_SEED = 0


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight FLUX pipeline saved with save_pretrained (loaded like FLUX.1-dev)."""

    def build(out: Path) -> None:
        from flux_server.tools.tiny_model import write_tiny_flux

        write_tiny_flux(out, size="tiny", seed=TINY_FLUX_SEED)

    return built_once(tmp_path_factory, f"tiny-flux-tiny-seed{TINY_FLUX_SEED}", build)


@pytest.fixture(scope="session")
def tiny_vqa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BLIP VQA model and its processor."""

    def build(out: Path) -> None:
        from flux_server.tools.tiny_vqa import write_tiny_vqa

        write_tiny_vqa(out, seed=TINY_VQA_SEED)

    return built_once(tmp_path_factory, f"tiny-vqa-seed{TINY_VQA_SEED}", build)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``make test`` (``-n N --dist loadfile``): each module on one worker, modules
    sharing a session process together, the slowest first (tests/support)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from module_scheduling import ModuleScheduling

    return ModuleScheduling(config, log)
