"""Style presets read from a mounted directory (the presets ConfigMap), re-read when
the files change: kubelet swaps the ``..data`` link on an update, which changes the
modification times seen through the links."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flux_client.presets import PRESET_FILE_SUFFIX, StylePreset, presets_from_files

log = logging.getLogger(__name__)


def _signature(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    entries = []
    for path in sorted(directory.glob(f"*{PRESET_FILE_SUFFIX}")):
        try:
            stat = path.stat()  # follows the ConfigMap's links
        except OSError:
            continue
        # The inode too: a swapped-in file may have the old one's size and time stamp.
        entries.append((path.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


def read_presets(directory: Path) -> dict[str, StylePreset]:
    """The presets in ``directory``; a malformed file raises ValueError naming it."""
    files = {
        path.name: path.read_text("utf-8")
        for path in sorted(directory.glob(f"*{PRESET_FILE_SUFFIX}"))
        if path.is_file()
    }
    return presets_from_files(files)


class PresetStore:
    """The current presets. Checks the directory at most every ``interval`` seconds;
    a bad update is logged and the previous presets stay in force."""

    def __init__(self, directory: Path | None, interval: float = 2.0) -> None:
        self.directory = directory
        self.interval = interval
        self._presets: dict[str, StylePreset] = {}
        self._signature: tuple[tuple[str, int, int, int], ...] = ()
        self._checked = 0.0
        if directory is not None:
            if not directory.is_dir():
                raise ValueError(f"--presets-dir {directory} is not a directory")
            self._signature = _signature(directory)
            self._presets = read_presets(directory)
            self._checked = time.monotonic()
            log.info("presets loaded", extra={"presets": sorted(self._presets)})

    def get(self) -> dict[str, StylePreset]:
        if self.directory is not None and time.monotonic() - self._checked >= self.interval:
            self._checked = time.monotonic()
            signature = _signature(self.directory)
            if signature != self._signature:
                try:
                    self._presets = read_presets(self.directory)
                    log.info("presets reloaded", extra={"presets": sorted(self._presets)})
                except (OSError, ValueError) as exc:
                    log.error("presets not reloaded; keeping the previous ones: %s", exc)
                self._signature = signature
        return self._presets
