"""``spec.performance``: the server's speed options (torch.compile, warm-up sizes,
quantisation, step cache, attention kernel, offload, VAE) and the server flags they
become. A pure model and a pure function; ``render`` appends the flags."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

SIZE_PATTERN = r"^[1-9][0-9]{1,3}x[1-9][0-9]{1,3}$"
STEP_CACHE_PATTERN = r"^(off|first-block:0?\.[0-9]+|taylorseer:([2-9]|10))$"


class PerformanceSpec(BaseModel):
    """Speed options of the server (each a flag of ``python -m flux_server``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    compile: Literal["auto", "off", "regional", "full"] = Field(
        default="auto",
        description="torch.compile: regional (the repeated blocks), full, off; auto: regional "
        "on a GPU (--compile).",
    )
    warmup_sizes: list[Annotated[str, StringConstraints(pattern=SIZE_PATTERN)]] = Field(
        default_factory=list,
        max_length=16,
        description="WIDTHxHEIGHT sizes compiled and run at every batch size before the pod "
        "turns ready (--warmup-sizes); other sizes compile on first use.",
    )
    quantize: Literal["none", "fp8", "int8"] = Field(
        default="none",
        description="torchao on the transformer: fp8 (compute capability 8.9+) or int8 "
        "weight-only (--quantize).",
    )
    step_cache: str = Field(
        default="off",
        pattern=STEP_CACHE_PATTERN,
        description="off, first-block:THRESHOLD or taylorseer:INTERVAL (--step-cache): faster, "
        "slightly different images.",
    )
    attention_backend: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]{1,40}$",
        description="diffusers attention backend, e.g. native, flash, sage (--attention-backend).",
    )
    offload: Literal["none", "model", "sequential"] = Field(
        default="none",
        description="CPU offload for GPUs smaller than the pipeline (--offload).",
    )
    vae_slicing: bool = Field(
        default=True, description="Decode a batch image by image (--vae-slicing)."
    )
    vae_tiling: bool = Field(default=False, description="Decode large images in tiles.")
    lora_max_rank: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="LoRA rank the compiled hot-swap slot is prepared for (--lora-max-rank); "
        "default: the largest adapter's.",
    )


def performance_args(perf: PerformanceSpec | None) -> list[str]:
    """The server flags for ``perf``; none for a value left at the server's default, so a
    spec without ``performance`` renders as before."""
    if perf is None:
        return []
    args: list[str] = []
    if perf.compile != "auto":
        args.append(f"--compile={perf.compile}")
    if perf.warmup_sizes:
        args.append(f"--warmup-sizes={','.join(perf.warmup_sizes)}")
    if perf.quantize != "none":
        args.append(f"--quantize={perf.quantize}")
    if perf.step_cache != "off":
        args.append(f"--step-cache={perf.step_cache}")
    if perf.attention_backend is not None:
        args.append(f"--attention-backend={perf.attention_backend}")
    if perf.offload != "none":
        args.append(f"--offload={perf.offload}")
    if not perf.vae_slicing:
        args.append("--no-vae-slicing")
    if perf.vae_tiling:
        args.append("--vae-tiling")
    if perf.lora_max_rank is not None:
        args.append(f"--lora-max-rank={perf.lora_max_rank}")
    return args
