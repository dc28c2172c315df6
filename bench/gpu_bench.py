"""The speed options on a FLUX.1-dev-sized transformer, against the hardware floor.

    make bench-gpu                       # on a CUDA machine: 1024x1024, 28 steps
    make bench-gpu ARGS="--tiny"         # end to end on a CPU with a tiny model (a check)
    python bench/gpu_bench.py --help

The transformer is built from FLUX.1-dev's own configuration (19 double-stream and 38
single-stream blocks, 24 heads of 128, 12B parameters) with random weights: nothing is
downloaded, and speed and memory do not depend on the weights' values. The text
encoders are replaced by random prompt embeddings of the shapes they produce (T5: 512
tokens x 4096, CLIP pooled: 768), so the timed part is what a server spends per image:
the denoising loop and the VAE decode (the real VAE configuration, random weights).

For each variant (eager, each option alone, the best combination) and batch size it
reports: seconds per image (median over --reps calls, after a warm-up); the warm-up (and
compile) time; peak accelerator memory; torch.compile graphs built by a call at a second
size and by a LoRA switch (both should be 0 after the warm-up); and the ratio of seconds
per image to the floor: the transformer's FLOPs (counted from its layer shapes: every
linear layer times the tokens it sees, plus attention) times the steps, divided by the
GPU's dense bf16 peak (a table of known GPUs; --peak-tflops for others). Prints a table
and writes JSON (--out).

Variants use the server's own code (flux_server.execution.speedups,
flux_server.execution.lora_hotswap), so
what is measured is what ``--compile``, ``--quantize``, ``--step-cache``,
``--attention-backend`` and ``--offload`` do in the server.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from flux_shapes import peak_tflops, transformer_flops
from gpu_pipeline import build_pipeline, generate, peak_memory, sync, write_loras

from flux_server.execution import speedups
from flux_server.execution.speedups import SpeedOptions, StepCache


@dataclass
class Variant:
    name: str
    options: SpeedOptions


@dataclass
class Result:
    variant: str
    batch: int
    seconds_per_image: float | None = None
    warmup_seconds: float | None = None
    peak_memory_gb: float | None = None
    recompiles_new_size: int | None = None
    recompiles_lora_switch: int | None = None
    floor_seconds_per_image: float | None = None
    ratio_to_floor: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- one variant ------------------------------------------------------------------------


def run_variant(variant: Variant, args: argparse.Namespace, workdir: Path) -> list[Result]:
    device = args.device
    torch._dynamo.reset()
    pipe, hot, flops = _prepared(variant.options, args, workdir)
    with peak_memory(device) as memory:
        results = _timed(pipe, hot, flops, variant.name, args)
    for result in results:
        result.peak_memory_gb = memory["gb"]
    if variant.options.compile != "off":
        new_size, lora_switch = _recompiles(pipe, hot, args)
        for result in results:
            result.recompiles_new_size = new_size
            result.recompiles_lora_switch = lora_switch
    del pipe
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return results


def _prepared(
    options: SpeedOptions, args: argparse.Namespace, workdir: Path
) -> tuple[Any, Any, float]:
    """The pipeline with the variant's options applied and compiled, its hot-swap LoRA
    holder (two adapters loaded) when the variant compiles and LoRA is on, and the FLOPs
    of one image's denoising (counted on the plain transformer, before any option)."""
    device, dtype = args.device, getattr(torch, args.dtype)
    pipe = build_pipeline(args.tiny, device, dtype, workdir)
    flops = transformer_flops(pipe.transformer, args.size, args.size) * args.steps
    with_lora = options.compile != "off" and not args.no_lora
    speedups.prepare(pipe, options, device, with_adapters=with_lora)
    hot = None
    if with_lora:
        from flux_server.execution import lora_hotswap

        specs = write_loras(pipe, workdir, (args.lora_ranks[0], args.lora_ranks[1]))
        hot = lora_hotswap.attached(pipe)
        assert hot is not None
        hot.load(specs, lambda spec: spec.path)
    speedups.compile_transformer(pipe, options)
    return pipe, hot, flops


def _timed(pipe: Any, hot: Any, flops: float, name: str, args: argparse.Namespace) -> list[Result]:
    """Warm every batch size up (with and without an adapter), then time each: the median
    of ``--reps`` runs, per image, against the GPU's floor for the same FLOPs."""
    device, size = args.device, (args.size, args.size)
    peak = args.peak_tflops or (
        peak_tflops(torch.cuda.get_device_name()) if device == "cuda" else None
    )
    started = time.perf_counter()
    for batch in args.batches:
        generate(pipe, batch, size, args.warmup_steps, device)
        if hot is not None:
            hot.activate({"lora0": 1.0})
            generate(pipe, batch, size, args.warmup_steps, device)
            hot.activate({})
    sync(device)
    warmup = time.perf_counter() - started
    results = []
    for batch in args.batches:
        times = []
        for _ in range(args.reps):
            sync(device)
            t0 = time.perf_counter()
            generate(pipe, batch, size, args.steps, device)
            sync(device)
            times.append(time.perf_counter() - t0)
        per_image = statistics.median(times) / batch
        floor = flops / (peak * 1e12) if peak else None
        results.append(
            Result(
                variant=name,
                batch=batch,
                seconds_per_image=per_image,
                warmup_seconds=warmup,
                floor_seconds_per_image=floor,
                ratio_to_floor=per_image / floor if floor else None,
            )
        )
    return results


