"""Where a dataset comes from, made into a local folder: a folder (used in place), an
archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .zip; extracted), an fsspec URL such as
``s3://bucket/prefix`` or ``s3://bucket/posters.tar`` (copied; s3fs for S3), or a git
repository at a pinned revision (``git+https://host/repo.git@v3``, optionally
``#subdirectory=DIR``; cloned and checked out)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from flux_trainer.errors import DatasetError, MissingDependencyError

METADATA = "metadata.jsonl"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
ARCHIVE_SUFFIXES = (*TAR_SUFFIXES, ".zip")
GIT_TIMEOUT_S = 600


@dataclass(frozen=True)
class LocalDataset:
    """A dataset as a local folder, with where it came from."""

    root: Path
    source: str
    revision: str | None = None  # the commit, for a git source


def fetch(source: str, workdir: Path) -> LocalDataset:
    """Make ``source`` a local folder holding ``metadata.jsonl``; downloads and
    extractions go under ``workdir`` (emptied first)."""
    if source.startswith("git+"):
        return _from_git(source, workdir)
    if "://" in source and not source.startswith("file://"):
        return _from_fsspec(source, workdir)
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {source!r}: {path} does not exist")
    if path.is_dir():
        return LocalDataset(_dataset_root(path, source), source)
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return LocalDataset(_dataset_root(_extract(path, _fresh(workdir)), source), source)
    raise DatasetError(
        f"dataset {source!r}: a file that is not an archive ({', '.join(ARCHIVE_SUFFIXES)})"
    )


def _fresh(workdir: Path) -> Path:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    return workdir


def _dataset_root(path: Path, source: str) -> Path:
    """The folder holding metadata.jsonl: ``path`` itself or its only sub-folder (how an
    archive of a folder unpacks)."""
    if (path / METADATA).is_file():
        return path
    children = [c for c in path.iterdir() if not c.name.startswith(".")]
    if len(children) == 1 and (children[0] / METADATA).is_file():
        return children[0]
    raise DatasetError(
        f"dataset {source!r}: no {METADATA} at its top (or in its only folder); the "
        f"imagefolder layout is images plus {METADATA} with file_name and text per line"
    )


def _extract(archive: Path, into: Path) -> Path:
    target = into / "extracted"
    target.mkdir()
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, target)
        else:
            with tarfile.open(archive) as tar:
                # The "data" filter refuses absolute paths, links out of the folder and
                # device files: an archive cannot write outside ``target``.
                tar.extractall(target, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"archive {archive.name}: cannot extract: {exc}") from exc
    return target


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.namelist():
            parts = PurePosixPath(member).parts
            if member.startswith("/") or ".." in parts:
                raise DatasetError(f"archive {archive.name}: member {member!r} leaves the folder")
        zipped.extractall(target)


def _from_fsspec(source: str, workdir: Path) -> LocalDataset:
    fs, path = filesystem(source)
    into = _fresh(workdir)
    try:
        if path.lower().endswith(ARCHIVE_SUFFIXES):
            local = into / PurePosixPath(path).name
            fs.get_file(path, str(local))
            return LocalDataset(_dataset_root(_extract(local, into), source), source)
        if not fs.isdir(path):
            raise DatasetError(f"dataset {source!r}: no such folder or archive")
        local = into / "copy"
        fs.get(path.rstrip("/") + "/", str(local), recursive=True)
    except DatasetError:
        raise
    except Exception as exc:  # each filesystem raises its own types; all mean "unreadable"
        raise DatasetError(f"dataset {source!r}: cannot copy it: {exc}") from exc
    return LocalDataset(_dataset_root(local, source), source)


def filesystem(source: str, what: str = "dataset") -> tuple[Any, str]:
    """The fsspec filesystem of a URL and the path in it; a missing package (s3fs for
    s3://) is named."""
    import fsspec
    from fsspec.registry import known_implementations

    protocol = source.split("://", 1)[0]
    try:
        fs, path = fsspec.core.url_to_fs(source)
    except ImportError as exc:
        # fsspec names the class it could not import ("s3fs.S3FileSystem"): its
        # package is what to install.
        implementation = known_implementations.get(protocol, {}).get("class", "")
        package = implementation.split(".", 1)[0] or protocol
        extra = " (pip install 'fluxserve[s3]')" if package == "s3fs" else ""
        raise MissingDependencyError(
            f"{what} {source!r}: {protocol}:// needs the {package} package{extra}"
        ) from exc
    except ValueError as exc:
        raise DatasetError(f"{what} {source!r}: {exc}") from exc
    return fs, path


def parse_git_source(source: str) -> tuple[str, str, str | None]:
    """``git+URL@REVISION[#subdirectory=DIR]`` → (URL, REVISION, DIR); a source without a
    revision is refused: a training run must name the exact data it learnt from."""
    spec, _, fragment = source.removeprefix("git+").partition("#")
    subdirectory = None
    if fragment:
        key, _, value = fragment.partition("=")
        if key != "subdirectory" or not value:
            raise DatasetError(f"dataset {source!r}: the fragment must be #subdirectory=DIR")
        subdirectory = value
    parts = urlsplit(spec)
    if not parts.scheme or not parts.path:
        raise DatasetError(f"dataset {source!r}: expected git+SCHEME://HOST/PATH@REVISION")
    path, at, revision = parts.path.rpartition("@")
    if not at or not revision:
        raise DatasetError(
            f"dataset {source!r}: no pinned revision; append @COMMIT or @TAG to the "
            "repository URL (git+https://host/repo.git@v1.0)"
        )
    url = parts._replace(path=path).geturl()
    return url, revision, subdirectory


def _from_git(source: str, workdir: Path) -> LocalDataset:
    url, revision, subdirectory = parse_git_source(source)
    into = _fresh(workdir) / "repo"
    _git(source, None, "clone", "--quiet", "--no-checkout", url, str(into))
    _git(source, into, "checkout", "--quiet", "--detach", revision)
    commit = _git(source, into, "rev-parse", "HEAD").strip()
    root = into / subdirectory if subdirectory else into
    if not root.resolve().is_relative_to(into.resolve()) or not root.is_dir():
        raise DatasetError(f"dataset {source!r}: no folder {subdirectory!r} at {revision}")
    return LocalDataset(_dataset_root(root, source), source, revision=commit)


def _git(source: str, cwd: Path | None, *args: str) -> str:
    if shutil.which("git") is None:
        raise MissingDependencyError(f"dataset {source!r}: a git source needs the git program")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=env,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DatasetError(f"dataset {source!r}: git {args[0]} took over {GIT_TIMEOUT_S}s") from exc
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        raise DatasetError(f"dataset {source!r}: git {args[0]} failed: {detail}")
    return proc.stdout
