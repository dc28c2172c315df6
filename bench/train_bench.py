"""LoRA training speed and memory on FLUX.1-dev's shapes: ``make bench-train``.

    make bench-train                      # on a CUDA GPU: bf16 and QLoRA, 512 and 1024 px
    make bench-train ARGS="--tiny"        # the same steps on the tiny model, on a CPU

FLUX.1-dev's transformer (12B parameters, from bench/flux_shapes.py) with random
weights, trained by the trainer's own code: ``add_lora`` (rank 16 on the default
targets, gradient checkpointing), ``make_optimizer`` (8-bit AdamW where bitsandbytes
is present) and ``training_loss`` on cached latents and T5/CLIP embeddings of the real
shapes (512 text tokens). QLoRA loads the same random weights, saved once, through the
trainer's NF4 path. Each row reports seconds per step, the peak of allocated GPU memory
(weights included) and the time 1,000 steps take at that speed (the loop alone:
loading, caching and checkpoints come on top).

diffusers' figures for FLUX.1-dev LoRA at 512 px (blog "Fine-tuning FLUX.1-dev on
consumer hardware", with 8-bit AdamW, gradient checkpointing and cached latents): QLoRA
about 9 GB, bf16 LoRA about 26 GB.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from flux_shapes import FLUX_DEV_TRANSFORMER, TEXT_TOKENS

from flux_trainer.config import TrainConfig
from flux_trainer.encode import Cached, Prompt
from flux_trainer.flow import training_loss
from flux_trainer.model import Placement, add_lora, load_4bit_transformer
from flux_trainer.optim import make_optimizer

PUBLISHED_GB = {"qlora": 9.0, "bf16": 26.0}  # diffusers, 512 px (see the docstring)


@dataclass
class Row:
    variant: str
    size: int
    s_per_step: float | None = None
    peak_gb: float | None = None
    minutes_per_1000: float | None = None
    optimizer: str | None = None
    error: str | None = None


def build_transformer(tiny: bool, device: torch.device, workdir: Path) -> Any:
    """Random weights in bf16 (float32 on the CPU), built on the device."""
    from diffusers import FluxTransformer2DModel

    if tiny:
        from flux_server.tools.tiny_model import SIZES, build_pipeline

        return build_pipeline(SIZES["tiny"]).transformer.to(device)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            return FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
    finally:
        torch.set_default_dtype(default)


def example(transformer: Any, size: int, where: Placement, tokens: int) -> Cached:
    """One cached example of the shapes ``size`` pixels and ``tokens`` text tokens give."""
    config = transformer.config
    generator = torch.Generator().manual_seed(0)
    channels, side = config.in_channels // 4, size // 8

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(where.device, where.dtype)

    prompt = Prompt(randn(tokens, config.joint_attention_dim), randn(config.pooled_projection_dim))
    return Cached(randn(channels, side, side), randn(channels, side, side).abs() * 0.1, prompt)


class _VaeConfig:
    shift_factor, scaling_factor = 0.1159, 0.3611  # FLUX.1-dev's VAE


def time_steps(
    transformer: Any, config: TrainConfig, where: Placement, size: int, args: argparse.Namespace
) -> Row:
    from diffusers import FlowMatchEulerDiscreteScheduler

    cuda = where.device.type == "cuda"
    params = add_lora(transformer, config)
    optimizer, name = make_optimizer(params, config, where)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    batch = [example(transformer, size, where, args.tokens)]
    generator = torch.Generator().manual_seed(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    transformer.train()
    started = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
        loss = training_loss(transformer, batch, scheduler, _VaeConfig(), config, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - started) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return Row(
        "", size, round(per_step, 4), peak and round(peak, 2), round(per_step * 1000 / 60, 1), name
    )


def run_variant(variant: str, args: argparse.Namespace, workdir: Path) -> list[Row]:
    device = torch.device("cpu" if args.tiny else "cuda")
    config = TrainConfig(base=str(workdir), dataset="-", output="-", qlora=variant == "qlora")
    where = Placement(device, torch.float32 if args.tiny else torch.bfloat16)
    rows = []
    for size in args.sizes:
        try:
            if variant == "qlora":
                transformer = load_4bit_transformer(config, where)
            else:
                transformer = build_transformer(args.tiny, device, workdir)
            row = time_steps(transformer, config, where, size, args)
        except Exception as exc:  # an OOM or a missing kernel is a result, not a crash
            row = Row("", size, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        row.variant = "fp32" if args.tiny and variant == "bf16" else variant  # tiny: CPU
        rows.append(row)
        print(line(row), flush=True)
        transformer = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def save_for_qlora(workdir: Path) -> None:
    """Random FLUX.1-dev weights on disk, as from_pretrained reads them (24 GB)."""
    transformer = build_transformer(False, torch.device("cuda"), workdir)
    transformer.save_pretrained(workdir / "transformer")
    del transformer
    gc.collect()
    torch.cuda.empty_cache()


def line(row: Row) -> str:
    if row.error:
        return f"{row.variant:>6} {row.size:>5} px  failed: {row.error}"
    peak = f"{row.peak_gb:7.2f} GB" if row.peak_gb is not None else "      n/a"
    published = PUBLISHED_GB.get(row.variant)
    ref = f"  (diffusers: ~{published:g} GB at 512 px)" if published and row.size == 512 else ""
    return (
        f"{row.variant:>6} {row.size:>5} px  {row.s_per_step:8.3f} s/step  {peak}  "
        f"1,000 steps: {row.minutes_per_1000:6.1f} min  [{row.optimizer}]{ref}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model, on the CPU (a check)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="pixels (default 512 1024; tiny 64 128)"
    )
    parser.add_argument(
        "--variants", nargs="+", choices=("bf16", "qlora"), default=["bf16", "qlora"]
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; tiny 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--out", type=Path, default=Path("train-bench.json"))
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([64, 128] if args.tiny else [512, 1024])
    args.steps = args.steps or (5 if args.tiny else 10)
    args.tokens = 32 if args.tiny else TEXT_TOKENS
    if args.tiny and "qlora" in args.variants:
        print("qlora: skipped with --tiny: bitsandbytes' 4-bit kernels need CUDA")
        args.variants = [v for v in args.variants if v != "qlora"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print(
            "train_bench: skipped: no CUDA device (FLUX.1-dev's 12B-parameter shapes need a "
            "GPU); ARGS=--tiny runs the same steps on the tiny model on this CPU"
        )
        return 0
    device = torch.cuda.get_device_name() if not args.tiny else platform.processor() or "cpu"
    print(f"LoRA training on {'the tiny model' if args.tiny else 'FLUX.1-dev shapes'}, {device}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fluxserve-train-bench-") as tmp:
        for variant in args.variants:
            if variant == "qlora":
                save_for_qlora(Path(tmp))
            rows += run_variant(variant, args, Path(tmp))
    payload = {
        "device": device,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "published_peak_gb_512px": PUBLISHED_GB,
        "rows": [asdict(r) for r in rows],
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
