"""The editing pipelines, built on the already-loaded FLUX weights.

The img2img and inpaint pipelines are built from the generator's ``FluxPipeline``
with diffusers' ``from_pipe``: they hold the *same* module objects, so editing costs
no second copy of the 12B weights (and LoRA adapters loaded on the transformer apply
to edits too). ``from_pipe`` is told the pipeline's dtype, since by default it
casts the shared modules to float32 in place (see :func:`_derive`). Instruction
editing needs Kontext's own transformer; it is loaded once, when the
:class:`Editor` is built, and shares the VAE, text encoders and tokenizers with the
generator.

LoRA adapters: the img2img and inpaint pipelines share the generator's transformer,
so whatever adapters the last generation activated are active for an edit too. The
Editor therefore sets each batch's adapters (none = all off) through the
``set_adapters`` hook it is given -- the engine's, so that the engine knows what is
active. Kontext has its own transformer without adapters: an instruction edit that
asks for adapters is refused rather than silently run without them.

An :class:`Editor` is not thread-safe (it shares modules with the generator): call
it from the engine's single inference thread. Requests, sizes and seeds:
:mod:`flux_server.execution.edit_job`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from flux_server.execution.cancellation import GenerationInterrupted
from flux_server.execution.edit_job import (
    EditJob,
    EditJobError,
    EditResult,
    SetAdapters,
    batch_key,
    check,
    denoising_steps,
    seeds_for,
)
from flux_server.execution.inputs import ProgressFn, StopFn, split_rows
from flux_server.execution.step_hooks import StepHook, chain, progress_and_stop

if TYPE_CHECKING:
    from diffusers import FluxPipeline

log = logging.getLogger(__name__)


class Editor:
    """Edits images with pipelines that share the generator's loaded components.

    Args:
        engine_pipe: the loaded ``FluxPipeline`` (the engine's ``.pipe``).
        kontext: a FLUX.1 Kontext model (hub id, a directory laid out like
            FLUX.1-Kontext-dev, or a directory holding only its transformer), or
            None to serve img2img and inpainting only.
        kontext_revision: the hub revision of ``kontext``.
        set_adapters: activates a batch's LoRA adapters on the shared transformer
            (the engine's hook). Without it, edits that ask for adapters are refused.
    """

    def __init__(
        self,
        engine_pipe: FluxPipeline,
        kontext: str | None = None,
        *,
        kontext_revision: str | None = None,
        set_adapters: SetAdapters | None = None,
    ) -> None:
        from diffusers import FluxImg2ImgPipeline, FluxInpaintPipeline

        self.base = engine_pipe
        self.img2img_pipe = _derive(FluxImg2ImgPipeline, engine_pipe)
        self.inpaint_pipe = _derive(FluxInpaintPipeline, engine_pipe)
        self.kontext_pipe = (
            None if kontext is None else _load_kontext(engine_pipe, kontext, kontext_revision)
        )
        self.kontext = kontext
        self.set_adapters = set_adapters
        for pipe in (self.img2img_pipe, self.inpaint_pipe, self.kontext_pipe):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)

    @property
    def can_instruct(self) -> bool:
        """Whether instruction editing (Kontext) is available."""
        return self.kontext_pipe is not None

    def img2img(self, image: Image.Image, prompt: str, **params: Any) -> EditResult:
        """Image-to-image: re-noise ``image`` by ``strength`` and denoise toward ``prompt``."""
        return self.run(EditJob(mode="img2img", image=image, prompt=prompt, **params))

    def inpaint(
        self, image: Image.Image, mask: Image.Image, prompt: str, **params: Any
    ) -> EditResult:
        """Repaint the white area of ``mask`` (same size as ``image``) following ``prompt``."""
        return self.run(EditJob(mode="inpaint", image=image, mask=mask, prompt=prompt, **params))

    def instruct(self, image: Image.Image, prompt: str, **params: Any) -> EditResult:
        """Instruction editing with FLUX.1 Kontext: ``prompt`` says what to change.

        Raises:
            InstructUnavailable: the Editor was built without Kontext weights.
        """
        return self.run(EditJob(mode="instruct", image=image, prompt=prompt, **params))

    def run(self, job: EditJob, on_step: ProgressFn | None = None) -> EditResult:
        """Run one job."""
        return self.run_batch([job], on_step)[0]

    def run_batch(
        self,
        jobs: Sequence[EditJob],
        on_step: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        hooks: Sequence[StepHook] = (),
    ) -> list[EditResult]:
        """Run jobs with one :func:`batch_key` in a single pipeline call.

        Each job contributes ``num_images`` rows (its image, mask and prompt
        repeated, one generator per seed); the results come back per job, in order.
        ``hooks`` run after the progress hook at every step boundary (live previews).

        Raises:
            GenerationInterrupted: ``should_stop()`` turned true between two steps
                (every job of the call was cancelled).
            EditJobError: a job is invalid.
            ValueError: the jobs have different batch keys (a caller's bug, not a
                request's fault).
        """
        if not jobs:
            return []
        first = self._check_batch(jobs)
        self._activate_adapters(first)
        seeds = [seeds_for(job.seed, job.num_images) for job in jobs]
        kwargs = _call_kwargs(jobs, seeds)
        total = denoising_steps(first)
        callback = chain([progress_and_stop(total, on_step, should_stop), *hooks])
        if callback is not None:
            kwargs["callback_on_step_end"] = callback
        log.info(
            "edit batch",
            extra={
                "mode": first.mode,
                "jobs": len(jobs),
                "images": len(kwargs["prompt"]),
                "size": [kwargs["width"], kwargs["height"]],
            },
        )
        if should_stop is not None and should_stop():
            raise GenerationInterrupted(0, total)
        out = self._pipe(first.mode)(**kwargs).images
        return _results(jobs, seeds, out)

    def _check_batch(self, jobs: Sequence[EditJob]) -> EditJob:
        """Check every job; return the first, whose settings the call runs with."""
        for job in jobs:
            check(job, kontext_available=self.can_instruct)
        key = batch_key(jobs[0])
        if any(batch_key(job) != key for job in jobs[1:]):
            raise ValueError("edit jobs in one call must share mode, size and settings")
        return jobs[0]

    def _activate_adapters(self, first: EditJob) -> None:
        """Set the batch's adapters on the shared transformer (Kontext has none)."""
        if first.mode == "instruct":
            return
        # Always set them, even to none: the shared transformer may still carry
        # the adapters of the last generation.
        if self.set_adapters is not None:
            self.set_adapters(dict(first.adapters))
        elif first.adapters:
            raise EditJobError("adapters", "cannot be used: this server has no LoRA adapters")

    def _pipe(self, mode: str) -> Any:
        if mode == "instruct":
            return self.kontext_pipe
        return self.inpaint_pipe if mode == "inpaint" else self.img2img_pipe


def _call_kwargs(jobs: Sequence[EditJob], seeds: Sequence[list[int]]) -> dict[str, Any]:
    """The pipeline call's arguments: a row per image (its job's image, mask and prompt,
    one generator per seed), in job order."""
    import torch

    first = jobs[0]
    width, height = first.pipeline_size
    # One resize per job, shared by its rows.
    sources = [_fit(job.image, (width, height), Image.Resampling.LANCZOS) for job in jobs]
    rows = [(index, seed) for index, job_seeds in enumerate(seeds) for seed in job_seeds]
    kwargs: dict[str, Any] = {
        "prompt": [jobs[index].prompt for index, _ in rows],
        "image": [sources[index] for index, _ in rows],
        "height": height,
        "width": width,
        "num_inference_steps": first.steps,
        "guidance_scale": first.guidance_scale,
        "true_cfg_scale": first.true_cfg_scale,
        "generator": [torch.Generator("cpu").manual_seed(seed) for _, seed in rows],
        "num_images_per_prompt": 1,
        "output_type": "pil",
    }
    if first.negative_prompt is not None:
        kwargs["negative_prompt"] = [jobs[index].negative_prompt or "" for index, _ in rows]
    if first.mode == "instruct":
        # Keep the requested size: by default Kontext snaps to its training
        # resolutions and rescales to one megapixel.
        kwargs.update(_auto_resize=False, max_area=width * height)
        return kwargs
    kwargs["strength"] = first.effective_strength
    if first.mode == "inpaint":
        masks = [
            None if job.mask is None else _fit(job.mask, (width, height), Image.Resampling.NEAREST)
            for job in jobs
        ]
        kwargs["mask_image"] = [masks[index] for index, _ in rows]
    return kwargs


def _results(
    jobs: Sequence[EditJob], seeds: Sequence[list[int]], out: Sequence[Image.Image]
) -> list[EditResult]:
    """The call's images back to their jobs, each at the size its job asked for."""
    results: list[EditResult] = []
    per_job = split_rows(out, [len(job_seeds) for job_seeds in seeds])
    for job, job_seeds, images in zip(jobs, seeds, per_job, strict=True):
        size = job.size
        fitted = [_fit(image, size, Image.Resampling.LANCZOS) for image in images]
        results.append(EditResult(images=fitted, seeds=job_seeds, width=size[0], height=size[1]))
    return results


def _fit(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    return image if image.size == tuple(size) else image.resize(size, resample)


def _module_dtypes(components: dict[str, Any]) -> set[Any]:
    import torch

    return {
        c.dtype
        for c in components.values()
        if isinstance(c, torch.nn.Module) and isinstance(getattr(c, "dtype", None), torch.dtype)
    }


def _derive(cls: Any, base: Any, **overrides: Any) -> Any:
    """A ``cls`` pipeline on ``base``'s very modules (plus ``overrides``).

    ``from_pipe`` ends with ``pipe.to(dtype)``, float32 unless told otherwise, and
    that cast is in place: on a bfloat16 generator it would silently turn the
    shared weights to float32 (twice the memory, under the generator's feet). So it
    is told the pipeline's one dtype, which makes the cast a no-op. A pipeline of
    mixed precision (say, a float32 VAE under a bfloat16 transformer) has no such
    dtype; it is assembled from the same components directly, without any cast.
    """
    components = {**base.components, **overrides}
    dtypes = _module_dtypes(components)
    if len(dtypes) == 1:
        return cls.from_pipe(base, dtype=dtypes.pop(), **overrides)
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls(**{name: c for name, c in components.items() if name in accepted})


def _load_kontext(base: Any, kontext: str, revision: str | None) -> Any:
    """FLUX.1 Kontext = FLUX.1-dev's VAE and text encoders + its own transformer.

    Only the transformer is loaded; everything else is the generator's, via ``from_pipe``.
    """
    from diffusers import FluxKontextPipeline, FluxTransformer2DModel

    local = Path(kontext)
    if kontext.startswith(("/", "./", "../")) and not local.is_dir():
        # Otherwise diffusers takes it for a hub id and says so, confusingly.
        raise RuntimeError(
            f"cannot load the Kontext transformer from {kontext!r}: no such directory"
        )
    # A full pipeline layout (hub repo or saved directory) keeps the transformer in
    # a subfolder; a bare transformer directory holds config.json at its root.
    subfolder = None if (local / "config.json").is_file() else "transformer"
    try:
        transformer = FluxTransformer2DModel.from_pretrained(
            kontext,
            subfolder=subfolder,
            revision=revision,
            dtype=base.transformer.dtype,
        )
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot load the Kontext transformer from {kontext!r}: {exc}") from exc
    transformer.to(base.transformer.device)
    log.info("loaded Kontext transformer", extra={"kontext": kontext})
    return _derive(FluxKontextPipeline, base, transformer=transformer)
