"""The operator checks and renders experiments into the presets ConfigMap, which the
server reads back as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flux_contract.presets import StylePreset, presets_to_files
from flux_operator.render.naming import presets_configmap_data
from flux_operator.spec import parse_experiments, preset_name_problems
from flux_server.requests.presets_store import PresetStore

PRESETS = {
    "realistic": StylePreset(prompt_template="{prompt}, photorealistic, soft light"),
    "impressionist": StylePreset(prompt_template="{prompt}, impressionist painting"),
    "水墨": StylePreset(prompt_template="{prompt}, 水墨画, ink wash"),
}


def spec_experiments() -> list[dict[str, Any]]:
    return [
        {
            "name": "impressionist-filter",
            "preset": "realistic",
            "audience": {"header": "X-Customer-Group", "values": ["beta", "vip"]},
            "arms": [
                {"name": "control", "preset": "realistic", "weight": 50},
                {"name": "impressionist", "preset": "impressionist", "weight": 30},
                {"name": "ink", "preset": "水墨", "weight": 20},
            ],
            "salt": "2026-12",
        }
    ]


def test_rendered_configmap_is_what_the_server_serves(tmp_path: Path) -> None:
    experiments, problems = parse_experiments(spec_experiments(), list(PRESETS))
    assert problems == []
    data = presets_configmap_data(PRESETS, experiments)
    assert sorted(data) == [
        "_experiments.json",
        "impressionist.json",
        "realistic.json",
        "xn--2ost86b.json",
    ]
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", key) for key in data)
    for key, content in data.items():  # mounted as is
        (tmp_path / key).write_text(content, "utf-8")
    store = PresetStore(tmp_path)
    assert store.get() == PRESETS
    assert list(store.experiments()) == experiments


def test_without_experiments_the_configmap_is_unchanged() -> None:
    assert presets_configmap_data(PRESETS, []) == presets_to_files(PRESETS)
    assert parse_experiments(None, list(PRESETS)) == ([], [])


def test_weights_are_part_of_the_content() -> None:
    changed = spec_experiments()
    changed[0]["arms"][0]["weight"], changed[0]["arms"][1]["weight"] = 40, 40
    before = presets_configmap_data(PRESETS, parse_experiments(spec_experiments(), PRESETS)[0])
    after = presets_configmap_data(PRESETS, parse_experiments(changed, PRESETS)[0])
    assert before["_experiments.json"] != after["_experiments.json"]


def test_problems_name_the_spec_field() -> None:
    bad = spec_experiments() + spec_experiments()
    bad[0]["arms"][2]["preset"] = "sumi-e"
    bad[1]["name"] = "second"
    experiments, problems = parse_experiments(bad, list(PRESETS))
    assert experiments == []
    assert problems == [
        "spec.experiments[0].arms[2].preset: no style preset named 'sumi-e'",
        "spec.experiments[1].preset: experiments[0] already runs on 'realistic'; "
        "one experiment per preset",
    ]
    weights = spec_experiments()
    weights[0]["arms"][0]["weight"] = 10
    _, problems = parse_experiments(weights, list(PRESETS))
    assert problems == [
        "spec.experiments[0].arms: weights must sum to 100, got 60 "
        "(control=10, impressionist=30, ink=20)"
    ]
    dup = spec_experiments()
    dup[0]["arms"][1]["name"] = "control"
    _, problems = parse_experiments(dup, list(PRESETS))
    assert problems == ["spec.experiments[0].arms: duplicate arm name 'control'"]
    _, problems = parse_experiments([{**spec_experiments()[0], "preset": "cartoon"}], PRESETS)
    assert problems == ["spec.experiments[0].preset: no style preset named 'cartoon'"]


def test_preset_names_say_why_they_are_refused() -> None:
    assert preset_name_problems(["realistic", "水墨", "Café"]) == []
    assert preset_name_problems(["a/b"]) == [
        "spec.stylePresets['a/b']: '/' (U+002F SOLIDUS) is not allowed: "
        "it separates directories in a file name"
    ]
