"""Image editing requests: image-to-image, inpainting and instruction editing (FLUX.1
Kontext). What an edit is (:class:`EditJob`), how it is checked, sized and seeded, and
which edits may share a pipeline call. The pipelines themselves are in
:mod:`flux_server.execution.editor`.

Sizes: FLUX works on 16-pixel patches (VAE factor 8, then 2x2 packing), so the
source (and mask) is resized to the nearest multiples of 16 (at least 16), edited
there, and the result is resized back, so callers always get the size they asked
for: the source image's size unless ``width``/``height`` are given. A source larger
than the server's ``--max-side`` is edited at a size scaled down to fit it (see
:func:`working_size`) and the result scaled back up to the source's size.

Seeds: as in generation, image ``i`` of a request uses ``seed + i``; an unset seed
is drawn at random and reported back. Generators live on the CPU so that a seed
gives the same noise on any device.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from PIL import Image

from flux_server.errors import NotEnabled
from flux_server.requests.images import InputError, check_mask
from flux_server.requests.params import MAX_SEED, ResolvedRequest

EditMode = Literal["img2img", "inpaint", "instruct"]
EDIT_MODES: Final[tuple[str, ...]] = ("img2img", "inpaint", "instruct")
#: Request fields of an edit besides the generation parameters.
EDIT_FIELDS: Final[tuple[str, ...]] = ("image", "mask", "mode", "strength")

#: FLUX's latent patch: VAE scale factor 8 times the 2x2 token packing.
PATCH: Final[int] = 16
#: Seeds drawn when the caller sets none (image i then uses seed + i), as in generation.
_SEED_BITS: Final[int] = 32
#: How far img2img / inpainting move from the source when the caller does not say.
DEFAULT_STRENGTH: Final[float] = 0.6

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (1-based step, total steps)."""


class EditInputError(InputError):
    """An edit request that cannot run (a 400 / INVALID_ARGUMENT, naming the field)."""


SetAdapters = Callable[[dict[str, float]], None]
"""Activates exactly these LoRA adapters (name -> weight; empty: none) on the shared
transformer."""


class InstructEditingUnavailable(NotEnabled):
    """Instruction editing was asked for but the server has no Kontext weights
    (501 / UNIMPLEMENTED: the request is fine, this server cannot serve it)."""

    def __init__(self) -> None:
        super().__init__(
            "mode instruct is not available: the server was started without "
            "--kontext-model; use img2img or inpaint",
            "mode",
        )


@dataclass(frozen=True)
class EditJob:
    """One edit request, already decoded and checked at the API edge.

    ``width``/``height`` default to the source image's size (the exact size, not
    snapped: the Editor snaps internally and resizes back); ``run_size`` is the size
    the pipeline runs at, when it is not that snapped size. ``strength`` (0..1]
    is how far img2img / inpainting move from the source (unset:
    :data:`DEFAULT_STRENGTH`); instruction editing has none and refuses one. ``adapters`` are
    (name, weight) pairs, sorted, as in ``params.ResolvedRequest``.
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


def edit_job_from(
    job: ResolvedRequest,
    *,
    image: Image.Image,
    mask: Image.Image | None = None,
    mode: str | None = None,
    strength: float | None = None,
    width: int | None = None,
    height: int | None = None,
) -> EditJob:
    """The edit of a resolved request (prompt, preset, defaults, seed already applied).

    ``mode`` defaults to ``inpaint`` with a mask and ``img2img`` without one.
    ``width``/``height`` are the caller's own (``GenerateParams.width``), not the
    resolved job's: when the caller sets none, the output has the source's exact
    size, even when that is no multiple of 16. The resolved job's size (checked
    against the server's limits) is the size the pipeline runs at. Negative prompts only count with
    true CFG (``true_cfg_scale > 1``), as in generation.
    """
    chosen = (mode or ("inpaint" if mask is not None else "img2img")).lower()
    return EditJob(
        mode=chosen,  # type: ignore[arg-type]  # validate() names a bad mode
        image=image,
        prompt=job.prompt,
        mask=mask,
        strength=strength,
        negative_prompt=job.negative_prompt if job.true_cfg_scale > 1 else None,
        width=width,
        height=height,
        steps=job.steps,
        guidance_scale=job.guidance_scale,
        true_cfg_scale=job.true_cfg_scale,
        seed=job.seed,
        num_images=job.num_images,
        adapters=job.adapters,
        run_size=(job.width, job.height),
    )


def edit_options(fields: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """``mode`` and ``strength`` of a REST request, as form text or JSON values.

    Absent or empty means unset. Their ranges are checked by :func:`validate`.

    Raises:
        EditInputError: a mode that is no text, a strength that is no number.
    """
    mode = fields.get("mode")
    if mode is not None and not isinstance(mode, str):
        raise EditInputError("mode", f"must be one of {', '.join(EDIT_MODES)}, not {mode!r}")
    raw = fields.get("strength")
    if raw is None or raw == "":
        return mode or None, None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return mode or None, float(raw)
    if isinstance(raw, str):
        try:
            return mode or None, float(raw)
        except ValueError:
            pass
    raise EditInputError("strength", f"must be a number in (0, 1], not {raw!r}")


def edit_body_schema(params_schema: dict[str, Any], *, upload: bool) -> dict[str, Any]:
    """The OpenAPI schema of a ``POST /edit`` body: the generation parameters plus the
    edit's own fields; images as file uploads (multipart) or base64 text (JSON)."""
    image: dict[str, Any] = (
        {"type": "string", "format": "binary"}
        if upload
        else {"type": "string", "format": "byte", "description": "base64 (or a data: URL)"}
    )
    return {
        **params_schema,
        "properties": {
            "image": {**image, "description": "The source image (PNG, JPEG, WEBP, ...)."},
            "mask": {**image, "description": "Inpainting mask, the image's size; white = repaint."},
            "mode": {
                "type": "string",
                "enum": list(EDIT_MODES),
                "description": "Default: inpaint with a mask, img2img without.",
            },
            "strength": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "description": f"How far to move from the source (default {DEFAULT_STRENGTH}); "
                "not for mode instruct.",
            },
            **params_schema.get("properties", {}),
        },
        "required": ["image", *params_schema.get("required", [])],
    }


