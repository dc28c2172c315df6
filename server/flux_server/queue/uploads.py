"""Edits and questions on the fleet's queue: the uploaded bytes travel in the entry.

A front checks what it can without a model (the upload's size against
``--queue-max-upload-bytes``, the image's decoding and pixel cap, the prompt's preset,
limits and safety, the edit's own fields) and queues the caller's bytes as they came,
base64 in the entry. The worker decodes them again and checks them against its own
models (editing or VQA on, Kontext for ``instruct``, the VQA model's token limits), so
an answer, or an error with its code and field, is the one a process alone gives.

Why the original bytes, not the decoded image: they are what the caller sent (usually
compressed), and a worker decoding them runs the same code as a process alone, so the
result is the same bytes either way.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from flux_server.errors import NotEnabled, PayloadTooLarge
from flux_server.queue import codec
from flux_server.requests.edits import edit_job_from, validate
from flux_server.requests.images import decode_image
from flux_server.requests.questions import validate_question
from flux_server.scheduling.runner import Runner
from flux_server.scheduling.work import Edit, Question, Work


def check_size(limit: int, image: bytes, mask: bytes | None = None) -> None:
    """``PayloadTooLarge`` (413) naming the limit when the upload cannot ride the queue."""
    size = len(image) + len(mask or b"")
    if size > limit:
        what = "image and mask are" if mask else "image is"
        raise PayloadTooLarge(
            f"the {what} {size} bytes, over --queue-max-upload-bytes {limit} (the most "
            "one queue entry carries); send a smaller or more compressed image",
            "image",
        )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def edit_entry(
    image: bytes,
    mask: bytes | None,
    mode: str | None,
    strength: float | None,
    width: int | None,
    height: int | None,
) -> dict[str, Any]:
    """An edit's fields in its entry (beside the resolved request): the caller's bytes,
    mode and strength, and the output size it asked for (None: the source's)."""
    fields = {"image": _b64(image), "mask": _b64(mask), "mode": mode, "strength": strength,
              "width": width, "height": height}  # fmt: skip
    return {"kind": "edit", "edit": fields}


def vqa_entry(image: bytes, question: str, max_tokens: int) -> dict[str, Any]:
    return {
        "kind": "vqa",
        "vqa": {"image": _b64(image), "question": question, "max_tokens": max_tokens},
    }


async def work_of(payload: Mapping[str, Any], runner: Runner, max_pixels: int) -> Work:
    """The worker's :class:`Work` for an edit or a question entry, decoded and checked
    with this worker's models; raises the ``ServeError`` a process alone would."""
    request_id = str(payload["request_id"])
    if payload["kind"] == "vqa":
        fields = payload["vqa"]
        if runner.vqa_model is None:
            raise NotEnabled(
                "VQA is off on this release's workers: start them with --vqa-model", "question"
            )
        question, max_tokens = str(fields["question"]), int(fields["max_tokens"])
        validate_question(question, max_tokens, runner.vqa_model)
        image = await runner.off_loop(
            decode_image, base64.b64decode(fields["image"]), "image", max_pixels
        )
        return Question(
            image=image, question=question, max_tokens=max_tokens, request_id=request_id
        )
    fields = payload["edit"]
    editor = runner.editor
    if editor is None:
        raise NotEnabled(
            "editing is off on this release's workers: start them with --enable-editing", "mode"
        )
    source = await runner.off_loop(
        decode_image, base64.b64decode(fields["image"]), "image", max_pixels
    )
    mask = None
    if fields.get("mask"):
        raw = base64.b64decode(fields["mask"])
        mask = await runner.off_loop(decode_image, raw, "mask", max_pixels, mode="L")
    job = codec.job_of(payload)
    edit_job = edit_job_from(
        job, image=source, mask=mask, mode=fields["mode"], strength=fields["strength"],
        width=fields["width"], height=fields["height"],
    )  # fmt: skip
    validate(edit_job, kontext_available=editor.can_instruct)
    return Edit(job=edit_job, output_format=job.output_format, request_id=request_id)
