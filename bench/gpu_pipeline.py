"""The pipeline ``bench/gpu_bench.py`` times: FLUX.1-dev's transformer and VAE with
random weights (or the tiny test model) fed random prompt embeddings of the text
encoders' shapes, random LoRAs, and peak-memory measurement."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from flux_shapes import FLUX_DEV_SCHEDULER, FLUX_DEV_TRANSFORMER, FLUX_DEV_VAE, TEXT_TOKENS


def build_pipeline(tiny: bool, device: str, dtype: torch.dtype, workdir: Path) -> Any:
    """FLUX.1-dev's transformer and VAE with random weights (or the tiny test model),
    without text encoders: the bench passes prompt embeddings."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    if tiny:
        from flux_server.tools.tiny_model import write_tiny_flux

        model = write_tiny_flux(workdir / "tiny")
        pipe = FluxPipeline.from_pretrained(str(model), dtype=dtype)
        pipe.text_encoder = pipe.text_encoder_2 = pipe.tokenizer = pipe.tokenizer_2 = None
    else:
        # Built on the device in the target dtype: 12B parameters never pass through
        # host memory in float32.
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                transformer = FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
                vae = AutoencoderKL(**FLUX_DEV_VAE)
        finally:
            torch.set_default_dtype(default)
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
            vae=vae,
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            transformer=transformer,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embeddings(pipe: Any, batch: int, device: str) -> dict[str, torch.Tensor]:
    config = pipe.transformer.config
    generator = torch.Generator("cpu").manual_seed(0)
    dtype = pipe.transformer.dtype
    return {
        "prompt_embeds": torch.randn(
            batch, TEXT_TOKENS, config.joint_attention_dim, generator=generator
        ).to(device, dtype),
        "pooled_prompt_embeds": torch.randn(
            batch, config.pooled_projection_dim, generator=generator
        ).to(device, dtype),
    }


def generate(pipe: Any, batch: int, size: tuple[int, int], steps: int, device: str) -> Any:
    width, height = size
    return pipe(
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=3.5,
        generator=[torch.Generator("cpu").manual_seed(i) for i in range(batch)],
        output_type="np",
        **embeddings(pipe, batch, device),
    ).images


def write_loras(pipe: Any, root: Path, ranks: tuple[int, int]) -> list[Any]:
    """Two random LoRAs on the attention projections, of different ranks."""
    from safetensors.torch import save_file

    from flux_server.execution.lora import TARGET_MODULES, LoraSpec

    specs = []
    for index, rank in enumerate(ranks):
        generator = torch.Generator("cpu").manual_seed(index)
        state = {}
        for name, module in pipe.transformer.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(TARGET_MODULES):
                a = torch.randn(rank, module.in_features, generator=generator) * 0.01
                b = torch.randn(module.out_features, rank, generator=generator) * 0.01
                state[f"transformer.{name}.lora_A.weight"] = a.to(torch.bfloat16)
                state[f"transformer.{name}.lora_B.weight"] = b.to(torch.bfloat16)
        path = root / f"lora{index}.safetensors"
        save_file(state, str(path))
        specs.append(LoraSpec(name=f"lora{index}", path=str(path)))
    return specs


@contextlib.contextmanager
def peak_memory(device: str) -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        yield out
        torch.cuda.synchronize()
        out["gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        yield out
        # The process's high-water mark (the CPU has no per-phase reset).
        out["gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