def snap(size: tuple[int, int]) -> tuple[int, int]:
    """The nearest multiples of 16 (at least 16) to a (width, height)."""
    return tuple(max(PATCH, round(v / PATCH) * PATCH) for v in size)  # type: ignore[return-value]


def working_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size to edit a source of ``size`` at when the caller sets none: the source's,
    scaled down (aspect kept) when a side is over ``max_side``, in 16-pixel patches."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    limit = max(PATCH, max_side // PATCH * PATCH)
    snapped = snap((round(width * scale), round(height * scale)))
    return (min(snapped[0], limit), min(snapped[1], limit))


def seeds_for(seed: int | None, count: int) -> list[int]:
    """Per-image seeds: ``seed, seed + 1, ...``; a random start when ``seed`` is None."""
    start = secrets.randbits(_SEED_BITS) if seed is None else seed
    return [(start + i) % (MAX_SEED + 1) for i in range(count)]


def validate(job: EditJob, *, kontext_available: bool) -> None:
    """Check a job before it reaches a pipeline; raise :class:`EditInputError`."""
    if job.mode not in EDIT_MODES:
        raise EditInputError("mode", f"must be one of {', '.join(EDIT_MODES)}, not {job.mode!r}")
    if not job.prompt.strip():
        what = "the instruction" if job.mode == "instruct" else "the prompt"
        raise EditInputError("prompt", f"is empty; give {what}")
    if job.mode == "instruct" and not kontext_available:
        raise InstructEditingUnavailable()
    if job.mode == "instruct" and job.adapters:
        raise EditInputError(
            "adapters",
            "are not applied to instruction editing (Kontext has its own transformer); "
            "leave them out, or use img2img or inpaint",
        )
    if job.mode == "inpaint" and job.mask is None:
        raise EditInputError("mask", "is required for inpainting (white = repaint)")
    if job.mode != "inpaint" and job.mask is not None:
        raise EditInputError("mask", f"is only used for inpainting, not in {job.mode} mode")
    if job.mask is not None:
        check_mask(job.mask, job.image.size)
    if job.steps < 1:
        raise EditInputError("steps", f"must be at least 1, not {job.steps}")
    if job.num_images < 1:
        raise EditInputError("num_images", f"must be at least 1, not {job.num_images}")
    for name, value in (("width", job.width), ("height", job.height)):
        if value is not None and value < 1:
            raise EditInputError(name, f"must be positive, not {value}")
    if job.mode == "instruct" and job.strength is not None:
        raise EditInputError(
            "strength", "is not used by instruction editing (mode instruct); leave it out"
        )
    if job.mode != "instruct" and not 0.0 < job.effective_strength <= 1.0:
        raise EditInputError("strength", f"must be in (0, 1], not {job.strength}")


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
