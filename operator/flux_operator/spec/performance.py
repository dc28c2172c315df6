"""``spec.performance``: the server's speed options (torch.compile, warm-up sizes,
quantisation, step cache, attention kernel, offload, VAE); ``render.pod`` turns them into
the server's flags."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from flux_operator.spec.base import ObjectName, RelativePath, _Model

SIZE_PATTERN = r"^[1-9][0-9]{1,3}x[1-9][0-9]{1,3}$"
STEP_CACHE_PATTERN = r"^(off|first-block:0?\.[0-9]+|taylorseer:([2-9]|10))$"


class CompileCacheSpec(_Model):
    """Where torch's compiled kernels are kept across restarts (--compile-cache): the
    server keys them by torch, diffusers and GPU versions and the warm-up shapes."""

    claim_name: ObjectName | None = Field(
        default=None,
        description="A ReadWriteMany PVC the pods share (kept across pods and nodes); "
        "absent: the pod's cache volume (kept across container restarts only).",
    )
    sub_path: RelativePath | None = Field(
        default=None, description="Directory inside the PVC (relative, no leading slash)."
    )


class StartupSeconds(_Model):
    """What one start took, by phase, as the server measured it
    (fluxserve_startup_seconds{phase}): the startupProbe is sized from them."""

    download: int = Field(default=0, ge=0, le=86400, description="Fetching the weights.")
    load: int = Field(default=0, ge=0, le=86400, description="Loading them onto the device.")
    compile: int = Field(default=0, ge=0, le=86400, description="torch.compile.")
    warmup: int = Field(default=0, ge=0, le=86400, description="The warm-up generations.")


class PerformanceSpec(_Model):
    """Speed options of the server (each a flag of ``python -m flux_server``)."""

    compile: Literal["auto", "off", "regional", "full"] = Field(
        default="auto",
        description="torch.compile: regional (the repeated blocks), full, off; auto: regional "
        "on a GPU (--compile).",
    )
    warmup_sizes: list[Annotated[str, StringConstraints(max_length=9, pattern=SIZE_PATTERN)]] = (
        Field(
            default_factory=list,
            max_length=16,
            description="WIDTHxHEIGHT sizes compiled and run at every batch size before the pod "
            "turns ready (--warmup-sizes); other sizes compile on first use.",
        )
    )
    quantize: Literal["none", "fp8", "int8"] = Field(
        default="none",
        description="torchao on the transformer: fp8 (compute capability 8.9+) or int8 "
        "weight-only (--quantize).",
    )
    step_cache: str = Field(
        default="off",
        max_length=64,
        pattern=STEP_CACHE_PATTERN,
        description="off, first-block:THRESHOLD or taylorseer:INTERVAL (--step-cache): faster, "
        "slightly different images.",
    )
    attention_backend: str | None = Field(
        default=None,
        max_length=40,
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
    compile_cache: CompileCacheSpec | None = Field(
        default=None,
        description="Keep compiled kernels across restarts (--compile-cache): a restart "
        "loads them instead of compiling again.",
    )
    startup_seconds: StartupSeconds | None = Field(
        default=None,
        description="Measured start phases: the startupProbe allows twice their sum (the "
        "download left out when the weights come from a PVC or the model cache); absent: "
        "30 minutes.",
    )
    lora_max_rank: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="LoRA rank the compiled hot-swap slot is prepared for (--lora-max-rank); "
        "default: the largest adapter's.",
    )
