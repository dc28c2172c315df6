"""The engine: a loaded ``FluxPipeline`` and one synchronous call per batch.

Everything here is blocking and runs in the engine's single worker thread (the
scheduler hands batches over with ``run_in_executor``), so the event loop never
waits on torch. One ``torch.Generator`` per image, always on the CPU, makes the
same seed give the same image on any device and in any batch position.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from flux_server.execution import speedups
from flux_server.execution.cancellation import GenerationInterrupted
from flux_server.execution.inputs import Picture, ProgressFn, StopFn, TextToImage, split_rows
from flux_server.execution.startup import StartupPhases, fetch_weights
from flux_server.execution.step_hooks import StepHook, chain, progress_and_stop

log = logging.getLogger(__name__)

AdapterHook = Callable[[Any, dict[str, float]], None]
"""Switches the pipeline's LoRA adapters to the given weights before a call."""


def choose_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    return requested


def choose_dtype(requested: str, device: str) -> Any:
    import torch

    if requested == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # Half precision on CPU is slow and, for bfloat16, lossy for no gain.
        return torch.float32
    return getattr(torch, requested)


@dataclass
class ModelInfo:
    model: str
    revision: str | None
    device: str
    dtype: str
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


class Engine:
    """A loaded FLUX pipeline. ``.pipe`` is shared with the editing pipelines
    (built from it with ``from_pipe``)."""

    def __init__(
        self, pipe: Any, info: ModelInfo, speed: speedups.SpeedOptions | None = None
    ) -> None:
        self.pipe = pipe
        self.speed = speed or speedups.SpeedOptions()
        self.info = info
        self.device = info.device
        self.dtype = pipe.dtype if hasattr(pipe, "dtype") else None
        self.adapter_hook: AdapterHook | None = None
        self._active_adapters: dict[str, float] | None = None

    @classmethod
    def load(
        cls,
        model: str,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        speed: speedups.SpeedOptions | None = None,
        *,
        with_adapters: bool = False,
        phases: StartupPhases | None = None,
    ) -> Engine:
        """Load a FLUX pipeline from a directory or a hub id (``HF_TOKEN`` from the
        environment, read by huggingface_hub itself), with the ``speed`` options (none:
        plain eager) for a ``device`` from :func:`choose_device`; ``with_adapters``:
        LoRA adapters will be loaded on it. ``phases`` gets the download and load times."""
        import torch
        from diffusers import FluxPipeline

        phases = phases or StartupPhases()
        chosen_device = choose_device(device)
        chosen_dtype = choose_dtype(dtype, chosen_device)
        speed = speed or speedups.SpeedOptions()
        with phases.timed("download"):
            path, source = fetch_weights(model, revision)
        phases.done("download", source=source, model=model, revision=revision)
        started = time.perf_counter()
        with phases.timed("load"):
            # Straight to the device: safetensors reads each tensor onto it, with no
            # whole-model copy in host memory first (offload keeps weights on the host).
            direct = {"device_map": chosen_device} if speed.offload == "none" else {}
            pipe = FluxPipeline.from_pretrained(path, dtype=chosen_dtype, **direct)
            speedups.prepare(pipe, speed, chosen_device, with_adapters=with_adapters)
            pipe.set_progress_bar_config(disable=True)
        info = ModelInfo(
            model=model,
            revision=revision,
            device=chosen_device,
            dtype=str(chosen_dtype).removeprefix("torch."),
            load_seconds=time.perf_counter() - started,
        )
        torch.set_grad_enabled(False)
        log.info(
            "model loaded",
            extra={
                "model": model,
                "revision": revision,
                "device": chosen_device,
                "dtype": info.dtype,
                "load_seconds": round(info.load_seconds, 3),
                "direct_to_device": bool(direct),
                "compile": speed.compile,
                "quantize": speed.quantize,
                "step_cache": speed.step_cache.kind,
                "offload": speed.offload,
            },
        )
        speedups.mark_ready()
        return cls(pipe, info, speed)

    def warmup(self, phases: StartupPhases | None = None) -> None:
        """Compile (with ``--compile``) and run every warm-up size at every batch size,
        so no caller pays for a compile or lazy init; then count compilations from here.
        ``phases``: a call that built a graph counts as ``compile``, others ``warmup``."""
        phases = phases or StartupPhases()
        started = time.perf_counter()
        with phases.timed("compile"):
            speedups.compile_transformer(self.pipe, self.speed)
        sizes = self.speed.warmup_sizes or ((256, 256),)
        # Three steps: a step cache takes its skip path from the second step on.
        steps = 3 if self.speed.step_cache.kind != "off" else 1
        for width, height in sizes:
            for batch in self.speed.warmup_batch_sizes:
                job = TextToImage(
                    "warm-up", width, height, steps, guidance_scale=3.5, seed=0, num_images=batch
                )
                self._timed_call(job, phases)
                if self.adapter_hook is not None and self.speed.compile != "off":
                    # The adapter path too (scales are tensors: one graph for all).
                    names = sorted(self._adapter_names())
                    if names:
                        self._timed_call(_with_adapter(job, names[0]), phases)
        self.info.warmup_seconds = time.perf_counter() - started
        speedups.mark_ready()
        log.info(
            "warm-up done",
            extra={
                "warmup_seconds": round(self.info.warmup_seconds, 3),
                "sizes": [f"{w}x{h}" for w, h in sizes],
                "batch_sizes": list(self.speed.warmup_batch_sizes),
                "compilations": speedups.compilations(),
            },
        )

    def _timed_call(self, job: TextToImage, phases: StartupPhases) -> None:
        before = speedups.compilations() if self.speed.compile != "off" else 0
        started = time.perf_counter()
        self.generate([job])
        compiled = self.speed.compile != "off" and speedups.compilations() > before
        phases.seconds["compile" if compiled else "warmup"] += time.perf_counter() - started

    def _adapter_names(self) -> set[str]:
        from flux_server.execution.lora import loaded_adapters

        return loaded_adapters(self.pipe)

    def generate(
        self,
        jobs: Sequence[TextToImage],
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        hooks: Sequence[StepHook] = (),
    ) -> list[list[Picture]]:
        """Run compatible jobs (equal ``batch_key()``) in one pipeline call; return each
        job's pictures in order (called from the engine thread).

        ``should_stop`` is asked before the call and after every denoising step; when
        it says yes the call ends there with :class:`GenerationInterrupted` (no VAE
        decode), so the GPU is free within one step (see
        ``flux_server.execution.cancellation``). ``hooks`` run after it at every step
        boundary, in order (``flux_server.execution.step_hooks``: live previews, priority
        work)."""
        # Without a warm-up, the first call compiles (once; a no-op afterwards).
        speedups.compile_transformer(self.pipe, self.speed)

        if not jobs:
            return []
        first = _batch_head(jobs)
        self.set_adapters(dict(first.adapters))
        rows = _rows(jobs)
        if should_stop is not None and should_stop():
            raise GenerationInterrupted(0, first.steps)
        callback = chain([progress_and_stop(first.steps, progress, should_stop), *hooks])
        images = self._call(first, rows, callback)
        pictures = [Picture(image, seed) for image, (_, seed) in zip(images, rows, strict=True)]
        return split_rows(pictures, [job.num_images for job in jobs])

    def _call(
        self,
        first: TextToImage,
        rows: Sequence[tuple[TextToImage, int]],
        callback: Callable[..., Any] | None,
    ) -> list[Image.Image]:
        """One pipeline call: a row per image, each with its own CPU generator."""
        import torch

        kwargs: dict[str, Any] = {}
        if first.true_cfg_scale > 1.0:
            kwargs["negative_prompt"] = [job.negative_prompt or "" for job, _ in rows]
            kwargs["true_cfg_scale"] = first.true_cfg_scale
        if callback is not None:
            kwargs["callback_on_step_end"] = callback
        try:
            output = self.pipe(
                prompt=[job.prompt for job, _ in rows],
                width=first.width,
                height=first.height,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance_scale,
                generator=[torch.Generator("cpu").manual_seed(seed) for _, seed in rows],
                num_images_per_prompt=1,
                output_type="pil",
                **kwargs,
            )
        except GenerationInterrupted:
            # The pipeline's own epilogue did not run; offload hooks, if any, reset.
            free_hooks = getattr(self.pipe, "maybe_free_model_hooks", None)
            if free_hooks is not None:
                free_hooks()
            raise
        images: list[Image.Image] = output.images
        return images

    @contextlib.contextmanager
    def adapters_kept(self) -> Iterator[None]:
        """Give the active adapters back after a nested call that may switch them."""
        kept = self._active_adapters
        try:
            yield
        finally:
            if kept is not None:
                self.set_adapters(kept)

    def set_adapters(self, adapters: dict[str, float]) -> None:
        """Make exactly these LoRA adapters active (engine thread only); a no-op when
        they already are."""
        if self.adapter_hook is None:
            if adapters:
                raise ValueError("this server has no LoRA adapters loaded")
            return
        if adapters != self._active_adapters:
            self.adapter_hook(self.pipe, adapters)
            self._active_adapters = adapters


def _batch_head(jobs: Sequence[TextToImage]) -> TextToImage:
    """The first job, whose settings the call runs with; all must share its batch key."""
    first = jobs[0]
    if any(job.batch_key() != first.batch_key() for job in jobs):
        raise ValueError("jobs in one pipeline call must share width, height, steps, ...")
    return first


def _rows(jobs: Sequence[TextToImage]) -> list[tuple[TextToImage, int]]:
    """A (job, seed) row for every image the call makes, job by job."""
    return [(job, seed) for job in jobs for seed in job.seeds()]


def _with_adapter(job: TextToImage, name: str) -> TextToImage:
    return dataclasses.replace(job, adapters=((name, 1.0),))
