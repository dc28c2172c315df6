"""What live previews cost (``make bench``): the bench-size random FLUX (16 latent
channels, as FLUX.1-dev), loaded by the server's own ``Engine``, one image per call.

Two figures, interleaved calls so a change in the machine's load hits both:

* the preview hook's own time, measured around it inside the step callback (unpack,
  latent->RGB, WebP encode): milliseconds per preview, and as a share of the step time;
  this is the engine thread's cost, the one every request in the batch waits for;
* seconds per image with previews at every step (the worst case) and every
  ``--preview-every`` (default 4) against none: the same cost seen end to end (noisier).

The goal is a cost of at most 2% of the step time at the default ``--preview-every``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_EVERY = 4
GOAL = 0.02


class TimedHook:
    """A preview hook with a stopwatch around it."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.seconds: list[float] = []

    def __call__(self, step: int, total: int, tensors: Any) -> None:
        started = time.perf_counter()
        self.hook(step, total, tensors)
        if not (step % self.hook.every or step >= total):
            self.seconds.append(time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--size", type=int, default=256, help="image side, pixels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="a FLUX directory (default: the bench-size random one)")
    args = parser.parse_args()

    from flux_server.execution.engine import Engine
    from flux_server.execution.inputs import TextToImage
    from flux_server.execution.previews import PreviewHook, build_decoder
    from flux_server.tools.tiny_model import write_tiny_flux

    with tempfile.TemporaryDirectory(prefix="fluxserve-previews-") as tmp:
        model = args.model or str(write_tiny_flux(Path(tmp) / "model", size="bench"))
        engine = Engine.load(model, device=args.device)
        decoder = build_decoder("linear", engine.pipe, None, engine.device)
        channels = engine.pipe.vae.config.latent_channels
        print(
            f"live previews (linear, {channels} latent channels), {args.size}x{args.size}, "
            f"{args.steps} steps, {args.device} ({os.cpu_count()} cores), "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        job = TextToImage("a city at dusk", args.size, args.size, args.steps, 3.5, seed=0)
        engine.generate([job])  # warm: first-call allocations
        variants = {"none": None, "every 1": 1, f"every {DEFAULT_EVERY}": DEFAULT_EVERY}
        times: dict[str, list[float]] = {name: [] for name in variants}
        hooks: dict[str, TimedHook] = {}
        for _ in range(args.reps):
            for name, every in variants.items():
                step_hooks: list[Any] = []
                if every is not None:
                    hook = PreviewHook(decoder, every, [(lambda p: None, 0)], args.size, args.size)
                    timed = hooks.setdefault(name, TimedHook(hook))
                    timed.hook = hook
                    step_hooks = [timed]
                started = time.perf_counter()
                engine.generate([job], step_hooks=step_hooks)
                times[name].append(time.perf_counter() - started)
    report(times, hooks, args.steps)
    return 0


def report(times: dict[str, list[float]], hooks: dict[str, TimedHook], steps: int) -> None:
    base = statistics.median(times["none"])
    step_s = base / steps
    preview_s = statistics.median([s for h in hooks.values() for s in h.seconds])
    print(f"    step time {step_s * 1000:.1f} ms; one preview {preview_s * 1000:.2f} ms")
    print(f"    {'previews':<12}{'s/image':>9}{'vs none':>9}{'hook/step':>11}")
    for name, samples in times.items():
        median = statistics.median(samples)
        every = 0 if name == "none" else int(name.split()[-1])
        share = 0.0 if not every else preview_s / every / step_s
        print(f"    {name:<12}{median:>9.3f}{median / base:>8.3f}x{share:>10.2%}")
    default = preview_s / DEFAULT_EVERY / step_s
    verdict = "within" if default <= GOAL else "OVER"
    print(
        f"    at --preview-every {DEFAULT_EVERY}: {default:.2%} of the step time, {verdict} "
        f"the {GOAL:.0%} goal (hook/step: the hook's own time per step, the figure that counts)"
    )


if __name__ == "__main__":
    sys.exit(main())
