"""An edit as the editing pipelines take it: image-to-image, inpainting and instruction
editing (FLUX.1 Kontext). What an edit is (:class:`EditJob`), what it gives back
(:class:`EditResult`), the checks a pipeline needs (:func:`check`), its seeds and
which edits may share a pipeline call. The pipelines are in
:mod:`flux_server.execution.editor`; an edit *request* (its fields, its sizes, its
errors) is :mod:`flux_server.requests.edits`.

Sizes: FLUX works on 16-pixel patches (VAE factor 8, then 2x2 packing), so the
source (and mask) is resized to the nearest multiples of 16 (at least 16), edited
there, and the result is resized back, so callers always get the size they asked
for: the source image's size unless ``width``/``height`` are given.

Seeds: as in generation, image ``i`` of a job uses ``seed + i``; an unset seed
is drawn at random and reported back. Generators live on the CPU so that a seed
gives the same noise on any device.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from PIL import Image

from flux_server.execution.inputs import MAX_SEED, InputRejected

EditMode = Literal["img2img", "inpaint", "instruct"]
EDIT_MODES: Final[tuple[str, ...]] = ("img2img", "inpaint", "instruct")

#: FLUX's latent patch: VAE scale factor 8 times the 2x2 token packing.
PATCH: Final[int] = 16
#: Seeds drawn when the caller sets none (image i then uses seed + i), as in generation.
_SEED_BITS: Final[int] = 32
#: How far img2img / inpainting move from the source when the caller does not say.
DEFAULT_STRENGTH: Final[float] = 0.6

SetAdapters = Callable[[dict[str, float]], None]
"""Activates exactly these LoRA adapters (name -> weight; empty: none) on the shared
transformer."""


@dataclass(frozen=True)
class EditJob:
    """One edit request, already decoded and checked at the API edge.

    ``width``/``height`` default to the source image's size (the exact size, not
    snapped: the Editor snaps internally and resizes back); ``run_size`` is the size
    the pipeline runs at, when it is not that snapped size. ``strength`` (0..1]
    is how far img2img / inpainting move from the source (unset:
    :data:`DEFAULT_STRENGTH`); instruction editing has none and refuses one. ``adapters`` are
    (name, weight) pairs, sorted, as in generation.
    """

    mode: EditMode
    image: Image.Image
    prompt: str
    mask: Image.Image | None = None
    strength: float | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int = 28
    guidance_scale: float = 3.5
    true_cfg_scale: float = 1.0
    seed: int | None = None
    num_images: int = 1
    adapters: tuple[tuple[str, float], ...] = ()
    run_size: tuple[int, int] | None = None

    @property
    def effective_strength(self) -> float:
        """``strength``, or :data:`DEFAULT_STRENGTH` when unset."""
        return DEFAULT_STRENGTH if self.strength is None else self.strength

    @property
    def size(self) -> tuple[int, int]:
        """The output size (width, height)."""
        return (self.width or self.image.width, self.height or self.image.height)

    @property
    def pipeline_size(self) -> tuple[int, int]:
        """The size the pipeline runs at: ``run_size``, else the output size snapped
        to 16-pixel patches."""
        return self.run_size or snap(self.size)


@dataclass
class EditResult:
    """The edited images of one job, each with the seed that produced it."""

    images: list[Image.Image]
    seeds: list[int]
    width: int
    height: int


def snap(size: tuple[int, int]) -> tuple[int, int]:
    """The nearest multiples of 16 (at least 16) to a (width, height)."""
    return tuple(max(PATCH, round(v / PATCH) * PATCH) for v in size)  # type: ignore[return-value]


def seeds_for(seed: int | None, count: int) -> list[int]:
    """Per-image seeds: ``seed, seed + 1, ...``; a random start when ``seed`` is None."""
    start = secrets.randbits(_SEED_BITS) if seed is None else seed
    return [(start + i) % (MAX_SEED + 1) for i in range(count)]


class EditJobError(InputRejected):
    """An edit a pipeline cannot run; names the field at fault."""


class InstructUnavailable(EditJobError):
    """Instruction editing without Kontext weights."""

    def __init__(self) -> None:
        super().__init__(
            "mode",
            "instruct is not available: the server was started without --kontext-model; "
            "use img2img or inpaint",
        )


def check(job: EditJob, *, kontext_available: bool) -> None:
    """Check a job before it reaches a pipeline; raise :class:`EditJobError`."""
    if job.mode not in EDIT_MODES:
        raise EditJobError("mode", f"must be one of {', '.join(EDIT_MODES)}, not {job.mode!r}")
    if not job.prompt.strip():
        what = "the instruction" if job.mode == "instruct" else "the prompt"
        raise EditJobError("prompt", f"is empty; give {what}")
    if job.mode == "instruct":
        _check_instruct(job, kontext_available)
    _check_mask(job)
    if job.steps < 1:
        raise EditJobError("steps", f"must be at least 1, not {job.steps}")
    if job.num_images < 1:
        raise EditJobError("num_images", f"must be at least 1, not {job.num_images}")
    for name, value in (("width", job.width), ("height", job.height)):
        if value is not None and value < 1:
            raise EditJobError(name, f"must be positive, not {value}")
    if job.mode == "instruct" and job.strength is not None:
        raise EditJobError(
            "strength", "is not used by instruction editing (mode instruct); leave it out"
        )
    if job.mode != "instruct" and not 0.0 < job.effective_strength <= 1.0:
        raise EditJobError("strength", f"must be in (0, 1], not {job.strength}")
    if denoising_steps(job) < 1:
        # A strength so close to 0 that steps * strength rounds away: no step would run.
        raise EditJobError(
            "strength", f"{job.strength} leaves none of the {job.steps} steps to run; raise it"
        )


def _check_instruct(job: EditJob, kontext_available: bool) -> None:
    if not kontext_available:
        raise InstructUnavailable()
    if job.adapters:
        raise EditJobError(
            "adapters",
            "are not applied to instruction editing (Kontext has its own transformer); "
            "leave them out, or use img2img or inpaint",
        )


def _check_mask(job: EditJob) -> None:
    if job.mode == "inpaint" and job.mask is None:
        raise EditJobError("mask", "is required for inpainting (white = repaint)")
    if job.mode != "inpaint" and job.mask is not None:
        raise EditJobError("mask", f"is only used for inpainting, not in {job.mode} mode")
    if job.mask is not None and job.mask.size != job.image.size:
        (mw, mh), (iw, ih) = job.mask.size, job.image.size
        raise EditJobError(
            "mask",
            f"is {mw}x{mh} but the image is {iw}x{ih}; the mask must have the image's size",
        )


def denoising_steps(job: EditJob) -> int:
    """Steps the pipeline actually runs: img2img and inpaint skip the first
    ``1 - strength`` of the schedule (diffusers' ``get_timesteps``)."""
    if job.mode == "instruct":
        return job.steps
    strength = job.effective_strength
    return job.steps - int(max(job.steps - job.steps * strength, 0))


def batch_key(job: EditJob) -> tuple[Any, ...]:
    """Jobs with equal keys may run in one pipeline call (see :meth:`Editor.run_batch`)."""
    return (
        job.mode,
        job.pipeline_size,
        job.steps,
        job.guidance_scale,
        job.true_cfg_scale,
        job.negative_prompt is not None,
        job.effective_strength if job.mode != "instruct" else None,
        job.adapters,
    )
