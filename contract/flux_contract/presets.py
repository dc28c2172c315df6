"""Style presets: the one format shared by the operator and the server.

The operator writes each preset of `FluxDeployment.spec.stylePresets` into the
presets ConfigMap as ``<key>.json`` (this model, camelCase, ``exclude_none``), the key
being the name itself or its encoding (``flux_contract.names``);
the server reads the mounted directory back with the same model. Keeping the
model in the contract package (no torch, no HTTP client) lets both halves import it
without importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from flux_contract.names import key_to_name, name_to_key

__all__ = [
    "PRESET_FILE_SUFFIX",
    "PRESET_NAME_PATTERN",
    "PresetLora",
    "StylePreset",
    "presets_from_files",
    "presets_to_files",
]

PRESET_NAME_PATTERN = r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$"
"""Lower-case ASCII names, which are their own ConfigMap keys. Any Unicode name that
``flux_contract.names.name_problem`` accepts also works: its key is encoded."""

PRESET_FILE_SUFFIX = ".json"


class PresetLora(BaseModel):
    """A LoRA adapter a preset switches on."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=64,
        description="Name of an adapter the server was started with (--lora NAME=PATH).",
    )
    scale: float = Field(default=1.0, ge=0.0, le=4.0, description="Adapter weight, 0 to 4.")


class StylePreset(BaseModel):
    """A named style: a prompt template plus defaults that a request may override."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    prompt_template: str = Field(
        default="{prompt}",
        min_length=1,
        max_length=2000,
        description='Template for the prompt; "{prompt}" is replaced by the request\'s prompt.',
    )
    negative_prompt: str | None = Field(
        default=None,
        max_length=2000,
        description="Negative prompt used when the request gives none.",
    )
    guidance_scale: float | None = Field(
        default=None, ge=0.0, le=30.0, description="Default guidance scale."
    )
    steps: int | None = Field(default=None, ge=1, le=100, description="Default denoising steps.")
    width: int | None = Field(
        default=None, ge=256, le=2048, multiple_of=16, description="Default width in pixels."
    )
    height: int | None = Field(
        default=None, ge=256, le=2048, multiple_of=16, description="Default height in pixels."
    )
    lora: PresetLora | None = Field(default=None, description="LoRA adapter this preset applies.")

    @field_validator("prompt_template")
    @classmethod
    def _template_has_placeholder(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError('promptTemplate must contain "{prompt}"')
        return value

    def expand(self, prompt: str) -> str:
        """The prompt with this preset's template applied (plain replace: no format-string
        injection from user text)."""
        return self.prompt_template.replace("{prompt}", prompt)

    def to_json(self) -> str:
        """The file content the ConfigMap carries for this preset."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


def presets_to_files(presets: Mapping[str, StylePreset]) -> dict[str, str]:
    """ConfigMap ``data`` (file name → content) for a set of presets, in a stable order.
    ValueError names a preset whose name cannot be encoded."""
    return {name_to_key(name): presets[name].to_json() for name in sorted(presets)}


def presets_from_files(files: Mapping[str, str]) -> dict[str, StylePreset]:
    """Parse ConfigMap ``data`` / directory contents back into presets.

    Files that are not presets (kubelet's ``..data`` links, editors' backups, the
    ``_experiments.json`` beside them) are ignored. A malformed preset raises
    ``ValueError`` naming the file.
    """
    presets: dict[str, StylePreset] = {}
    for file_name, content in files.items():
        name = key_to_name(file_name)
        if name is None:
            continue
        try:
            presets[name] = StylePreset.model_validate(json.loads(content))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"preset file {file_name!r}: {exc}") from exc
    return presets
