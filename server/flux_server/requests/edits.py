"""An edit request: its fields besides the generation parameters, the size it runs at
when the caller sets none, how it becomes the editor's :class:`EditJob`, and its errors
(each a 400 naming the field, or 501 for instruction editing without Kontext).

A source larger than the server's ``--max-side`` is edited at a size scaled down to
fit it (see :func:`working_size`) and the result scaled back up to the source's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from flux_server.errors import NotEnabled, ServeError
from flux_server.execution.edit_job import (
    DEFAULT_STRENGTH,
    EDIT_MODES,
    PATCH,
    EditJob,
    EditJobError,
    InstructUnavailable,
    check,
    snap,
)
from flux_server.execution.inputs import InputRejected
from flux_server.requests.images import InputError, image_schema
from flux_server.requests.params import ResolvedRequest

if TYPE_CHECKING:
    from PIL import Image

#: Request fields of an edit besides the generation parameters.
EDIT_FIELDS: Final[tuple[str, ...]] = ("image", "mask", "mode", "strength")


class EditInputError(InputError):
    """An edit request that cannot run (a 400 / INVALID_ARGUMENT, naming the field)."""


class InstructEditingUnavailable(NotEnabled):
    """Instruction editing was asked for but the server has no Kontext weights
    (501 / UNIMPLEMENTED: the request is fine, this server cannot serve it)."""

    def __init__(self) -> None:
        super().__init__(
            "mode instruct is not available: the server was started without "
            "--kontext-model; use img2img or inpaint",
            "mode",
        )


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
    image = image_schema(upload=upload)
    properties = params_schema.get("properties", {})
    if upload:
        # A form has no null: "null" is text, and the server refuses it where a number
        # is due. Leaving a field out is how a form asks for the default.
        properties = {name: _without_null(schema) for name, schema in properties.items()}
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
            **properties,
        },
        "required": ["image", *params_schema.get("required", [])],
    }


def working_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size to edit a source of ``size`` at when the caller sets none: the source's,
    scaled down (aspect kept) when a side is over ``max_side``, in 16-pixel patches."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    limit = max(PATCH, max_side // PATCH * PATCH)
    snapped = snap((round(width * scale), round(height * scale)))
    return (min(snapped[0], limit), min(snapped[1], limit))


def validate(job: EditJob, *, kontext_available: bool) -> None:
    """Check an edit before it is queued; raise :class:`EditInputError` naming the
    field, or :class:`InstructEditingUnavailable`."""
    try:
        check(job, kontext_available=kontext_available)
    except EditJobError as rejected:
        raise request_error(rejected) from None


def request_error(rejected: InputRejected) -> ServeError:
    """The request error of an input a model refused (see :class:`InputRejected`)."""
    if isinstance(rejected, InstructUnavailable):
        return InstructEditingUnavailable()
    if isinstance(rejected, EditJobError):
        return EditInputError(rejected.field, rejected.reason)
    return InputError(rejected.field, rejected.reason)


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A property's schema without its ``null`` alternative (pydantic writes an optional
    field as ``anyOf: [X, {"type": "null"}]``)."""
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    kept = [option for option in options if option != {"type": "null"}]
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    if rest.get("default", "") is None:
        del rest["default"]
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}
