"""HTTP to and from the core's types: the call context from the headers, bodies (JSON,
multipart), results as PNG or JSON, errors in the one error shape, and cancellation
when the client goes away."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from flux_contract.wire import EXPERIMENT_HEADER
from flux_server.api.rest.openapi import MAX_TIMEOUT_S
from flux_server.errors import (
    Cancelled,
    InvalidRequest,
    MalformedRequest,
    ServeError,
    UnsupportedMediaType,
    status_of,
)
from flux_server.experiments.assignment import arm_json
from flux_server.requests.context import CallContext, new_request_id
from flux_server.requests.images import check_upload_names, decode_base64
from flux_server.requests.params import GenerateParams, validation_error
from flux_server.requests.results import GenerationResult

T = TypeVar("T")

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_SECRET_HEADERS = frozenset({"authorization", "cookie"})


def error_response(error: ServeError, request_id: str | None = None) -> JSONResponse:
    headers = {"X-Request-Id": request_id} if request_id else {}
    # A full queue, and the fleet's queue unreachable (flux_server.queue.front), say when
    # to come back.
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return JSONResponse(error.to_json(), status_code=status_of(error).http, headers=headers)


async def until_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; cancel it (leaving the queue) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise Cancelled("the client went away")
    return task.result()


def context_from(request: Request, endpoint: str) -> CallContext:
    headers = request.headers
    given = headers.get("x-request-id", "")
    request.state.request_id = given if 0 < len(given) <= 128 else new_request_id()
    timeout: float | None = None
    raw_timeout = headers.get("x-request-timeout")
    if raw_timeout is not None:
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = math.nan
        if not (0 < timeout <= MAX_TIMEOUT_S):
            raise InvalidRequest(
                f"X-Request-Timeout must be seconds in (0, {MAX_TIMEOUT_S:g}]",
                "X-Request-Timeout",
            )
    priority = headers.get("x-priority", "normal").strip().lower()
    if priority not in {"high", "normal"}:
        raise InvalidRequest("X-Priority must be 'high' or 'normal'", "X-Priority")
    return CallContext(
        endpoint=endpoint,
        request_id=request.state.request_id,
        authorization=headers.get("authorization"),
        priority=priority == "high",
        timeout=timeout,
        # What experiments read (X-User-Id, an audience's header); credentials stay out.
        headers={k: v for k, v in headers.items() if k not in _SECRET_HEADERS},
        client=request.client.host if request.client else None,
    )


def result_json(result: GenerationResult) -> dict[str, Any]:
    return {
        "images": [
            {
                "b64": base64.b64encode(image.data).decode("ascii"),
                "seed": image.seed,
                "format": image.format,
                "width": image.width,
                "height": image.height,
            }
            for image in result.images
        ],
        "request_id": result.request_id,
        "release": result.release,
        "model": result.model,
        "batch_size": result.batch_size,
        "timings": {
            "queue_ms": round(result.queue_ms, 3),
            "inference_ms": round(result.inference_ms, 3),
            "total_ms": round(result.total_ms, 3),
        },
        "cache_hit": result.cache_hit,
        "experiment": arm_json(result.experiment),
    }


def result_response(request: Request, result: GenerationResult) -> Response:
    first = result.images[0]
    headers = {
        "X-Request-Id": result.request_id,
        "X-Seed": str(first.seed),
        "X-Batch-Size": str(result.batch_size),
        "X-Release": result.release,
        "X-Cache-Hit": "true" if result.cache_hit else "false",
    }
    if result.experiment is not None:
        headers[EXPERIMENT_HEADER] = result.experiment.header_value
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(result_json(result), headers=headers)
    return Response(first.data, media_type=MEDIA_TYPES[first.format], headers=headers)


JSON_MEDIA_TYPE = "application/json"
FORM_MEDIA_TYPE = "multipart/form-data"


def media_type(request: Request) -> str | None:
    """The body's media type, lower case without parameters; None when unlabelled."""
    given = request.headers.get("content-type")
    return None if given is None else given.split(";", 1)[0].strip().lower()


def is_json(media: str | None) -> bool:
    return media is None or media == JSON_MEDIA_TYPE or media.endswith("+json")


def refuse_media_type(media: str | None, expected: str) -> None:
    """A body labelled as something the endpoint does not read (``text/plain``, a
    form-encoded body) is refused, not guessed at."""
    raise UnsupportedMediaType(
        f"the body is {media or 'of no type'}; send {expected}", "Content-Type"
    )


def went_away() -> Cancelled:
    """The error of a client that closed its connection before its body was read: a
    client disconnect (499), not a server error."""
    return Cancelled("the client closed the connection before sending its whole body")


async def json_body(request: Request) -> Any:
    """The JSON object of the body (unlabelled bodies are read as JSON)."""
    media = media_type(request)
    if not is_json(media):
        refuse_media_type(media, JSON_MEDIA_TYPE)
    try:
        raw = await request.body()
    except ClientDisconnect:
        raise went_away() from None
    if not raw.strip():
        raise MalformedRequest("the request body is empty; send a JSON object", "body")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}", "body") from None
    except RecursionError:
        raise MalformedRequest("the body's JSON is nested too deeply", "body") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object", "body")
    return body


def refuse_query(request: Request) -> None:
    """Parameters belong in the body; a query string would otherwise be ignored."""
    for name in request.query_params:
        raise MalformedRequest(
            f"query parameters are not read: send {name!r} in the JSON body", name
        )


def parse_params(body: dict[str, Any]) -> GenerateParams:
    try:
        return GenerateParams.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


_FORM_JSON_FIELDS = {"adapters"}


async def form_fields(request: Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Text fields and uploaded files of a multipart form."""
    try:
        form = await request.form()
    except ClientDisconnect:
        raise went_away() from None
    except Exception as exc:  # multipart parse errors have no common base class
        raise MalformedRequest(f"the multipart form cannot be read: {exc}", "body") from None
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for name, value in form.multi_items():
        if name in fields or name in files:
            # The last of two would win unseen: the caller meant one of them.
            raise MalformedRequest(f"the form has more than one '{name}' part; send one", name)
        if hasattr(value, "read"):
            files[name] = await value.read()
        elif name in _FORM_JSON_FIELDS:
            try:
                fields[name] = json.loads(value)
            except json.JSONDecodeError:
                raise InvalidRequest(f"{name} must be JSON", name) from None
        else:
            fields[name] = value
    return fields, files


async def upload_fields(
    request: Request, file_names: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Text fields and image bytes of a multipart form, or of a JSON body whose
    ``file_names`` carry base64; other uploaded files are refused, not ignored."""
    media = media_type(request)
    if media is not None and media != FORM_MEDIA_TYPE and not is_json(media):
        refuse_media_type(media, f"{FORM_MEDIA_TYPE} or {JSON_MEDIA_TYPE}")
    if media is not None and is_json(media):
        body: dict[str, Any] = await json_body(request)
        files = {
            name: decode_base64(body.pop(name), name)
            for name in file_names
            if body.get(name) is not None
        }
        return body, files
    fields, files = await form_fields(request)
    check_upload_names(files, file_names)
    return fields, files
