"""What ``/openapi.json`` says beyond the request bodies: the headers a call may send and
the shape of its error answers."""

from __future__ import annotations

from typing import Any

from flux_contract.wire import USER_ID_HEADER

#: The longest deadline a caller may ask for (``X-Request-Timeout``), seconds.
MAX_TIMEOUT_S = 3600.0

CALL_HEADERS: list[dict[str, Any]] = [
    {
        "name": "X-Priority",
        "in": "header",
        "required": False,
        "description": "high: the priority lane (goes ahead of normal requests, not batched).",
        "schema": {"type": "string", "enum": ["normal", "high"], "default": "normal"},
    },
    {
        "name": "X-Request-Timeout",
        "in": "header",
        "required": False,
        "description": "Deadline in seconds; past it the answer is 504.",
        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
    },
    {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "description": "Your id for the request (echoed, and in the server's logs).",
        "schema": {"type": "string", "maxLength": 128},
    },
    {
        "name": USER_ID_HEADER,
        "in": "header",
        "required": False,
        "description": "Who the request is for, when no API key says so: the subject an "
        "experiment on the requested style preset assigns to an arm (always the same one). "
        "The arm is answered in X-Fluxserve-Experiment: experiment=arm.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
    },
]
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
            "required": ["code", "message", "field"],
        }
    },
    "required": ["error"],
}


def error_answer(description: str) -> dict[str, Any]:
    """An answer in the one error shape, described."""
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def request_body(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A required request body: its schema by media type."""
    content = {media: {"schema": schema} for media, schema in schemas.items()}
    return {"required": True, "content": content}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: error_answer(text)
    for status, text in (
        (400, "Not a JSON object, or the content policy refused the prompt."),
        (413, "A body over --max-body-bytes."),
        (415, "A body of another media type (the message names the expected one)."),
        (401, "A missing or unknown API key."),
        (422, "A value out of range; `field` names it."),
        (429, "The queue is full; see Retry-After."),
        (503, "Loading or draining; retry."),
        (504, "The deadline passed."),
    )
}


def hoist_defs(spec: dict[str, Any]) -> dict[str, Any]:
    """Move the ``$defs`` of the request-body schemas pydantic writes (``#/$defs/Name``,
    a pointer into the body schema itself) to ``components/schemas``, where a ``$ref`` in
    an OpenAPI document resolves. In place; returns ``spec``."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, schema in node.pop("$defs", {}).items():
                walk(schema)
                schemas.setdefault(name, schema)
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec.get("paths", {}))
    return spec


def with_vqa_token_limit(spec: dict[str, Any], limit: int) -> dict[str, Any]:
    """Say in /vqa's body schemas the most answer tokens the loaded model can write (the
    server refuses more with a 400 naming ``max_tokens``), as
    :func:`flux_server.vqa.vqa_body_schema` writes it. In place; returns ``spec``."""
    body = spec.get("paths", {}).get("/vqa", {}).get("post", {}).get("requestBody", {})
    for media in body.get("content", {}).values():
        tokens = media.get("schema", {}).get("properties", {}).get("max_tokens")
        if isinstance(tokens, dict):
            tokens["maximum"] = limit
            tokens["default"] = min(tokens.get("default", limit), limit)
    return spec


UPLOAD_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    400: error_answer(
        "An image that cannot be decoded or is over --max-image-pixels, a malformed form or "
        "JSON, or the content policy refused the prompt or question."
    ),
    415: error_answer("A body that is neither multipart/form-data nor application/json."),
    501: error_answer(
        "The feature is off (--enable-editing, --vqa-model; a webhook needs --webhook-secret)."
    ),
}
"""/edit's and /vqa's error answers."""

WEBHOOK_OFF_RESPONSE: dict[int | str, dict[str, Any]] = {
    501: error_answer("A webhook asked of a server started without --webhook-secret.")
}


IMAGE_OR_JSON_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The first image in the request's output_format, or every image as "
        "JSON (Accept: application/json).",
        "content": {
            "image/png": {},
            "image/jpeg": {},
            "image/webp": {},
            "application/json": {},
        },
    }
}
"""The success answer of /generate and /edit."""
