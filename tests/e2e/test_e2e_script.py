"""`make e2e` cannot run here (no Docker engine, no kind): check what can be checked.

The script and the hack/ scripts pass shellcheck, and without its tools the e2e run
names every missing one and exits non-zero instead of half-running.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "tests" / "e2e" / "run.sh", *sorted((ROOT / "hack").glob("*.sh"))]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shellcheck_clean(script: Path) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "shellcheck"), "--severity=style", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_e2e_without_its_tools_says_what_is_missing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(ROOT / "tests" / "e2e" / "run.sh")],
        # Nothing on PATH, and a tools dir without helm/kubectl.
        env={"PATH": str(tmp_path), "TOOLS_BIN": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("e2e: cannot run, missing:")
    for tool in ("docker", "kind", "helm", "kubectl"):
        assert tool in first, first
    assert "==>" not in proc.stdout, "it must stop before creating anything"