def _recompiles(pipe: Any, hot: Any, args: argparse.Namespace) -> tuple[int, int | None]:
    """Graphs compiled for a new image size, and for switching adapters (None without)."""
    device, size = args.device, (args.size, args.size)
    second_size = (args.size, args.size * 3 // 4 // 16 * 16)
    before = speedups.compilations()
    generate(pipe, 1, second_size, args.warmup_steps, device)
    new_size = speedups.compilations() - before
    lora_switch = None
    if hot is not None:
        generate(pipe, 1, size, args.warmup_steps, device)
        before = speedups.compilations()
        for adapters in ({"lora0": 1.0}, {"lora1": 0.5}, {}):
            hot.activate(adapters)
            generate(pipe, 1, size, args.warmup_steps, device)
        lora_switch = speedups.compilations() - before
    return new_size, lora_switch


def variants(args: argparse.Namespace) -> list[Variant]:
    backend = "inductor" if not args.compile_backend else args.compile_backend
    cache = StepCache("first-block", args.fbc_threshold)
    eager = SpeedOptions()
    regional = SpeedOptions(compile="regional", compile_backend=backend)
    quant = "fp8" if args.device == "cuda" and _fp8_ok() else "int8"
    chosen = {
        "eager": eager,
        "compile-regional": regional,
        "compile-full": replace(regional, compile="full"),
        f"quantize-{quant}": replace(eager, quantize=quant),
        f"step-cache-{args.fbc_threshold:g}": replace(eager, step_cache=cache),
        "offload-model": replace(eager, offload="model"),
        "best": replace(regional, quantize=quant, step_cache=cache),
    }
    if args.attention_backend:
        chosen[f"attention-{args.attention_backend}"] = replace(
            eager, attention_backend=args.attention_backend
        )
        chosen["best"] = replace(chosen["best"], attention_backend=args.attention_backend)
    if args.device != "cuda":
        del chosen["offload-model"]
    only = set(args.only or chosen)
    return [Variant(name, options) for name, options in chosen.items() if name in only]


def _fp8_ok() -> bool:
    capability = speedups.cuda_capability()
    return capability is not None and capability >= speedups.FP8_MIN_CAPABILITY


def table(results: list[Result]) -> str:
    eager = {r.batch: r.seconds_per_image for r in results if r.variant == "eager"}
    lines = [
        f"{'variant':<22}{'batch':>6}{'s/image':>10}{'vs eager':>10}{'floor x':>9}"
        f"{'warm-up s':>11}{'peak GB':>9}{'recomp size':>13}{'recomp LoRA':>13}"
    ]

    def fmt(value: float | int | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in results:
        if r.error:
            lines.append(f"{r.variant:<22}{r.batch:>6}  failed: {r.error}")
            continue
        base = eager.get(r.batch)
        speed = base / r.seconds_per_image if base and r.seconds_per_image else None
        lines.append(
            f"{r.variant:<22}{r.batch:>6}{fmt(r.seconds_per_image, '.3f'):>10}"
            f"{fmt(speed, '.2f'):>9}x{fmt(r.ratio_to_floor, '.2f'):>9}"
            f"{fmt(r.warmup_seconds, '.1f'):>11}{fmt(r.peak_memory_gb, '.1f'):>9}"
            f"{fmt(r.recompiles_new_size, 'd'):>13}{fmt(r.recompiles_lora_switch, 'd'):>13}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/gpu_bench.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Run it on the GPU machine, alone (other work distorts the timings): "
        "make bench-gpu [ARGS='--out results.json --only eager best']. The defaults are "
        "FLUX.1-dev's: 1024x1024, 28 steps, bf16, batches 1 and 4. About 60 GB of GPU "
        "memory for the eager bf16 variant at batch 4 (the transformer alone is 24 GB). "
        "Each variant builds a fresh model; compile variants spend minutes in warm-up. "
        "--tiny runs every step on a CPU in a minute or two, with a tiny model, as a check "
        "of the bench itself (its timings mean nothing).",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model, CPU, small size")
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--dtype", default=None, help="bfloat16 (GPU default) or float32")
    parser.add_argument("--size", type=int, default=None, help="square side (default 1024)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 28)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 4")
    parser.add_argument("--reps", type=int, default=None, help="timed calls (default 3)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="variants to run (names as in the table)")
    parser.add_argument("--compile-backend", choices=["inductor", "aot_eager", "eager"])
    parser.add_argument("--attention-backend", help="also run this diffusers backend")
    parser.add_argument("--fbc-threshold", type=float, default=0.08)
    parser.add_argument("--lora-ranks", type=int, nargs=2, default=(16, 64))
    parser.add_argument("--no-lora", action="store_true", help="skip the LoRA switch check")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak if not in the table")
    parser.add_argument("--out", type=Path, default=Path("gpu-bench.json"))
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    args.device = args.device or ("cuda" if cuda else "cpu")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.size = args.size or (64 if args.tiny else 1024)
    args.steps = args.steps or (4 if args.tiny else 28)
    args.batches = args.batches or [1, 4] if not args.tiny else args.batches or [1, 2]
    args.reps = args.reps or (1 if args.tiny else 3)
    if args.tiny:
        args.compile_backend = args.compile_backend or "aot_eager"
        args.lora_ranks = (4, 8)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device; run with --tiny to check the bench on a CPU")
        return 2
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    print(
        f"FLUX.1-dev-sized transformer, random weights{' (tiny)' if args.tiny else ''}: "
        f"{args.size}x{args.size}, {args.steps} steps, {args.dtype}, on {name or args.device}"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fluxserve-gpu-bench-") as tmp:
        for variant in variants(args):
            try:
                results += run_variant(variant, args, Path(tmp))
            except Exception as exc:  # one variant's failure (OOM, kernel) is a result
                message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                results += [Result(variant.name, b, error=message) for b in args.batches]
            print(
                "\n".join(table([r for r in results if r.variant == variant.name]).splitlines()[1:])
            )
    print()
    print(table(results))
    payload = {
        "device": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": [asdict(r) for r in results],
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
