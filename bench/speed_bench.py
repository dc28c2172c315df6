"""The speed options on a CPU, side by side with eager (``make bench``, after the
serving bench): the bench-size random FLUX (``python -m flux_server.tiny_model --size
bench``), loaded by the server's own ``Engine`` with each option, 256x256.

For each option: the warm-up (compile) time, seconds per image (median of --reps calls,
the variants taken in turn so a change in the machine's load hits them all), the ratio
to eager, and how much the image changes against eager with the same seed: the mean
absolute pixel difference (0-255) and the PSNR in dB (inf: identical).

The weights are random, so a step cache skips steps as the random model's residuals
dictate, not as FLUX.1-dev's would: the speed and image-change figures of the step
caches show the mechanism and its order of magnitude, not the trained model's trade-off.
On a CPU, compile gains little (the matmuls are already the library's); the GPU figures
come from ``make bench-gpu``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SIZE = 256

VARIANTS: dict[str, dict[str, object]] = {
    "eager": {},
    "compile regional": {"compile": "regional"},
    "compile full": {"compile": "full"},
    "quantize int8": {"quantize": "int8"},
    "step-cache first-block:0.08": {"step_cache": "first-block:0.08"},
    "step-cache first-block:0.2": {"step_cache": "first-block:0.2"},
    "step-cache taylorseer:2": {"step_cache": "taylorseer:2"},
}


def _job(steps: int, seed: int):  # type: ignore[no-untyped-def]
    from flux_server.execution.inputs import TextToImage

    return TextToImage(
        "a city at dusk", width=SIZE, height=SIZE, steps=steps, guidance_scale=3.5, seed=seed
    )


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def load_engines(model: str, names: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """One server ``Engine`` per variant, warmed up, and each one's warm-up seconds."""
    from flux_server.execution.engine import Engine
    from flux_server.settings import ServerSettings

    engines: dict[str, Engine] = {}
    warmup: dict[str, float] = {}
    for name in names:
        settings = ServerSettings.model_validate(
            {
                "model": model,
                "device": "cpu",
                "max_batch_size": 1,
                "warmup_sizes": (f"{SIZE}x{SIZE}",),
                **VARIANTS[name],
            }
        )
        engine = Engine.load(model, device="cpu", speed=settings.speed_options("cpu"))
        started = time.perf_counter()
        engine.warmup()
        warmup[name] = time.perf_counter() - started
        engines[name] = engine
    return engines, warmup


def print_table(
    names: list[str],
    warmup: dict[str, float],
    times: dict[str, list[float]],
    images: dict[str, list[np.ndarray]],
    reps: int,
) -> None:
    base = statistics.median(times["eager"])
    print(
        f"    {'option':<30}{'warm-up s':>10}{'s/image':>9}{'vs eager':>10}"
        f"{'mean |diff|':>13}{'PSNR dB':>9}"
    )
    for name in names:
        median = statistics.median(times[name])
        diffs = [np.abs(a - b).mean() for a, b in zip(images[name], images["eager"], strict=True)]
        scores = [psnr(a, b) for a, b in zip(images[name], images["eager"], strict=True)]
        print(
            f"    {name:<30}{warmup[name]:>10.1f}{median:>9.3f}{base / median:>9.2f}x"
            f"{statistics.mean(diffs):>13.3f}{min(scores):>9.1f}"
        )
    print(
        f"    (median of {reps}; 'vs eager' > 1 is faster; PSNR: the worst of the "
        f"{reps} seeds; load average now {os.getloadavg()[0]:.2f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--only", nargs="+", help="variants (default: all)")
    args = parser.parse_args()

    from flux_server.tools.tiny_model import write_tiny_flux

    names = [n for n in VARIANTS if not args.only or n in args.only or n == "eager"]
    with tempfile.TemporaryDirectory(prefix="fluxserve-speed-") as tmp:
        model = str(write_tiny_flux(Path(tmp) / "model", size="bench"))
        print(
            f"speed options, random FLUX (bench size), {SIZE}x{SIZE}, {args.steps} steps, "
            f"CPU ({os.cpu_count()} cores), load average {os.getloadavg()[0]:.2f}"
        )
        engines, warmup = load_engines(model, names)
        times: dict[str, list[float]] = {name: [] for name in names}
        images: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for rep in range(args.reps):
            for name, engine in engines.items():
                started = time.perf_counter()
                (generated,) = engine.generate([_job(args.steps, seed=rep)])
                times[name].append(time.perf_counter() - started)
                images[name].append(_pixels(generated[0].image))
    print_table(names, warmup, times, images, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
