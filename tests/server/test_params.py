"""Resolving a request: presets, defaults, limits, field-named errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flux_client.presets import PresetLora, StylePreset
from flux_server.errors import InvalidRequest
from flux_server.requests.params import GenerateParams, resolve
from flux_server.settings import ServerSettings

SETTINGS = ServerSettings(
    model="m",
    max_side=512,
    max_steps=10,
    max_images=2,
    default_width=128,
    default_height=128,
    default_steps=4,
)
PRESETS = {
    "cyberpunk": StylePreset(
        prompt_template="{prompt}, neon, cyberpunk",
        negative_prompt="washed out",
        steps=4,
        width=256,
        lora=PresetLora(name="neon", scale=0.8),
    )
}


def test_preset_fills_unset_fields_and_request_wins() -> None:
    job = resolve(
        GenerateParams(prompt="a city", style_preset="cyberpunk", steps=3),
        PRESETS,
        SETTINGS,
        {"neon": 1.0},
    )
    assert job.prompt == "a city, neon, cyberpunk"
    assert (job.width, job.height, job.steps) == (256, SETTINGS.default_height, 3)
    assert job.negative_prompt == "washed out"
    assert job.true_cfg_scale == SETTINGS.default_true_cfg_scale
    assert job.adapters == (("neon", 0.8),)


def test_true_cfg_only_with_a_negative_prompt() -> None:
    job = resolve(GenerateParams(prompt="x", true_cfg_scale=5.0), {}, SETTINGS)
    assert job.true_cfg_scale == 1.0
    job = resolve(GenerateParams(prompt="x", negative_prompt="y", true_cfg_scale=5.0), {}, SETTINGS)
    assert job.true_cfg_scale == 5.0


def test_seed_is_chosen_when_unset() -> None:
    assert resolve(GenerateParams(prompt="x", seed=5), {}, SETTINGS).seed == 5
    assert resolve(GenerateParams(prompt="x"), {}, SETTINGS).seed >= 0


@pytest.mark.parametrize(
    "params,field",
    [
        (GenerateParams(prompt="x", width=1024), "width"),
        (GenerateParams(prompt="x", height=1024), "height"),
        (GenerateParams(prompt="x", steps=11), "steps"),
        (GenerateParams(prompt="x", num_images=3), "num_images"),
        (GenerateParams(prompt="x", style_preset="nope"), "style_preset"),
        (GenerateParams(prompt="x", adapters=[{"name": "ghost"}]), "adapters[0].name"),
    ],
)
def test_limits_name_the_field(params: GenerateParams, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve(params, PRESETS, SETTINGS)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "body,field",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x", "width": 100}, "width"),
        ({"prompt": "x", "output_format": "gif"}, "output_format"),
        ({"prompt": "x", "colour": "red"}, "colour"),
    ],
)
def test_schema_errors_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GenerateParams.model_validate(body)
    assert caught.value.errors()[0]["loc"][0] == field


def test_adapter_scale_defaults_to_the_loaded_scale() -> None:
    job = resolve(
        GenerateParams(prompt="x", adapters=[{"name": "ink"}, {"name": "neon", "scale": 0.3}]),
        {},
        SETTINGS,
        {"ink": 0.7, "neon": 1.0},
    )
    assert job.adapters == (("ink", 0.7), ("neon", 0.3))


def test_one_adapter_slot_refuses_a_combination_naming_adapters() -> None:
    loaded = {"ink": 0.7, "neon": 1.0}
    one = GenerateParams(prompt="x", adapters=[{"name": "neon"}])
    assert resolve(one, {}, SETTINGS, loaded, adapters_per_request=1).adapters == (("neon", 1.0),)
    both = GenerateParams(prompt="x", adapters=[{"name": "ink"}, {"name": "neon"}])
    with pytest.raises(InvalidRequest) as caught:
        resolve(both, {}, SETTINGS, loaded, adapters_per_request=1)
    assert caught.value.field == "adapters"
    assert "at most 1 LoRA adapter per request with --compile" in str(caught.value)
    assert "ink, neon" in str(caught.value)


def test_preset_with_an_unloaded_adapter_names_the_preset() -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve(GenerateParams(prompt="x", style_preset="cyberpunk"), PRESETS, SETTINGS, {})
    assert caught.value.field == "style_preset"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"prompt": "x", "guidance_scale": float("nan")}, "guidance_scale"),
        ({"prompt": "x", "true_cfg_scale": float("inf")}, "true_cfg_scale"),
        ({"prompt": "x", "adapters": [{"name": "ink", "scale": float("nan")}]}, "adapters"),
    ],
)
def test_scales_must_be_finite(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GenerateParams.model_validate(body)
    error = caught.value.errors()[0]
    assert error["loc"][0] == field
    assert "finite" in error["msg"]
