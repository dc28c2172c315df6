"""A dataset in the ``imagefolder`` layout, checked before any compute is spent.

``metadata.jsonl`` has one JSON object per line: ``file_name`` (the image, relative to
the folder) and ``text`` (its caption) are required; ``rules`` (a string or a list of
strings: the annotations a style must learn, such as "promo tag top right") is appended
to the caption; ``split`` is ``train`` or ``validation``. Other fields are ignored.

Every problem is collected and reported at once, each naming its file, field or limit:
a line that is not JSON, a missing file name or caption, an image that does not open or
is too small, a file listed twice or present twice under two names, an image with no
line, too few examples to hold out a validation split.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from flux_trainer.config import TrainConfig
from flux_trainer.errors import DatasetError
from flux_trainer.hashing import dataset_sha256, file_sha256
from flux_trainer.sources import METADATA, LocalDataset, fetch

log = logging.getLogger("flux_trainer")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SPLITS = ("train", "validation")
MIN_VALIDATION = 2
MIN_TRAIN = 4
WORKDIR = ".work"  # under --output: where a fetched or extracted dataset lies


@dataclass(frozen=True)
class Example:
    file: str  # relative POSIX path, as in metadata.jsonl
    caption: str  # text, then the rules
    split: str
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class Dataset:
    root: Path
    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    sha256: str

    def path(self, example: Example) -> Path:
        return self.root / example.file


@dataclass
class _Line:
    number: int
    file: str
    caption: str
    split: str | None


def prepare(config: TrainConfig) -> tuple[LocalDataset, Dataset]:
    """Fetch and check the run's dataset: nothing heavier than PIL runs before this
    passes (no torch is imported)."""
    Path(config.output).mkdir(parents=True, exist_ok=True)
    local = fetch(config.dataset, Path(config.output) / WORKDIR / "dataset")
    data = load(local.root, config.resolution, config.validation_fraction)
    log.info(
        "dataset checked",
        extra={
            "event": "dataset",
            "source": config.dataset,
            "revision": local.revision,
            "sha256": data.sha256,
            "train": len(data.train),
            "validation": len(data.validation),
        },
    )
    return local, data


def load(root: Path, resolution: int, validation_fraction: float) -> Dataset:
    """Read and check the dataset under ``root``; ``DatasetError`` lists every problem."""
    problems: list[str] = []
    lines = _read_metadata(root, problems)
    hashes: dict[str, str] = {}
    examples = []
    for line in lines:
        example = _check_image(root, line, resolution, hashes, problems)
        if example is not None:
            examples.append(example)
    _check_unlisted(root, {line.file for line in lines}, problems)
    _check_duplicates(examples, problems)
    if problems:
        raise DatasetError(problems)
    train, validation = _split(examples, validation_fraction)
    return Dataset(root, tuple(train), tuple(validation), dataset_sha256(root, hashes))


def _read_metadata(root: Path, problems: list[str]) -> list[_Line]:
    seen: dict[str, int] = {}
    lines = []
    text = (root / METADATA).read_text(encoding="utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{METADATA} line {number}"
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not JSON ({exc.msg})")
            continue
        line = _parse_record(record, where, problems, number)
        if line is None:
            continue
        if line.file in seen:
            problems.append(
                f"{where}: file_name {line.file!r} is listed twice (first on line "
                f"{seen[line.file]})"
            )
            continue
        seen[line.file] = number
        lines.append(line)
    if not lines and not problems:
        problems.append(f"{METADATA}: no examples")
    return lines


def _parse_record(record: Any, where: str, problems: list[str], number: int) -> _Line | None:
    if not isinstance(record, dict):
        problems.append(f"{where}: expected a JSON object")
        return None
    file = record.get("file_name")
    if not isinstance(file, str) or not file.strip():
        problems.append(f"{where}: missing field 'file_name'")
        return None
    where = f"{where} ({file})"
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: missing caption: field 'text' is absent or empty")
        return None
    rules = _rules(record.get("rules"), where, problems)
    split = record.get("split")
    if split is not None and split not in SPLITS:
        problems.append(f"{where}: field 'split' is {split!r}; expected one of {SPLITS}")
        return None
    caption = text.strip() if not rules else f"{text.strip().rstrip('.')}. {rules}"
    return _Line(number, file.strip(), caption, split)


def _rules(value: Any, where: str, problems: list[str]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "; ".join(v.strip() for v in value if v.strip())
    problems.append(f"{where}: field 'rules' must be a string or a list of strings")
    return ""


def _check_image(
    root: Path, line: _Line, resolution: int, hashes: dict[str, str], problems: list[str]
) -> Example | None:
    where = f"{line.file} ({METADATA} line {line.number})"
    relative = PurePosixPath(line.file)
    path = root / relative
    if relative.is_absolute() or ".." in relative.parts:
        problems.append(f"{where}: file_name must be a path inside the dataset folder")
        return None
    if not path.is_file():
        problems.append(f"{where}: no such file")
        return None
    try:
        with Image.open(path) as image:
            image.verify()  # reads the whole file: truncated data fails here
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        problems.append(f"{where}: unreadable image ({type(exc).__name__}: {exc})")
        return None
    smallest = resolution // 2
    if min(width, height) < smallest:
        problems.append(
            f"{where}: {width}x{height} px is too small: the shorter side must be at least "
            f"{smallest} px (half of --resolution {resolution})"
        )
        return None
    hashes[line.file] = file_sha256(path)
    return Example(line.file, line.caption, line.split or "", width, height, hashes[line.file])


def _check_unlisted(root: Path, listed: set[str], problems: list[str]) -> None:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and relative.as_posix() not in listed:
            problems.append(f"{relative.as_posix()}: missing caption (no line in {METADATA})")


def _check_duplicates(examples: list[Example], problems: list[str]) -> None:
    first: dict[str, str] = {}
    for example in examples:
        if example.sha256 in first:
            problems.append(
                f"{example.file}: duplicate of {first[example.sha256]} (the same bytes)"
            )
        else:
            first[example.sha256] = example.file


def _split(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """The examples marked ``split: validation``, or else a held-out share chosen by
    content hash (the same files give the same split)."""
    marked = [e for e in examples if e.split == "validation"]
    if marked:
        train = [e for e in examples if e.split != "validation"]
        if len(marked) < MIN_VALIDATION or len(train) < MIN_TRAIN:
            raise DatasetError(
                f"split: {len(marked)} validation and {len(train)} training examples; at "
                f"least {MIN_VALIDATION} validation and {MIN_TRAIN} training examples needed"
            )
        return train, marked
    held = max(MIN_VALIDATION, math.ceil(fraction * len(examples)))
    if len(examples) < held + MIN_TRAIN:
        raise DatasetError(
            f"split: {len(examples)} examples are too few to hold out {held} for validation "
            f"and train on at least {MIN_TRAIN} (limit: {held + MIN_TRAIN} examples); add "
            "examples or mark some with split=validation"
        )
    by_hash = sorted(examples, key=lambda e: e.sha256)
    validation = {e.file for e in by_hash[:held]}
    return (
        [e for e in examples if e.file not in validation],
        [e for e in examples if e.file in validation],
    )
