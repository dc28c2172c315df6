"""Priority at the step: pausing the running call (what the server does) against joining
it (not built), measured where they differ, the transformer's step (``make bench``).

A priority request that arrives while a batch of ``n`` images runs can

* **pause** the batch at the next step boundary and run alone: it takes ``s x t(1)``,
  and the paused batch waits that long;
* **join** the batch at its own timestep (the FLUX transformer takes one per sample):
  it takes ``s x t(n+1)``, and the batch's shared steps each take ``t(n+1) - t(n)``
  longer.

``t(b)`` is one transformer forward at batch ``b``, measured here on the bench-size
random FLUX at one image size, the batch sizes interleaved so a change in the machine's
load hits all of them. Both ways first wait for the running step to end, which is the
same for both and left out. The figures: the priority request's latency joining ÷
pausing, ``t(n+1) / t(1)``, and what joining costs the batch ÷ what pausing costs it,
``(t(n+1) - t(n)) / t(1)``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def inputs(transformer: Any, batch: int, size: int, text_tokens: int) -> dict[str, Any]:
    """Random inputs of one denoising step: ``batch`` images of ``size`` px, packed as
    the FLUX pipeline packs them (2x2 latent patches, VAE scale 8), on the
    transformer's device and in its dtype."""
    import torch

    config = transformer.config
    side = size // 16
    kwargs: dict[str, Any] = {
        "hidden_states": torch.randn(batch, side * side, config.in_channels),
        "encoder_hidden_states": torch.randn(batch, text_tokens, config.joint_attention_dim),
        "pooled_projections": torch.randn(batch, config.pooled_projection_dim),
        "timestep": torch.full((batch,), 0.5),
        "img_ids": torch.zeros(side * side, 3),
        "txt_ids": torch.zeros(text_tokens, 3),
        "return_dict": False,
    }
    if config.guidance_embeds:
        kwargs["guidance"] = torch.full((batch,), 3.5)
    return {
        k: v.to(transformer.device, transformer.dtype) if isinstance(v, torch.Tensor) else v
        for k, v in kwargs.items()
    }


def step_times(
    transformer: Any, batches: list[int], size: int, text_tokens: int, reps: int
) -> dict[int, float]:
    """Median seconds of one forward per batch size, the sizes interleaved."""
    import torch

    prepared = {b: inputs(transformer, b, size, text_tokens) for b in batches}
    seconds: dict[int, list[float]] = {b: [] for b in batches}
    cuda = transformer.device.type == "cuda"
    with torch.inference_mode():
        for b in batches:  # warm-up: first calls allocate
            transformer(**prepared[b])
        for _ in range(reps):
            for b in batches:
                started = time.perf_counter()
                transformer(**prepared[b])
                if cuda:  # the call returns before the GPU is done
                    torch.cuda.synchronize()
                seconds[b].append(time.perf_counter() - started)
    return {b: statistics.median(s) for b, s in seconds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--size", type=int, default=256, help="image side, pixels")
    parser.add_argument("--batch", type=int, default=4, help="the running batch's images (n)")
    parser.add_argument("--text-tokens", type=int, default=128)
    parser.add_argument("--model", help="a FLUX directory (default: the bench-size random one)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (bfloat16)")
    args = parser.parse_args()
    if args.size % 16 or args.batch < 1:
        sys.exit("--size must be a multiple of 16 and --batch at least 1")

    import torch
    from diffusers import FluxTransformer2DModel

    from flux_server.tools.tiny_model import write_tiny_flux

    with tempfile.TemporaryDirectory(prefix="fluxserve-join-") as tmp:
        model = args.model or str(write_tiny_flux(Path(tmp) / "model", size="bench"))
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
        transformer = (
            FluxTransformer2DModel.from_pretrained(
                model, subfolder="transformer", torch_dtype=dtype
            )
            .to(args.device)
            .eval()
        )
        n = args.batch
        t = step_times(transformer, [1, n, n + 1], args.size, args.text_tokens, args.reps)
    print(
        f"\n(join) priority at the step: {args.size}x{args.size}, a running batch of {n}, "
        f"median of {args.reps} forwards on {args.device} ({torch.get_num_threads()} CPU threads)"
    )
    print(f"    t(1) {t[1] * 1000:.1f} ms   t({n}) {t[n] * 1000:.1f} ms   "
          f"t({n + 1}) {t[n + 1] * 1000:.1f} ms")  # fmt: skip
    print(f"    priority latency, joining ÷ pausing:       {t[n + 1] / t[1]:.2f}x")
    print(f"    cost to the batch, joining ÷ pausing:      {(t[n + 1] - t[n]) / t[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
