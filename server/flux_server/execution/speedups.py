"""The speed options, applied to the pipeline at load time: torch.compile (regional or
full), torchao quantisation, diffusers' step caches and attention dispatcher, CPU
offload, VAE slicing and tiling, and the counter of compilations after ready.

Order matters and is kept here, in one place:
  ``prepare`` (after loading, before LoRA adapters): quantise, attention backend, step
  cache, placement/offload, VAE; ``enable_lora_hotswap`` when compiling with adapters.
  ``compile`` (after the adapters are loaded, before the warm-up).
The parsers are pure and import no torch, so the settings can check values at start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

CompileMode = Literal["auto", "off", "regional", "full"]
CompileBackend = Literal["inductor", "aot_eager", "eager"]
Quantize = Literal["none", "fp8", "int8"]
Offload = Literal["none", "model", "sequential"]

_SIZE = re.compile(r"^(\d+)x(\d+)$")
STEP_CACHE_KINDS = {
    "first-block": "first-block:THRESHOLD (e.g. first-block:0.05; 0 < THRESHOLD < 1)",
    "taylorseer": "taylorseer:INTERVAL (full steps every INTERVAL steps, 2 to 10)",
}
# Compute capability from which torch's scaled fp8 matmul runs (Ada, Hopper, Blackwell).
FP8_MIN_CAPABILITY = (8, 9)
# Backends the dispatcher can run on a CPU (the others check for CUDA at call time).
_CPU_BACKENDS = ("native", "_native_math")


def parse_sizes(values: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """``["1024x1024,768x1344", ...]`` → ``((1024, 1024), (768, 1344))``."""
    sizes: list[tuple[int, int]] = []
    for value in values:
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            match = _SIZE.match(part)
            if not match:
                raise ValueError(f"{part!r} is not WIDTHxHEIGHT (e.g. 1024x1024)")
            width, height = int(match[1]), int(match[2])
            if width < 64 or height < 64 or width % 16 or height % 16:
                raise ValueError(f"{part}: width and height must be multiples of 16, at least 64")
            if (width, height) not in sizes:
                sizes.append((width, height))
    return tuple(sizes)


@dataclass(frozen=True)
class StepCache:
    kind: Literal["off", "first-block", "taylorseer"]
    value: float = 0.0


def parse_step_cache(value: str) -> StepCache:
    """``off``, ``first-block:0.05`` or ``taylorseer:4``."""
    text = value.strip().lower()
    if text in ("off", "none", ""):
        return StepCache("off")
    kind, _, raw = text.partition(":")
    forms = "; ".join(["off", *STEP_CACHE_KINDS.values()])
    if kind not in STEP_CACHE_KINDS:
        raise ValueError(f"{value!r} is not a step cache (use {forms})")
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"{value!r}: expected {STEP_CACHE_KINDS[kind]}") from None
    if kind == "first-block" and not 0 < number < 1:
        raise ValueError(f"{value!r}: expected {STEP_CACHE_KINDS[kind]}")
    if kind == "taylorseer" and (number != int(number) or not 2 <= number <= 10):
        raise ValueError(f"{value!r}: expected {STEP_CACHE_KINDS[kind]}")
    return StepCache(kind, number)  # type: ignore[arg-type]


def cuda_capability() -> tuple[int, int] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return int(major), int(minor)


def available_attention_backends(device: str) -> list[str]:
    """The dispatcher's backends usable here without a download (``*_hub`` backends
    fetch kernels from the hub at start; this server runs offline)."""
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
    )

    usable = []
    for backend in AttentionBackendName:
        name = backend.value
        if name.endswith("_hub") or name in ("_native_npu", "_native_xla"):
            continue
        if device == "cpu" and name not in _CPU_BACKENDS:
            continue
        try:
            _check_attention_backend_requirements(backend)
        except (RuntimeError, ImportError):
            continue
        usable.append(name)
    return usable


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def check_device_options(
    device: str, quantize: str, offload: str, attention_backend: str | None
) -> None:
    """Refuse options this device cannot run, in one line saying what is needed."""
    if quantize == "fp8":
        capability = cuda_capability() if device == "cuda" else None
        if capability is None or capability < FP8_MIN_CAPABILITY:
            found = "no CUDA GPU" if capability is None else f"compute capability {capability}"
            raise ValueError(
                "--quantize fp8 needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, "
                f"Blackwell); here: {found}. Use --quantize int8 (weight-only) instead"
            )
    if offload != "none" and device != "cuda":
        raise ValueError(f"--offload {offload} moves weights to a CUDA GPU on demand; needs one")
    if attention_backend is not None:
        usable = available_attention_backends(device)
        if attention_backend not in usable:
            raise ValueError(
                f"--attention-backend {attention_backend!r} is unknown or unusable on {device} "
                f"(available: {', '.join(usable)})"
            )


@dataclass(frozen=True)
class SpeedOptions:
    """The speed settings the engine applies (``ServerSettings.speed_options``)."""

    compile: Literal["off", "regional", "full"] = "off"
    compile_backend: CompileBackend = "inductor"
    warmup_sizes: tuple[tuple[int, int], ...] = ()
    warmup_batch_sizes: tuple[int, ...] = (1,)
    quantize: Quantize = "none"
    step_cache: StepCache = StepCache("off")
    attention_backend: str | None = None
    offload: Offload = "none"
    vae_slicing: bool = True
    vae_tiling: bool = False
    lora_max_rank: int | None = None


def quantize_transformer(pipe: Any, quantize: Quantize) -> None:
    """torchao: fp8 dynamic activations and weights (row-wise scales), or int8
    weight-only; the transformer only (it is where the time goes)."""
    if quantize == "none":
        return
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
        quantize_,
    )

    config = (
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
        if quantize == "fp8"
        else Int8WeightOnlyConfig()
    )
    quantize_(pipe.transformer, config)


def enable_step_cache(pipe: Any, cache: StepCache) -> None:
    if cache.kind == "off":
        return
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    if cache.kind == "first-block":
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=cache.value))
    else:
        pipe.transformer.enable_cache(
            TaylorSeerCacheConfig(
                cache_interval=int(cache.value), taylor_factors_dtype=pipe.transformer.dtype
            )
        )


def prepare(pipe: Any, options: SpeedOptions, device: str, with_adapters: bool) -> None:
    """Everything that goes before the LoRA adapters load (engine thread)."""
    quantize_transformer(pipe, options.quantize)
    if options.attention_backend is not None:
        pipe.transformer.set_attention_backend(options.attention_backend)
    enable_step_cache(pipe, options.step_cache)
    if options.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif options.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if options.vae_slicing:
        pipe.vae.enable_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.compile != "off" and with_adapters:
        from flux_server.execution import lora_hotswap

        lora_hotswap.attach(pipe, options.lora_max_rank)


def compile_transformer(pipe: Any, options: SpeedOptions) -> None:
    """torch.compile the repeated blocks (regional) or the whole transformer (full).
    Idempotent: the engine calls it once, after the adapters are loaded."""
    if options.compile == "off" or getattr(pipe, "_fluxserve_compiled", False):
        return
    import torch

    # One graph per shape class rather than one per size: sizes and batch sizes after
    # the first are compiled with dynamic shapes, once.
    torch._dynamo.config.automatic_dynamic_shapes = True
    # Batch sizes 1..N and several sizes each add a variant; the default limit (8)
    # would fall back to eager without saying so.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    kwargs: dict[str, Any] = {"backend": options.compile_backend}
    if options.compile == "regional":
        pipe.transformer.compile_repeated_blocks(**kwargs)
    else:
        pipe.transformer.compile(**kwargs)
    pipe._fluxserve_compiled = True


# --- compilations after ready ---------------------------------------------------------

_baseline: int | None = None


def compilations() -> int:
    """Graphs torch.compile has built in this process (dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def mark_ready() -> None:
    global _baseline
    _baseline = compilations()


def recompiles_since_ready() -> int:
    """Graphs built after ``mark_ready``: each one a request that waited for a compile."""
    if _baseline is None:
        return 0
    return compilations() - _baseline
