"""What the engine loads and how fast it runs it: the model and speed flags of
:class:`~flux_server.settings.ServerSettings` (the first of its fields), their checks, and
what they mean on a device (:func:`speed_options`, a pure decision; the engine applies it,
:mod:`flux_server.execution.speedups`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flux_server.execution.speedups import SpeedOptions, parse_sizes, parse_step_cache


class EngineSettings(BaseModel):
    """The model and the speed options; :class:`~flux_server.settings.ServerSettings`
    extends it with everything else (its fields come first in ``--help``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- model -------------------------------------------------------------------------
    model: str = Field(description="Local directory or hub id of a FLUX pipeline.")
    model_revision: str | None = Field(None, description="Hub revision (branch, tag, commit).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when present, else CPU."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on CUDA, float32 on CPU."
    )
    warmup: bool = Field(True, description="Run one small generation before reporting ready.")

    # --- speed (see flux_server.execution.speedups) ------------------------------------------
    compile: Literal["auto", "off", "regional", "full"] = Field(
        "auto",
        description="torch.compile the repeated transformer blocks (regional) or the whole "
        "transformer (full); auto: regional on CUDA, off on CPU.",
    )
    compile_backend: Literal["inductor", "aot_eager", "eager"] = Field(
        "inductor",
        description="torch.compile backend; aot_eager/eager trace without generating code "
        "(checks, debugging).",
    )
    warmup_sizes: tuple[str, ...] = Field(
        (),
        description="WxH sizes (comma separated or repeated) compiled and run at every batch "
        "size up to --max-batch-size before ready; default with --compile: the default size.",
    )
    compile_cache: str | None = Field(
        None,
        description="With --compile: a directory (a volume) that keeps compiled kernels across "
        "restarts, one entry per torch, diffusers, GPU and warm-up shapes; a mismatch or a "
        "damaged entry recompiles.",
    )
    quantize: Literal["none", "fp8", "int8"] = Field(
        "none",
        description="torchao on the transformer: fp8 (CUDA, compute capability 8.9+) or int8 "
        "weight-only.",
    )
    step_cache: str = Field(
        "off",
        description="Skip transformer work on steps that change little: off, "
        "first-block:THRESHOLD, taylorseer:INTERVAL.",
    )
    attention_backend: str | None = Field(
        None, description="diffusers attention dispatcher backend (native, flash, sage, ...)."
    )
    offload: Literal["none", "model", "sequential"] = Field(
        "none",
        description="CPU offload for GPUs smaller than the pipeline: model (whole components) "
        "or sequential (layer by layer, least memory, slowest).",
    )
    vae_slicing: bool = Field(
        True,
        description="Decode a batch one image at a time: less memory, and an image's bytes "
        "do not depend on the decode of the others in its batch.",
    )
    vae_tiling: bool = Field(False, description="Decode large images in tiles.")
    lora_max_rank: int | None = Field(
        None,
        ge=1,
        description="With --compile: the LoRA rank the hot-swap slot is prepared for "
        "(default: the largest adapter's).",
    )

    @field_validator("warmup_sizes", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        values = [value] if isinstance(value, str) else list(value or ())
        return tuple(f"{w}x{h}" for w, h in parse_sizes(values))

    @field_validator("compile_cache")
    @classmethod
    def _cache_is_a_directory(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or Path(value).is_file()):
            raise ValueError(f"{value!r} is not a directory (a volume for compiled kernels)")
        return value

    @field_validator("step_cache")
    @classmethod
    def _step_cache(cls, value: str) -> str:
        parse_step_cache(value)
        return value


def check_speed_flags(settings: EngineSettings, max_side: int) -> None:
    """The warm-up sizes fit ``--max-side``, and the options that depend on the device
    (fp8, offload, an attention backend) are usable on it. Raises ``ValueError``."""
    for size in settings.warmup_sizes:
        if max(int(side) for side in size.split("x")) > max_side:
            raise ValueError(f"--warmup-sizes {size} is over --max-side {max_side}")
    s = settings
    if s.quantize == "fp8" or s.offload != "none" or s.attention_backend:
        # These depend on the device: torch (and diffusers) are imported only here.
        from flux_server.execution.speedups import check_device_options, resolve_device

        check_device_options(resolve_device(s.device), s.quantize, s.offload, s.attention_backend)


def speed_options(
    settings: EngineSettings,
    device: str,
    default_size: tuple[int, int],
    max_batch_size: int,
) -> SpeedOptions:
    """What the engine applies on ``device`` (``cuda`` or ``cpu``, already chosen):
    ``--compile auto`` compiles on a GPU only, compiling warms up every batch size, and
    without ``--warmup-sizes`` a compiled engine warms up at the default size."""
    s = settings
    mode = s.compile
    if mode == "auto":
        mode = "regional" if device == "cuda" else "off"
    sizes = parse_sizes(s.warmup_sizes)
    if not sizes and mode != "off":
        sizes = (default_size,)
    return SpeedOptions(
        compile=mode,
        compile_backend=s.compile_backend,
        warmup_sizes=sizes,
        warmup_batch_sizes=tuple(range(1, max_batch_size + 1)) if mode != "off" else (1,),
        quantize=s.quantize,
        step_cache=parse_step_cache(s.step_cache),
        attention_backend=s.attention_backend,
        offload=s.offload,
        vae_slicing=s.vae_slicing,
        vae_tiling=s.vae_tiling,
        lora_max_rank=s.lora_max_rank,
    )
