"""Test inputs that take seconds to build (tiny random models), built once per test run
and shared by every test folder and every pytest-xdist worker.

The first worker to ask builds into a scratch folder beside the target and renames it into
place while it holds a file lock; the others wait on the lock and then read the finished
folder. The folder is named by the builder's inputs, so two different inputs never share
one. It lives under the run's own base temporary directory: nothing outlives the run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base temporary directory of the whole run: under xdist each worker's base
    (``.../popen-gw0``) sits in the run's, so its parent is shared by the workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """The folder ``build(folder)`` fills, built at most once per run under ``name``
    (which must name every input of the build)."""
    root = run_dir(tmp_path_factory) / "built-once"
    root.mkdir(exist_ok=True)
    target = root / name
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            scratch = root / f"{name}.partial-{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)
            build(scratch)
            # A reader never sees a half-written folder: it appears whole, or not at all.
            scratch.rename(target)
    return target
