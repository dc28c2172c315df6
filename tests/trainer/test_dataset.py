"""The dataset checks made before any compute: each problem named, the content hash
stable, the split reproducible."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from flux_trainer import dataset
from flux_trainer.errors import DatasetError
from flux_trainer.hashing import dataset_sha256
from flux_trainer.posters import write_posters
from flux_trainer.sources import fetch

RESOLUTION = 64


def _copy(posters: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(posters, tmp_path / "data"))


def _rewrite(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = root / "metadata.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records = edit(records)
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))


def _problems(root: Path, resolution: int = RESOLUTION) -> str:
    with pytest.raises(DatasetError) as info:
        dataset.load(root, resolution, 0.1)
    return str(info.value)


def test_the_posters_pass_with_their_marked_split(posters: Path) -> None:
    data = dataset.load(posters, RESOLUTION, 0.1)
    assert (len(data.train), len(data.validation)) == (20, 4)
    assert all(e.split == "validation" for e in data.validation)
    caption = data.train[0].caption
    assert caption.startswith("a poster of a ") and caption.endswith(
        ". brand red promo tag in the top right corner; product centred"
    )


def test_a_missing_caption_is_named(posters: Path, tmp_path: Path) -> None:
    root = _copy(posters, tmp_path)
    _rewrite(root, lambda rs: [{**r, "text": ""} if i == 2 else r for i, r in enumerate(rs)])
    message = _problems(root)
    assert "metadata.jsonl line 3 (images/" in message
    assert "missing caption: field 'text'" in message


def test_an_image_without_a_line_is_a_missing_caption(posters: Path, tmp_path: Path) -> None:
    root = _copy(posters, tmp_path)
    Image.new("RGB", (64, 64), "blue").save(root / "images" / "stray.png")
    assert "images/stray.png: missing caption (no line in metadata.jsonl)" in _problems(root)


def test_unreadable_and_truncated_images_are_named(posters: Path, tmp_path: Path) -> None:
    root = _copy(posters, tmp_path)
    (root / "images" / "poster-000.png").write_bytes(b"not an image at all")
    blob = (root / "images" / "poster-001.png").read_bytes()
    (root / "images" / "poster-001.png").write_bytes(blob[: len(blob) // 2])
    message = _problems(root)
    assert "images/poster-000.png (metadata.jsonl line 1): unreadable image" in message
    assert "images/poster-001.png (metadata.jsonl line 2): unreadable image" in message


def test_a_tiny_image_names_its_size_and_the_limit(posters: Path, tmp_path: Path) -> None:
    root = _copy(posters, tmp_path)
    Image.new("RGB", (40, 20), "red").save(root / "images" / "poster-005.png")
    message = _problems(root)
    assert "images/poster-005.png (metadata.jsonl line 6): 40x20 px is too small" in message
    assert "at least 32 px (half of --resolution 64)" in message


def test_duplicates_by_name_and_by_content_are_named(posters: Path, tmp_path: Path) -> None:
    root = _copy(posters, tmp_path)
    shutil.copy(root / "images" / "poster-003.png", root / "images" / "copy.png")
    _rewrite(
        root,
        lambda rs: [
            *rs,
            {"file_name": "images/copy.png", "text": "a copy"},
            {"file_name": rs[0]["file_name"], "text": "again"},
        ],
    )
    message = _problems(root)
    assert "images/copy.png: duplicate of images/poster-003.png (the same bytes)" in message
    assert "line 26: file_name 'images/poster-000.png' is listed twice (first on line 1)" in message


def test_fields_of_the_wrong_kind_are_named(posters: Path, tmp_path: Path) -> None:
    root = _copy(posters, tmp_path)

    def edit(rs: list) -> list:  # type: ignore[type-arg]
        rs[0] = {**rs[0], "split": "test"}
        rs[1] = {**rs[1], "rules": 7}
        rs[2] = {k: v for k, v in rs[2].items() if k != "file_name"}
        rs[3] = "{not json\n"
        rs[4] = {**rs[4], "file_name": "../outside.png"}
        return rs

    _rewrite(root, edit)
    message = _problems(root)
    assert "line 1 (images/poster-000.png): field 'split' is 'test'" in message
    assert "line 2 (images/poster-001.png): field 'rules' must be a string or a list" in message
    assert "metadata.jsonl line 3: missing field 'file_name'" in message
    assert "metadata.jsonl line 4: not JSON" in message
    assert "../outside.png (metadata.jsonl line 5): file_name must be a path inside" in message


def test_too_few_validation_examples_name_the_limit(tmp_path: Path) -> None:
    root = write_posters(tmp_path / "few", count=8, validation=1)
    assert "1 validation and 7 training examples; at least 2 validation" in _problems(root)
    small = write_posters(tmp_path / "small", count=5, validation=1)
    _rewrite(small, lambda rs: [{k: v for k, v in r.items() if k != "split"} for r in rs])
    assert "5 examples are too few to hold out 2 for validation" in _problems(small)
    assert "(limit: 6 examples)" in _problems(small)


def test_an_unmarked_dataset_holds_out_by_content(posters: Path, tmp_path: Path) -> None:
    root = _copy(posters, tmp_path)
    _rewrite(root, lambda rs: [{k: v for k, v in r.items() if k != "split"} for r in rs])
    first = dataset.load(root, RESOLUTION, 0.2)
    assert len(first.validation) == 5  # ceil(0.2 * 24)
    # Another order of the lines: the same held-out files.
    _rewrite(root, lambda rs: list(reversed(rs)))
    again = dataset.load(root, RESOLUTION, 0.2)
    assert {e.file for e in again.validation} == {e.file for e in first.validation}


def test_the_hash_is_stable_and_follows_the_content(posters: Path, tmp_path: Path) -> None:
    reference = dataset_sha256(posters)
    assert dataset_sha256(_copy(posters, tmp_path)) == reference
    (tmp_path / "data" / ".DS_Store").write_bytes(b"finder")  # hidden: not data
    assert dataset_sha256(tmp_path / "data") == reference
    Image.new("RGB", (64, 64), "blue").save(tmp_path / "data" / "images" / "poster-000.png")
    assert dataset_sha256(tmp_path / "data") != reference


def test_the_hash_is_what_sha256sum_over_the_sorted_files_gives(posters: Path) -> None:
    script = (
        "find . -type f ! -path '*/.*' | sed 's|^\\./||' | LC_ALL=C sort "
        "| xargs -d '\\n' sha256sum | sha256sum"
    )
    proc = subprocess.run(
        ["bash", "-c", script], cwd=posters, capture_output=True, text=True, check=True
    )
    assert proc.stdout.split()[0] == dataset_sha256(posters)


def test_archives_give_the_folder_s_hash(posters: Path, tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "posters.tar.gz", "w:gz") as tar:
        tar.add(posters, arcname="posters")
    with zipfile.ZipFile(tmp_path / "posters.zip", "w") as zipped:
        for path in sorted(posters.rglob("*")):
            zipped.write(path, path.relative_to(posters).as_posix())
    expected = dataset.load(posters, RESOLUTION, 0.1).sha256
    for archive in ("posters.tar.gz", "posters.zip"):
        local = fetch(str(tmp_path / archive), tmp_path / f"work-{archive}")
        assert dataset.load(local.root, RESOLUTION, 0.1).sha256 == expected, archive
