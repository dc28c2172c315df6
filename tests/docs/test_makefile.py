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


def test_system_tools_say_plainly_when_they_cannot_be_installed(tmp_path: Path) -> None:
    """Without apt-get (or as a user), `make tools` names what to install and goes on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"needs {tool}")
        (bin_dir / tool).symlink_to(found)
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "hack" / "install-system-tools.sh")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "not installing jq prometheus (needs root and apt-get here)" in proc.stderr
