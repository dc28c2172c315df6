"""Dataset sources: a folder, archives, fsspec URLs, a git repository at a pinned
revision; each failure says what to do."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import fsspec
import pytest

from flux_trainer import dataset
from flux_trainer.errors import DatasetError, MissingDependencyError
from flux_trainer.sources import fetch, parse_git_source


def _git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "HOME": str(cwd),
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def repo(posters: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A git repository holding the posters under data/: (path, first commit, tag v2)."""
    if shutil.which("git") is None:
        pytest.skip("no git program")
    root = tmp_path / "repo"
    shutil.copytree(posters, root / "data")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "posters")
    first = _git(root, "rev-parse", "HEAD")
    (root / "data" / "images" / "poster-000.png").unlink()
    _git(root, "commit", "-q", "-am", "one less")
    _git(root, "tag", "v2")
    return root, first, _git(root, "rev-parse", "HEAD")


def test_a_git_source_checks_out_the_pinned_revision(
    repo: tuple[Path, str, str], posters: Path, tmp_path: Path
) -> None:
    root, first, _ = repo
    local = fetch(f"git+file://{root}@{first}#subdirectory=data", tmp_path / "work")
    assert local.revision == first
    assert dataset.load(local.root, 64, 0.1).sha256 == dataset.load(posters, 64, 0.1).sha256


def test_a_git_tag_records_its_commit(repo: tuple[Path, str, str], tmp_path: Path) -> None:
    root, _, tagged = repo
    local = fetch(f"git+file://{root}@v2#subdirectory=data", tmp_path / "work")
    assert local.revision == tagged
    assert not (local.root / "images" / "poster-000.png").exists()


def test_a_git_source_without_a_revision_is_refused(repo: tuple[Path, str, str]) -> None:
    root, _, _ = repo
    with pytest.raises(DatasetError, match="no pinned revision; append @COMMIT or @TAG"):
        fetch(f"git+file://{root}", root.parent / "work")


def test_git_urls_with_users_and_slashes_in_tags_parse() -> None:
    assert parse_git_source("git+ssh://git@example.com/org/data.git@release/v1") == (
        "ssh://git@example.com/org/data.git",
        "release/v1",
        None,
    )
    with pytest.raises(DatasetError, match="no pinned revision"):
        parse_git_source("git+ssh://git@example.com/org/data.git")
    with pytest.raises(DatasetError, match="#subdirectory=DIR"):
        parse_git_source("git+https://example.com/data.git@v1#egg=x")


def test_an_unknown_revision_is_named(repo: tuple[Path, str, str], tmp_path: Path) -> None:
    root, _, _ = repo
    with pytest.raises(DatasetError, match="git checkout failed"):
        fetch(f"git+file://{root}@v9", tmp_path / "work")


def test_an_fsspec_folder_and_archive(posters: Path, tmp_path: Path) -> None:
    memory = fsspec.filesystem("memory")
    for path in posters.rglob("*"):
        if path.is_file():
            memory.pipe(
                f"/bucket/posters/{path.relative_to(posters).as_posix()}", path.read_bytes()
            )
    expected = dataset.load(posters, 64, 0.1).sha256
    local = fetch("memory://bucket/posters", tmp_path / "work")
    assert dataset.load(local.root, 64, 0.1).sha256 == expected
    archive = tmp_path / "posters.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(posters.rglob("*")):
            zipped.write(path, path.relative_to(posters).as_posix())
    memory.pipe("/bucket/posters.zip", archive.read_bytes())
    local = fetch("memory://bucket/posters.zip", tmp_path / "work2")
    assert dataset.load(local.root, 64, 0.1).sha256 == expected
    with pytest.raises(DatasetError, match="no such folder or archive"):
        fetch("memory://bucket/nothing", tmp_path / "work3")


def test_s3_without_s3fs_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if it were not installed
    # fsspec keeps the class of a protocol once imported (an earlier test in this process
    # may have used S3): forget it for this test.
    registry = importlib.import_module("fsspec.registry")
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    with pytest.raises(MissingDependencyError) as info:
        fetch("s3://bucket/posters.tar", tmp_path / "work")
    assert "s3:// needs the s3fs package (pip install 'fluxserve[s3]')" in str(info.value)


def test_local_source_problems(posters: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        fetch(str(tmp_path / "nowhere"), tmp_path / "work")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="a file that is not an archive"):
        fetch(str(tmp_path / "notes.txt"), tmp_path / "work")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no metadata\.jsonl at its top"):
        fetch(str(tmp_path / "empty"), tmp_path / "work")


def test_an_archive_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../escaped.txt", "x")
    with pytest.raises(DatasetError, match="leaves the folder"):
        fetch(str(archive), tmp_path / "work")
    assert not (tmp_path / "escaped.txt").exists()
