"""Experiments travel in the presets directory and reload with the presets."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from flux_client.experiments import EXPERIMENTS_FILE
from flux_client.presets import StylePreset, presets_to_files
from flux_server.requests.presets_store import PresetStore

PRESETS = {
    "realistic": StylePreset(prompt_template="{prompt}, photorealistic"),
    "impressionist": StylePreset(prompt_template="{prompt}, impressionist painting"),
    "水墨": StylePreset(prompt_template="{prompt}, 水墨画, ink wash"),
}


def experiment(weights: tuple[int, int, int]) -> dict[str, Any]:
    return {
        "name": "impressionist-filter",
        "preset": "realistic",
        "arms": [
            {"name": "control", "preset": "realistic", "weight": weights[0]},
            {"name": "impressionist", "preset": "impressionist", "weight": weights[1]},
            {"name": "ink", "preset": "水墨", "weight": weights[2]},
        ],
    }


def write_dir(directory: Path, experiments: list[dict[str, Any]], mtime: int) -> None:
    files = presets_to_files(PRESETS)
    files[EXPERIMENTS_FILE] = json.dumps({"experiments": experiments}, ensure_ascii=False)
    for name, content in files.items():
        (directory / name).write_text(content, "utf-8")
        os.utime(directory / name, ns=(mtime, mtime))


def weights(store: PresetStore) -> list[int]:
    return [arm.weight for arm in store.experiments()[0].arms]


def test_weights_change_on_disk_without_a_restart(tmp_path: Path) -> None:
    write_dir(tmp_path, [experiment((50, 30, 20))], 1_000)
    store = PresetStore(tmp_path, interval=0)
    assert sorted(store.get()) == ["impressionist", "realistic", "水墨"]
    assert weights(store) == [50, 30, 20]
    write_dir(tmp_path, [experiment((40, 40, 20))], 2_000)
    assert weights(store) == [40, 40, 20]
    write_dir(tmp_path, [], 3_000)
    assert store.experiments() == ()


def test_a_bad_reload_keeps_the_previous_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_dir(tmp_path, [experiment((50, 30, 20))], 1_000)
    store = PresetStore(tmp_path, interval=0)
    write_dir(tmp_path, [experiment((50, 30, 30))], 2_000)
    with caplog.at_level(logging.ERROR, logger="flux_server.requests.presets_store"):
        assert weights(store) == [50, 30, 20]
    assert "experiments[0].arms: weights must sum to 100, got 110" in caplog.text
    # A preset an arm needs disappears: presets and experiments stay as they were, together.
    write_dir(tmp_path, [experiment((50, 30, 20))], 3_000)
    (tmp_path / "xn--2ost86b.json").unlink()
    assert "水墨" in store.get() and weights(store) == [50, 30, 20]


def test_a_bad_experiments_file_refuses_to_start(tmp_path: Path) -> None:
    bad = experiment((50, 30, 20))
    bad["arms"][1]["preset"] = "cartoon"
    write_dir(tmp_path, [bad], 1_000)
    with pytest.raises(ValueError, match=r"arms\[1\]\.preset: no style preset named 'cartoon'"):
        PresetStore(tmp_path)
