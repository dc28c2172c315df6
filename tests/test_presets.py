"""The presets format shared by the operator (writer) and the server (reader)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flux_contract.presets import StylePreset, presets_from_files, presets_to_files


def test_round_trip_through_configmap_files() -> None:
    presets = {
        "cyberpunk": StylePreset.model_validate(
            {
                "promptTemplate": "{prompt}, cyberpunk style, neon lights",
                "negativePrompt": "blurry",
                "guidanceScale": 3.5,
                "steps": 28,
                "lora": {"name": "neon", "scale": 0.8},
            }
        ),
        "plain": StylePreset(),
    }
    files = presets_to_files(presets)
    assert list(files) == ["cyberpunk.json", "plain.json"]
    assert '"promptTemplate"' in files["cyberpunk.json"]
    assert "null" not in files["plain.json"]
    assert presets_from_files(files) == presets


def test_expand_does_not_interpret_user_text() -> None:
    preset = StylePreset(prompt_template="{prompt}, oil painting")
    assert preset.expand("a {cat} at {0}") == "a {cat} at {0}, oil painting"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"promptTemplate": "no placeholder"}, "promptTemplate"),
        ({"steps": 0}, "steps"),
        ({"steps": 101}, "steps"),
        ({"width": 1000}, "width"),
        ({"height": 4096}, "height"),
        ({"guidanceScale": -1}, "guidanceScale"),
        ({"colour": "red"}, "colour"),
        ({"lora": {"name": "x", "scale": 9}}, "scale"),
    ],
)
def test_bad_presets_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        StylePreset.model_validate(body)
    assert field in str(info.value)


def test_reader_skips_kubelet_links_and_names_the_bad_file() -> None:
    files = {"..data": "", ".hidden.json": "{", "notes.txt": "x", "ok.json": "{}"}
    assert list(presets_from_files(files)) == ["ok"]
    with pytest.raises(ValueError, match=r"broken\.json"):
        presets_from_files({"broken.json": '{"steps": "many"}'})
