"""A question about an image as a request: its fields (REST form or JSON), their
schema, and its errors (each a 400 naming the field). The model's own limits are
:func:`flux_server.execution.vqa.check_question` and ``VqaModel.check``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from flux_server.execution.inputs import InputRejected
from flux_server.execution.protocols import QuestionAnswerer
from flux_server.execution.vqa import (
    DEFAULT_MAX_TOKENS,
    MAX_QUESTION_CHARS,
    MAX_TOKENS,
    check_question,
)
from flux_server.requests.images import InputError, image_schema

#: The fields of a VQA request (REST form or JSON body).
VQA_FIELDS: Final[tuple[str, ...]] = ("image", "question", "max_tokens")


class VqaInputError(InputError):
    """A question or token budget that cannot be used (400 / INVALID_ARGUMENT)."""


def validate_question(
    question: str, max_tokens: int, model: QuestionAnswerer | None = None
) -> None:
    """Check a question and its token budget before it is queued: the API's limits,
    then the loaded ``model``'s own (which may be smaller).

    Raises:
        VqaInputError: an empty or too long question, ``max_tokens`` out of range.
    """
    try:
        check_question(question, max_tokens)
        if model is not None:
            model.check(question, max_tokens)
    except InputRejected as rejected:
        raise VqaInputError(rejected.field, rejected.reason) from None


def question_fields(fields: Mapping[str, Any]) -> tuple[str, int]:
    """The question and token budget of a REST request: form text or JSON values.

    ``max_tokens`` defaults to :data:`DEFAULT_MAX_TOKENS` only when absent (or empty
    in a form): an explicit 0 is out of range, not "the default". Unknown fields are
    refused rather than ignored. Ranges are checked by :func:`validate_question`.

    Raises:
        VqaInputError: an unknown field, a question that is no text, a ``max_tokens``
            that is no integer.
    """
    for name in fields:
        if name not in VQA_FIELDS:
            raise VqaInputError(name, f"is not a VQA field; send {', '.join(VQA_FIELDS)}")
    question = fields.get("question", "")
    if not isinstance(question, str):
        raise VqaInputError("question", f"must be text, not {type(question).__name__}")
    raw = fields.get("max_tokens")
    if raw is None or raw == "":
        return question, DEFAULT_MAX_TOKENS
    if isinstance(raw, int) and not isinstance(raw, bool):
        return question, raw
    if isinstance(raw, str):
        try:
            return question, int(raw.strip())
        except ValueError:
            pass
    raise VqaInputError("max_tokens", f"must be an integer, not {raw!r}")


def vqa_body_schema(*, upload: bool, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    """The OpenAPI schema of a ``POST /vqa`` body: the image as a file upload
    (multipart) or base64 text (JSON), the question, the token budget."""
    image = image_schema(upload=upload)
    return {
        "type": "object",
        "properties": {
            "image": image,
            "question": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
            "max_tokens": {
                "type": "integer",
                "minimum": 1,
                "maximum": max_tokens,
                "default": min(DEFAULT_MAX_TOKENS, max_tokens),
            },
        },
        "required": ["image", "question"],
        "additionalProperties": False,
    }


def answer_token_limit(answerer: object) -> int:
    """The most answer tokens a request may ask of ``answerer`` (the loaded model, or
    None before it is): the API's limit, or the model's positions where fewer. A chat
    model writes after the prompt, so its limit leaves room for a one-token question."""
    limit = getattr(answerer, "max_positions", None)
    if not isinstance(limit, int):
        return MAX_TOKENS
    budget = limit if getattr(answerer, "kind", None) == "blip" else limit - 1
    return max(1, min(MAX_TOKENS, budget))
