"""What a caller asks for, and the fully resolved job the engine runs.

:class:`GenerateParams` is the REST body (the article's fields plus seed, num_images,
output_format, adapters, true_cfg_scale); the gRPC adapter converts its message into
the same model. :func:`resolve` applies the style preset and the server's defaults and
limits, and returns a :class:`ResolvedRequest` with every value set, or raises
:class:`~flux_server.errors.InvalidRequest` naming the field and the limit.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flux_contract.presets import StylePreset
from flux_server.errors import InvalidRequest, UnknownName
from flux_server.execution.inputs import MAX_SEED, TextToImage, seeds_from
from flux_server.settings import ServerSettings

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "AdapterRequest",
    "GenerateParams",
    "ImageFormat",
    "ResolvedRequest",
    "field_of",
    "resolve",
    "validation_error",
]

ImageFormat = Literal["png", "jpeg", "webp"]
T = TypeVar("T")
MAX_PROMPT_CHARS = 2000


class AdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    scale: float | None = Field(
        None,
        ge=0.0,
        le=4.0,
        allow_inf_nan=False,
        description="Weight; unset: the scale the server loaded it with.",
    )


class GenerateParams(BaseModel):
    """A generation request. Unset fields take the style preset's value, then the
    server's default."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    width: int | None = Field(None, ge=16, multiple_of=16, description="Pixels, multiple of 16.")
    height: int | None = Field(None, ge=16, multiple_of=16, description="Pixels, multiple of 16.")
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0.0, le=30.0, allow_inf_nan=False)
    true_cfg_scale: float | None = Field(
        None,
        ge=1.0,
        le=30.0,
        allow_inf_nan=False,
        description="True classifier-free guidance, used with negative_prompt (> 1 on); it "
        "costs a second transformer pass per step.",
    )
    style_preset: str | None = Field(None, max_length=63)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    num_images: int = Field(1, ge=1)
    output_format: ImageFormat = "png"
    adapters: list[AdapterRequest] = Field(default_factory=list, max_length=8)
    previews: bool = Field(
        False,
        description="A small preview image every --preview-every steps, on the streams that "
        "carry events (a job's events, gRPC GenerateStream); the final image is unchanged.",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    @field_validator("output_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class ResolvedRequest(BaseModel):
    """A request with every value resolved: what one pipeline call needs for it."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    true_cfg_scale: float
    seed: int
    num_images: int
    output_format: ImageFormat
    adapters: tuple[tuple[str, float], ...]
    style_preset: str | None

    def text_to_image(self) -> TextToImage:
        """What the engine runs for this request."""
        return TextToImage(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            width=self.width,
            height=self.height,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            true_cfg_scale=self.true_cfg_scale,
            seed=self.seed,
            num_images=self.num_images,
            adapters=self.adapters,
        )

    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys can share one pipeline call."""
        return self.text_to_image().batch_key()

    def seeds(self) -> list[int]:
        """Image i uses seed + i (wrapping within the 63-bit range)."""
        return seeds_from(self.seed, self.num_images)


@dataclass(frozen=True)
class AdapterSlot:
    """A compiled transformer's one LoRA hot-swap slot (``--lora-max-rank``): a
    combination of adapters is fused into it, their ranks side by side, so it fits when
    their ranks add up to at most the slot's."""

    ranks: Mapping[str, int]
    rank: int

    def check(self, names: Sequence[str]) -> None:
        total = sum(self.ranks.get(name, 0) for name in names)
        if total > self.rank:
            raise InvalidRequest(
                f"combining LoRA adapters {', '.join(names)} with --compile fuses them into "
                f"one hot-swap slot of rank {total} (their ranks added up), over this "
                f"server's {self.rank}: start it with --lora-max-rank {total} or more, or "
                "without --compile",
                field="adapters",
            )


def resolve(
    params: GenerateParams,
    presets: Mapping[str, StylePreset],
    settings: ServerSettings,
    known_adapters: Mapping[str, float] | None = None,
    adapters_per_request: int | None = None,
    slot: AdapterSlot | None = None,
) -> ResolvedRequest:
    """Apply the preset, defaults and limits; raise InvalidRequest naming the field.

    ``known_adapters`` maps the loaded LoRA adapters to their default scales;
    ``adapters_per_request`` is how many of them one request may combine (None: any);
    ``slot``, with a compiled transformer, the hot-swap slot a combination must fit.
    """
    preset = _preset(params.style_preset, presets)
    width = int(_pick(params, preset, "width", settings.default_width))
    height = int(_pick(params, preset, "height", settings.default_height))
    steps = int(_pick(params, preset, "steps", settings.default_steps))
    _check_limits(width, height, steps, params.num_images, settings)
    negative, true_cfg = _negative_and_cfg(params, preset, settings.default_true_cfg_scale)
    adapters = _adapters(params, preset, known_adapters or {})
    _check_combination(adapters, params.style_preset, adapters_per_request, slot)
    guidance = _pick(params, preset, "guidance_scale", settings.default_guidance_scale)
    return ResolvedRequest(
        prompt=preset.expand(params.prompt) if preset is not None else params.prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        steps=steps,
        guidance_scale=float(guidance),
        true_cfg_scale=float(true_cfg),
        seed=params.seed if params.seed is not None else secrets.randbelow(2**32),
        num_images=params.num_images,
        output_format=params.output_format,
        adapters=tuple(sorted(adapters.items())),
        style_preset=params.style_preset,
    )


def _preset(name: str | None, presets: Mapping[str, StylePreset]) -> StylePreset | None:
    """The style preset the request names, or None when it names none."""
    if name is None:
        return None
    preset = presets.get(name)
    if preset is None:
        known = ", ".join(sorted(presets)) or "none configured"
        raise UnknownName(f"unknown style preset {name!r} (known: {known})", field="style_preset")
    return preset


def _pick(params: GenerateParams, preset: StylePreset | None, name: str, default: T) -> T:
    """The request's value, else the preset's, else the server's default (the field has
    the default's type in all three)."""
    value = getattr(params, name)
    if value is None and preset is not None:
        value = getattr(preset, name)
    return default if value is None else cast(T, value)


def _check_limits(
    width: int, height: int, steps: int, num_images: int, settings: ServerSettings
) -> None:
    for field, value in (("width", width), ("height", height)):
        if value > settings.max_side:
            raise InvalidRequest(
                f"{field} {value} is over the limit of {settings.max_side} pixels", field=field
            )
    if steps > settings.max_steps:
        raise InvalidRequest(f"steps {steps} is over the limit of {settings.max_steps}", "steps")
    if num_images > settings.max_images:
        raise InvalidRequest(
            f"num_images {num_images} is over the limit of {settings.max_images}",
            field="num_images",
        )


def _negative_and_cfg(
    params: GenerateParams, preset: StylePreset | None, default_true_cfg: float
) -> tuple[str | None, float]:
    """The negative prompt (a blank one is none) and the true-CFG scale that goes with it."""
    negative = params.negative_prompt
    if negative is None and preset is not None:
        negative = preset.negative_prompt
    if negative is not None and not negative.strip():
        negative = None
    if negative is None:
        # Without a negative prompt true CFG has nothing to push away from.
        return None, 1.0
    true_cfg = params.true_cfg_scale
    return negative, default_true_cfg if true_cfg is None else true_cfg


def _adapters(
    params: GenerateParams, preset: StylePreset | None, known: Mapping[str, float]
) -> dict[str, float]:
    """The LoRA adapters and scales: the preset's, then the request's (a scale left out
    is the one the adapter was loaded with). Every one must be loaded."""
    adapters: dict[str, float] = {}
    if preset is not None and preset.lora is not None:
        adapters[preset.lora.name] = preset.lora.scale
    known_list = ", ".join(sorted(known)) or "none loaded"
    for index, adapter in enumerate(params.adapters):
        if adapter.name not in known:
            raise UnknownName(
                f"unknown adapter {adapter.name!r} (known: {known_list})",
                field=f"adapters[{index}].name",
            )
        adapters[adapter.name] = adapter.scale if adapter.scale is not None else known[adapter.name]
    for name in adapters:
        if name not in known:
            raise InvalidRequest(
                f"style preset {params.style_preset!r} uses adapter {name!r}, which this "
                f"server has not loaded (known: {known_list})",
                field="style_preset",
            )
    return adapters


def _check_combination(
    adapters: Mapping[str, float],
    style_preset: str | None,
    per_request: int | None,
    slot: AdapterSlot | None,
) -> None:
    """A compiled transformer has one hot-swap slot (see lora_hotswap): refuse here a
    combination it cannot take, not inside a batch that would fail with the request's
    companions."""
    if per_request is not None and len(adapters) > per_request:
        raise InvalidRequest(
            f"this server takes at most {per_request} LoRA adapter per request "
            f"with --compile (asked for {', '.join(adapters)}"
            + (f", with style preset {style_preset!r}" if style_preset is not None else "")
            + ")",
            field="adapters",
        )
    if slot is not None and len(adapters) > 1:
        slot.check(tuple(adapters))


def field_of(error: Any) -> str | None:
    """``loc`` of a pydantic error as a field path: ``adapters[0].name``."""
    path = ""
    for part in error.get("loc", ()):
        if part in {"body", "query", "header"} and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or None


def validation_error(errors: Sequence[Any]) -> InvalidRequest:
    """The first of pydantic's (or FastAPI's) ``errors()`` as an error naming its field."""
    first = errors[0]
    field = field_of(first)
    message = first.get("msg", "invalid value")
    return InvalidRequest(f"{field}: {message}" if field else message, field)
