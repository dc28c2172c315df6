"""The install the README documents: the extras it names exist, the torch pin is the
Makefile's, and a wheel builds from the repository with what each part needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text()))


def _install_section() -> str:
    start = README.index("## Installing")
    return README[start : README.index("\n## ", start + 1)]


def test_the_extras_the_readme_names_exist() -> None:
    named = set()
    for group in re.findall(r"(?:\.|fluxserve)\[([\w,]+)\]", README):
        named.update(group.split(","))
    named.update(re.findall(r"`\[(\w+)\]`", _install_section()))
    extras = set(_pyproject()["project"]["optional-dependencies"])
    assert {"server", "operator"} <= named
    assert named <= extras, f"the README names extras pyproject.toml lacks: {named - extras}"


def test_the_readme_pins_the_torch_the_makefile_installs() -> None:
    pinned = re.search(r"^TORCH_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pinned is not None
    assert f"pip install torch=={pinned[1]} " in _install_section()


@pytest.mark.slow
def test_a_wheel_builds_with_every_part(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "Dockerfile")
    for part in ("contract", "client", "server", "operator", "trainer"):
        shutil.copytree(ROOT / part, source / part, ignore=skip)
    # As the README's `python -m pip wheel --no-deps . -w dist`, with the build backend
    # already installed rather than fetched into an isolated environment.
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [*command, "-q", ".", "-w", "dist"],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = _pyproject()["project"]["version"]
    wheel = source / "dist" / f"fluxserve-{version}-py3-none-any.whl"
    assert f"dist/{wheel.name}" in README, "the README names another wheel file"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"fluxserve-{version}.dist-info/METADATA").decode()
    assert set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M)) >= {"server", "operator"}
    for needed in (
        "flux_contract/_proto/fluxserve/v1/fluxserve_pb2.pyi",
        "flux_client/__init__.py",
        "flux_server/__main__.py",
        "flux_server/data/blocklist.txt",
        "flux_operator/__main__.py",
        "flux_trainer/__main__.py",
    ):
        assert needed in names, f"the wheel lacks {needed}"
