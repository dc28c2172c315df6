"""`make help` lists every target that has a `## description`, digits in its name or not."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_make_help_lists_every_described_target() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("needs make")
    proc = subprocess.run(
        [make, "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    listed = set(re.findall(r"^\s+(?:\x1b\[[\d;]*m)?([\w-]+)", proc.stdout, re.MULTILINE))
    described = set(re.findall(r"^([^\s:$#]+):[^=\n]*## ", (ROOT / "Makefile").read_text(), re.M))
    assert "e2e" in described
    assert described <= listed, f"make help omits {sorted(described - listed)}"
