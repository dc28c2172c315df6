"""Fixtures of the trainer's tests: a tiny random FLUX (the server's tiny model
builder, no hub), a synthetic poster dataset, and trainer subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from flux_trainer.posters import write_posters


@pytest.fixture(scope="session")
def tiny_flux(tiny_flux_dir: Path) -> Path:
    """The run's tiny FLUX (tests/conftest.py): the trainer only reads it."""
    return tiny_flux_dir


@pytest.fixture(scope="session")
def posters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 posters at 64 px wide (every third one 64x80), the last 4 held out."""
    return write_posters(tmp_path_factory.mktemp("posters") / "posters")


def trainer_env() -> dict[str, str]:
    # One intra-op thread: a tiny model's ops are too small to share, and on a loaded
    # two-core machine the second thread only waits. Both runs of a resume comparison
    # must use the same count anyway (a reduction's order depends on it).
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSERVE_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def trainer_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flux_trainer", *args]


def run_trainer(args: Sequence[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        trainer_command(*args),
        capture_output=True,
        text=True,
        env=trainer_env(),
        timeout=timeout,
        check=False,
    )


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The result JSON: the last line of stdout."""
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no result printed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return dict(json.loads(lines[-1]))


def log_events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
