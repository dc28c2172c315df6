"""Style presets and the experiments on them, read from a mounted directory (the presets
ConfigMap) and re-read when the files change: kubelet swaps the ``..data`` link on an
update, which changes the modification times seen through the links. Presets and
experiments are read, checked and swapped together, so an experiment never points at a
preset of another revision."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from flux_contract.experiments import EXPERIMENTS_FILE, Experiment, experiments_from_file
from flux_contract.presets import PRESET_FILE_SUFFIX, StylePreset, presets_from_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PresetsSnapshot:
    """One consistent reading of the directory."""

    presets: dict[str, StylePreset] = field(default_factory=dict)
    experiments: tuple[Experiment, ...] = ()


def _signature(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    entries = []
    for path in sorted(directory.glob(f"*{PRESET_FILE_SUFFIX}")):  # the experiments file too
        try:
            stat = path.stat()  # follows the ConfigMap's links
        except OSError:
            continue
        # The inode too: a swapped-in file may have the old one's size and time stamp.
        entries.append((path.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


def read_snapshot(directory: Path) -> PresetsSnapshot:
    """The presets and experiments in ``directory``; ValueError names a bad file/field."""
    files = {
        path.name: path.read_text("utf-8")
        for path in sorted(directory.glob(f"*{PRESET_FILE_SUFFIX}"))
        if path.is_file()
    }
    presets = presets_from_files(files)
    experiments: list[Experiment] = []
    if EXPERIMENTS_FILE in files:
        experiments = experiments_from_file(files[EXPERIMENTS_FILE], presets)
    return PresetsSnapshot(presets, tuple(experiments))


def read_presets(directory: Path) -> dict[str, StylePreset]:
    """The presets in ``directory``; a malformed file raises ValueError naming it."""
    return read_snapshot(directory).presets


class PresetStore:
    """The current presets and experiments. Checks the directory at most every
    ``interval`` seconds; a bad update is logged and the previous reading stays in force.
    A bad directory at start raises ValueError (the server refuses to start)."""

    def __init__(self, directory: Path | None, interval: float = 2.0) -> None:
        self.directory = directory
        self.interval = interval
        self._snapshot = PresetsSnapshot()
        self._signature: tuple[tuple[str, int, int, int], ...] = ()
        self._checked = 0.0
        if directory is not None:
            if not directory.is_dir():
                raise ValueError(f"--presets-dir {directory} is not a directory")
            self._signature = _signature(directory)
            self._snapshot = read_snapshot(directory)
            self._checked = time.monotonic()
            log.info("presets loaded", extra=self._summary())

    def get(self) -> dict[str, StylePreset]:
        return self.snapshot().presets

    def experiments(self) -> tuple[Experiment, ...]:
        return self.snapshot().experiments

    def snapshot(self) -> PresetsSnapshot:
        if self.directory is not None and time.monotonic() - self._checked >= self.interval:
            self._checked = time.monotonic()
            signature = _signature(self.directory)
            if signature != self._signature:
                try:
                    self._snapshot = read_snapshot(self.directory)
                    log.info("presets reloaded", extra=self._summary())
                except (OSError, ValueError) as exc:
                    log.error("presets not reloaded; keeping the previous ones: %s", exc)
                self._signature = signature
        return self._snapshot

    def _summary(self) -> dict[str, object]:
        return {
            "presets": sorted(self._snapshot.presets),
            "experiments": {
                e.name: {arm.name: arm.weight for arm in e.arms} for e in self._snapshot.experiments
            },
        }
