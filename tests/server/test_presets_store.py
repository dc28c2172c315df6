"""Presets come from the mounted ConfigMap directory and follow its updates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flux_client.presets import StylePreset
from flux_server.requests.presets_store import PresetStore


def write(directory: Path, name: str, preset: StylePreset, mtime: int) -> None:
    path = directory / f"{name}.json"
    path.write_text(preset.to_json())
    os.utime(path, ns=(mtime, mtime))


def test_reads_and_reloads_on_change(tmp_path: Path) -> None:
    write(tmp_path, "ink", StylePreset(prompt_template="ink drawing of {prompt}"), 1_000)
    (tmp_path / "..data").mkdir()  # kubelet's bookkeeping is ignored
    store = PresetStore(tmp_path, interval=0)
    assert store.get()["ink"].expand("a cat") == "ink drawing of a cat"

    write(tmp_path, "ink", StylePreset(prompt_template="{prompt}, in ink"), 2_000)
    write(tmp_path, "neon", StylePreset(prompt_template="{prompt}, neon"), 2_000)
    assert sorted(store.get()) == ["ink", "neon"]
    assert store.get()["ink"].expand("a cat") == "a cat, in ink"


def test_a_bad_update_keeps_the_previous_presets(tmp_path: Path) -> None:
    write(tmp_path, "ink", StylePreset(prompt_template="ink {prompt}"), 1_000)
    store = PresetStore(tmp_path, interval=0)
    (tmp_path / "ink.json").write_text('{"promptTemplate": "no placeholder"}')
    os.utime(tmp_path / "ink.json", ns=(3_000, 3_000))
    assert store.get()["ink"].prompt_template == "ink {prompt}"


def test_bad_directory_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        PresetStore(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json"):
        PresetStore(tmp_path)
