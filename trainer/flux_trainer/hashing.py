"""Content hashes: of one file, and of a dataset as the sorted list of its files.

A dataset's hash is the sha256 of the lines ``<sha256 of the file>  <relative path>\\n``,
one per file, sorted by path (bytewise), over every regular file under its root except
hidden ones (``.git``, ``.DS_Store``): the output ``sha256sum`` gives, so

    cd DATASET && find . -type f ! -path '*/.*' | sed 's|^\\./||' | LC_ALL=C sort \\
        | xargs -d '\\n' sha256sum | sha256sum

prints the same hash. The same files give the same hash whether they came from a
folder, an archive, S3 or git.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_files(root: Path) -> list[str]:
    """Relative POSIX paths of the dataset's files, sorted bytewise; hidden files and
    folders are not part of a dataset."""
    root = Path(root)
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file():
            found.append(relative.as_posix())
    return sorted(found, key=lambda name: name.encode())


def dataset_sha256(root: Path, file_hashes: dict[str, str] | None = None) -> str:
    """The dataset's hash (see the module's docstring). ``file_hashes`` (relative path →
    sha256) saves re-reading files already hashed."""
    known = file_hashes or {}
    digest = hashlib.sha256()
    for name in dataset_files(root):
        value = known.get(name) or file_sha256(Path(root) / name)
        digest.update(f"{value}  {name}\n".encode())
    return digest.hexdigest()
