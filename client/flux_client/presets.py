"""Style presets: ``flux_contract.presets``, re-exported for SDK users."""

from __future__ import annotations

from flux_contract.presets import (
    PRESET_FILE_SUFFIX,
    PRESET_NAME_PATTERN,
    PresetLora,
    StylePreset,
    presets_from_files,
    presets_to_files,
)

__all__ = [
    "PRESET_FILE_SUFFIX",
    "PRESET_NAME_PATTERN",
    "PresetLora",
    "StylePreset",
    "presets_from_files",
    "presets_to_files",
]
